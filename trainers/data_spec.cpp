#include <algorithm>
#include "trainers/data_spec.h"
#include "core/error.h"

namespace loom {

std::vector<std::string> DataSpec::provides() const {
  if (!present) {
    if (!read.empty()) {
      std::vector<std::string> out = read;
      std::sort(out.begin(), out.end());
      return out;
    }
    return {"audio", "image", "label", "labels", "text"};
  }
  bool image = false, audio = false, text = false, label = false, labels = false;
  for (const data::Example& e : rows->rows) {
    image = image || !e.image.empty();
    audio = audio || !e.audio.empty();
    text = text || !e.text.empty();
    label = label || e.label >= 0;
    labels = labels || !e.labels.empty();
  }
  std::vector<std::string> out;
  if (audio) out.push_back("audio");
  if (image) out.push_back("image");
  if (label) out.push_back("label");
  if (labels) out.push_back("labels");
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
  if (train) c.sample_weights = d.sample_weights;
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

void configure_input(const EncoderInput& in, data::LoaderConfig& c) {
  if (in.kind == "text") {
    c.context = in.context;
  } else if (in.kind == "audio") {
    c.audio.fbank.num_mel_bins = in.height;
    c.audio.frames = in.width;
  } else if (in.kind == "image") {
    LOOM_CHECK(in.height == in.width, "the image transform makes square images, and the image tower is ", in.height, "x",
               in.width);
    c.channels = in.channels;
    c.transform.size = in.height;
  } else {
    throw Error(str_cat("the loader makes no '", in.kind, "' inputs yet (image, audio and text)"));
  }
}

}  // namespace loom
