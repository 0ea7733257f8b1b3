// The task registry: one factory per task type, each in its own file.
#include "trainers/tasks/task.h"

namespace loom {

TaskSpec parse_contrastive(const Config& c, const std::string& prefix);  // tasks/contrastive.cpp
TaskSpec parse_mae(const Config& c, const std::string& prefix);          // tasks/mae.cpp

namespace {
using Parser = TaskSpec (*)(const Config&, const std::string&);
const std::vector<std::pair<std::string, Parser>>& registry() {
  static const std::vector<std::pair<std::string, Parser>> r = {{"contrastive", parse_contrastive}, {"mae", parse_mae}};
  return r;
}
}  // namespace

std::vector<std::string> task_types() {
  std::vector<std::string> out;
  for (const auto& [name, _] : registry()) out.push_back(name);
  return out;
}

TaskSpec parse_task(const Config& c, const std::string& prefix, const std::string& default_type) {
  if (default_type.empty() && !c.has(prefix + ".type"))
    c.fail(prefix + ".type", "required key is missing" + c.near_miss(prefix + ".type"));
  const std::string type = c.choice(prefix + ".type", task_types(), default_type);
  for (const auto& [name, parse] : registry())
    if (name == type) {
      TaskSpec s = parse(c, prefix);
      s.type = type;
      return s;
    }
  c.fail(prefix + ".type", "unknown task type");  // unreachable: choice() checked it
}

std::vector<std::string> DataSpec::provides() const {
  if (!present) return {"audio", "image", "label", "text"};
  bool image = false, audio = false, text = false;
  for (const data::Example& e : rows->rows) {
    image = image || !e.image.empty();
    audio = audio || !e.audio.empty();
    text = text || !e.text.empty();
  }
  std::vector<std::string> out;
  if (audio) out.push_back("audio");
  if (image) out.push_back("image");
  out.push_back("label");
  if (text) out.push_back("text");
  return out;
}

data::LoaderConfig loader_config(const DataSpec& d, uint64_t seed, bool train) {
  data::LoaderConfig c;
  c.batch_size = d.batch_size;
  c.workers = d.workers;
  c.shuffle = train;
  c.drop_last = train;
  c.repeat = train;
  c.seed = seed;
  c.on_error = d.on_error;
  c.transform = d.transform;
  c.audio = d.audio;
  if (!train) {  // no augmentation in evaluation; audio crops centred
    c.transform.random_resized_crop = c.transform.hflip = false;
    c.audio.random_crop = false;
    c.audio.spec_augment = {};
  }
  return c;
}

InputTower input_tower(Module& model, const std::string& task) {
  if (auto v = std::dynamic_pointer_cast<ViT>(model.child("visual"))) return {v.get(), "image"};
  if (auto a = std::dynamic_pointer_cast<AudioTransformer>(model.child("audio"))) return {a.get(), "audio"};
  throw Error(str_cat(task, " needs an image tower 'visual' (a ViT) or an audio tower 'audio' (an AudioTransformer), "
                      "and this model has neither"));
}

void InputTower::configure(data::LoaderConfig& c) const {
  const ViTConfig& v = vit->config;
  if (key == "audio") {
    c.audio.fbank.num_mel_bins = v.height();
    c.audio.frames = v.width_px();
    return;
  }
  LOOM_CHECK(v.height() == v.width_px(), "the image transform makes square images, and the image tower is ", v.height(),
             "x", v.width_px());
  c.channels = v.channels;
  c.transform.size = v.height();
}

}  // namespace loom
