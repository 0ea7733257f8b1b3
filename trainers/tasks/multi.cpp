// Several tasks in one stage (`tasks:` instead of `task:`): CAV-MAE's masked autoencoding beside its
// contrastive loss, or MAE beside CLIP. One Task to the loop: its losses are each task's parts
// (logged unweighted as train/<part>), weighted by the task's `weight`, for the tasks the micro-batch
// serves; every task sees the same StepContext, so one may reuse what another encoded.
// A task's `data: [NAME, ...]` limits it to batches of those sources of the stage (VL-BEiT's MLM on
// the texts, its masked vision-language modelling on the pairs), and `name: X` lets two tasks of one
// type share a stage: the second's losses and metrics are named X where the type would be
// (train/mlm_acc -> train/X_acc), its heads are the first's.
#include <algorithm>
#include "trainers/eval/retrieval.h"
#include "trainers/tasks/task.h"

namespace loom {
namespace {

struct Member {
  std::unique_ptr<Task> task;
  std::string type, name;  // name: what its losses and metrics are called in place of the type
  double weight = 1.0;
  std::vector<std::vector<std::string>> serves;  // the key sets any one of which this task can use
  std::vector<std::string> sources;              // the stage's sources it serves; empty: any
};

// `key` with the task type where it starts (after "train/" or "eval/" for a metric) replaced by the
// task's name: mlm's "train/mlm_acc" of a task named mvlm_text is "train/mvlm_text_acc".
std::string renamed(const std::string& key, const Member& m) {
  if (m.name == m.type) return key;
  for (const std::string prefix : {"", "train/", "eval/"})
    if (key.rfind(prefix + m.type, 0) == 0) return prefix + m.name + key.substr(prefix.size() + m.type.size());
  return key;
}
Metrics renamed(const Metrics& in, const Member& m) {
  Metrics out;
  for (const auto& [k, v] : in) out[renamed(k, m)] = v;
  return out;
}

class MultiTask : public Task {
 public:
  explicit MultiTask(std::vector<Member> members) : members_(std::move(members)) {}
  const ContrastiveTowers* towers() const override {
    for (const Member& m : members_)
      if (m.task->towers()) return m.task->towers();
    return nullptr;
  }
  int64_t min_batch() const override {
    int64_t n = 1;
    for (const Member& m : members_) n = std::max(n, m.task->min_batch());
    return n;
  }
  void configure(data::LoaderConfig& c) const override {
    for (const Member& m : members_) m.task->configure(c);
  }
  std::vector<LossPart> forward(const data::Batch& b, Generator& drop_gen, StepContext& step) override {
    std::vector<LossPart> out;
    for (const Member& m : members_) {
      if (m.weight == 0 || !serves(m, b)) continue;  // weight 0: off in training (an ablation), still evaluated
      for (LossPart& p : m.task->forward(b, drop_gen, step)) {
        p.name = renamed(p.name, m);
        for (const LossPart& q : out)
          LOOM_CHECK(q.name != p.name, "two tasks of the stage both log a loss '", p.name,
                     "'; merge them into one task (e.g. one contrastive task with several pairs)");
        p.weight *= m.weight;
        out.push_back(std::move(p));
      }
    }
    LOOM_CHECK(!out.empty(), "a batch with ", b.keys(), " serves none of the stage's tasks");
    return out;
  }
  void after_step() override {
    for (Member& m : members_) m.task->after_step();
  }
  Metrics train_metrics() const override {
    Metrics out;
    for (const Member& m : members_)
      for (auto& [k, v] : renamed(m.task->train_metrics(), m)) out[k] = v;
    return out;
  }
  bool evaluates() const override {
    for (const Member& m : members_)
      if (m.task->evaluates()) return true;
    return false;
  }
  Metrics evaluate(const EvalEnv& env) override {
    Metrics out;
    for (Member& m : members_)
      if (m.task->evaluates())
        for (auto& [k, v] : renamed(m.task->evaluate(env), m)) out[k] = v;
    return out;
  }
  nlohmann::json state() const override {
    nlohmann::json s = nlohmann::json::object();
    for (size_t i = 0; i < members_.size(); ++i) s[std::to_string(i)] = members_[i].task->state();
    return s;
  }
  void load_state(const nlohmann::json& state, const std::string& source) override {
    for (size_t i = 0; i < members_.size(); ++i)
      if (state.contains(std::to_string(i))) members_[i].task->load_state(state[std::to_string(i)], source);
  }

 private:
  static bool serves(const Member& m, const data::Batch& b) {
    if (!m.sources.empty() && std::find(m.sources.begin(), m.sources.end(), b.source) == m.sources.end()) return false;
    for (const auto& keys : m.serves) {
      bool all = true;
      for (const std::string& k : keys) all = all && b.has(k);
      if (all) return true;
    }
    return false;
  }
  std::vector<Member> members_;
};

}  // namespace

TaskSpec parse_tasks(const Config& c, const std::string& k, const ModelSpec& model) {
  const size_t n = c.list_size(k);
  if (n == 0) c.fail(k, "expected a list of tasks, e.g. [{type: mae}, {type: contrastive, weight: 0.01}]");
  std::vector<TaskSpec> specs;
  std::vector<double> weights;
  std::vector<std::string> names;
  std::vector<std::vector<std::string>> sources;
  TaskSpec out;
  for (size_t i = 0; i < n; ++i) {
    const std::string ki = str_cat(k, ".", i);
    TaskSpec s = parse_task(c, ki, model);
    const double w = c.f64(ki + ".weight", 1.0);
    if (!(w >= 0) || !std::isfinite(w)) c.fail(ki + ".weight", str_cat("must be >= 0, got ", w));
    const std::string name = c.str(ki + ".name", s.type);
    if (name.empty() || name.find_first_of("/ \t") != std::string::npos)
      c.fail(ki + ".name", str_cat("'", name, "' cannot name losses and metrics (no spaces or slashes)"));
    for (size_t j = 0; j < specs.size(); ++j)
      if (names[j] == name)
        c.fail(c.has(ki + ".name") ? ki + ".name" : ki + ".type",
               str_cat("the stage already has a task named ", name, " (their losses would share names): give this one its own "
                       "name (e.g. name: ", s.type, "_2), or give one ", s.type, " task the union of the settings"));
    if (c.has(ki + ".data")) {
      const std::vector<std::string> from = c.str_list(ki + ".data", {});
      if (from.empty()) c.fail(ki + ".data", "expected the list of the stage's data sources this task reads, e.g. [pairs]");
      sources.push_back(from);
    } else {
      sources.emplace_back();
    }
    out.type += (out.type.empty() ? "" : "+") + name;
    out.needs_text = out.needs_text || s.needs_text;
    out.needs_mask_token = out.needs_mask_token || s.needs_mask_token;
    out.sizes.insert(s.sizes.begin(), s.sizes.end());
    out.needs_eval_data = out.needs_eval_data || s.needs_eval_data;
    out.pairs.insert(out.pairs.end(), s.pairs.begin(), s.pairs.end());
    for (const std::string& key : s.needs)
      if (std::find(out.needs.begin(), out.needs.end(), key) == out.needs.end()) out.needs.push_back(key);
    if (s.serves.empty()) s.serves = {s.needs};
    out.serves.insert(out.serves.end(), s.serves.begin(), s.serves.end());
    out.serves_from.insert(out.serves_from.end(), s.serves.size(), sources.back());
    weights.push_back(w);
    names.push_back(name);
    specs.push_back(std::move(s));
  }
  out.build = [specs, weights, names, sources](TaskEnv& env) -> std::unique_ptr<Task> {
    std::vector<Member> members;
    for (size_t i = 0; i < specs.size(); ++i)
      members.push_back({specs[i].build(env), specs[i].type, names[i], weights[i], specs[i].serves, sources[i]});
    return std::make_unique<MultiTask>(std::move(members));
  };
  return out;
}

}  // namespace loom
