// The task registry: one factory per task type, each in its own file.
#include "trainers/tasks/task.h"
#include <iostream>
#include "core/json_integer.h"

namespace loom {

TaskSpec parse_classify(const Config& c, const std::string& prefix, const ModelSpec& model);     // tasks/classify.cpp
TaskSpec parse_contrastive(const Config& c, const std::string& prefix, const ModelSpec& model);  // tasks/contrastive.cpp
TaskSpec parse_mae(const Config& c, const std::string& prefix, const ModelSpec& model);          // tasks/mae.cpp
TaskSpec parse_mlm(const Config& c, const std::string& prefix, const ModelSpec& model);          // tasks/mlm.cpp
TaskSpec parse_mim(const Config& c, const std::string& prefix, const ModelSpec& model);          // tasks/mim.cpp
TaskSpec parse_itm(const Config& c, const std::string& prefix, const ModelSpec& model);          // tasks/itm.cpp
TaskSpec parse_vqkd(const Config& c, const std::string& prefix, const ModelSpec& model);         // tasks/vqkd.cpp

namespace {
using Parser = TaskSpec (*)(const Config&, const std::string&, const ModelSpec&);
const std::vector<std::pair<std::string, Parser>>& registry() {
  static const std::vector<std::pair<std::string, Parser>> r = {
      {"classify", parse_classify}, {"contrastive", parse_contrastive}, {"itm", parse_itm}, {"mae", parse_mae}, {"mlm", parse_mlm}, {"mim", parse_mim}, {"vqkd", parse_vqkd}};
  return r;
}
}  // namespace

std::vector<std::string> task_types() {
  std::vector<std::string> out;
  for (const auto& [name, _] : registry()) out.push_back(name);
  return out;
}

TaskSpec parse_task(const Config& c, const std::string& prefix, const ModelSpec& model, const std::string& default_type) {
  if (default_type.empty() && !c.has(prefix + ".type"))
    c.fail(prefix + ".type", "required key is missing" + c.near_miss(prefix + ".type"));
  const std::string type = c.choice(prefix + ".type", task_types(), default_type);
  for (const auto& [name, parse] : registry())
    if (name == type) {
      TaskSpec s = parse(c, prefix, model);
      s.type = type;
      return s;
    }
  c.fail(prefix + ".type", "unknown task type");  // unreachable: choice() checked it
}

const FrozenModel& named_frozen(const Config& c, const std::string& key, const ModelSpec& model) {
  const std::string name = c.str(key);
  auto it = model.frozen.find(name);
  if (it == model.frozen.end()) {
    std::string have;
    for (const auto& [n, _] : model.frozen) have += (have.empty() ? "" : ", ") + n;
    c.fail(key, str_cat("no frozen model '", name, "' (the recipe's frozen: ", have.empty() ? std::string("none") : have,
                        "; give one as frozen: {", name, ": {checkpoint: DIR}})"));
  }
  return it->second;
}

MultimodalModel& frozen_model(const TaskEnv& env, const std::string& name, const std::string& who) {
  if (!env.frozen || !env.frozen->count(name)) throw Error(str_cat(who, ": the run has no frozen model '", name, "'"));
  return *env.frozen->at(name);
}

void report_added(const TaskEnv& env, const std::string& task, const std::string& module, int64_t parameters) {
  if (parameters > 0)
    std::cerr << "loom: stage " << env.stage << ": task " << task << " added " << module << " to the model (" << parameters
              << " parameters, newly initialised)\n";
}

std::string default_patch_modality(const ModelSpec& model) {
  for (const auto& [m, t] : model.towers)
    if (t.input.kind == "image" || t.input.kind == "audio") return m;
  return "";
}

ViT& patch_tower(MultimodalModel& model, const std::string& modality, const std::string& who) {
  if (modality.empty() || !model.has_tower(modality)) {
    std::string have;
    for (const std::string& m : model.modalities()) have += (have.empty() ? "" : ", ") + m;
    throw Error(str_cat(who, " needs an image or audio tower, and this model has: ", have));
  }
  auto* v = dynamic_cast<ViT*>(&model.tower(modality));
  if (!v) throw Error(str_cat(who, " reads patch tokens, and the model's ", modality, " tower is not a ViT-style tower"));
  return *v;
}

nlohmann::json generator_state(const std::string& key, const Generator& g) {
  return {{key, {{"seed", g.seed()}, {"offset", g.offset()}}}};
}

void load_generator_state(Generator& g, const nlohmann::json& state, const std::string& key, const std::string& source,
                          const std::string& task) {
  try {
    g.set_state(json_uint64(state.at(key).at("seed"), key + ".seed"), json_uint64(state.at(key).at("offset"), key + ".offset"));
  } catch (const std::exception& e) {
    throw Error(str_cat(source, ": ", task, " task state: ", e.what()));
  }
}

}  // namespace loom
