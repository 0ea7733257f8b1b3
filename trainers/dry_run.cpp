#include "trainers/dry_run.h"
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include "core/autograd.h"
#include "trainers/pretrained.h"
#include "trainers/run.h"

namespace loom {
namespace {

// Rows of start, a few ordinary ids past loom's BPE specials, end, then padding: text of the shape a
// run's would be, where the check has no tokenizer.
Tensor stand_in_ids(int64_t n, int64_t context, int64_t vocab) {
  std::vector<int64_t> ids(static_cast<size_t>(n * context), data::BpeTokenizer::pad_id);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = std::min<int64_t>(context, 5);
    int64_t* row = ids.data() + i * context;
    row[0] = data::BpeTokenizer::sot_id;
    for (int64_t j = 1; j + 1 < len; ++j) row[j] = 5 + (i * 7 + j) % std::max<int64_t>(1, vocab - 5);
    row[len - 1] = data::BpeTokenizer::eot_id;
  }
  return Tensor::from(ids, {n, context});
}

// What the check gives the tasks in place of a tokenizer it does not have (loom's BPE is trained by
// the run; a tokenizer file may be absent): the model's vocabulary size and loom's BPE special ids,
// "<mask>" included; it encodes any text as stand_in_ids.
class StandInTokenizer final : public data::TextTokenizer {
 public:
  explicit StandInTokenizer(int64_t vocab) : vocab_(vocab) {}
  std::string kind() const override { return "stand-in"; }
  Tensor encode_batch(const std::vector<std::string>& texts, int64_t context) const override {
    return stand_in_ids(int64_t(texts.size()), context, vocab_);
  }
  int64_t vocab_size() const override { return vocab_; }
  int64_t end_token() const override { return data::BpeTokenizer::eot_id; }
  int64_t pad_token() const override { return data::BpeTokenizer::pad_id; }
  int64_t start_token() const override { return data::BpeTokenizer::sot_id; }
  int64_t mask_token() const override { return data::BpeTokenizer::kMaskId; }
  bool is_special(int64_t id) const override { return id >= 0 && id <= data::BpeTokenizer::kMaskId; }
  bool continues_word(int64_t, int64_t) const override { return false; }
  void save(const std::string&) const override {}

 private:
  int64_t vocab_;
};

std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// Two examples of every key the task reads, shaped as the loader would make them under `lc`.
data::Batch random_batch(const data::LoaderConfig& lc, const std::vector<std::string>& keys, int64_t vocab,
                         const data::TextTokenizer* tok, Generator& gen) {
  constexpr int64_t n = 2;
  data::Batch b;
  b.indices = {0, 1};
  for (const std::string& k : keys) {
    if (k == "image") {
      b.tensors[k] = ops::randn({n, lc.channels, lc.transform.size, lc.transform.size}, gen);
    } else if (k == "audio") {
      if (lc.audio.features == "waveform") {
        b.tensors[k] = ops::randn({n, lc.audio.samples()}, gen);
      } else {
        data::FbankOptions o = lc.audio.fbank;
        o.sample_rate = lc.audio.sample_rate;
        const int64_t frames = lc.audio.frames > 0 ? lc.audio.frames : data::KaldiFbank(o).num_frames(lc.audio.samples());
        b.tensors[k] = ops::randn({n, 1, o.num_mel_bins, frames}, gen);
      }
    } else if (k == "text" && tok) {
      b.texts = {"a short caption", "another one"};
      b.tensors[k] = tok->encode_batch(b.texts, lc.context);
    } else if (k == "text") {
      b.tensors[k] = stand_in_ids(n, lc.context, vocab);
      b.texts = {"a", "b"};
    } else if (k == "label") {
      b.tensors[k] = Tensor::from(std::vector<int64_t>{0, 1}, {n});
    } else if (k == "labels") {  // two classes, then one (padded with -1)
      b.tensors[k] = Tensor::from(std::vector<int64_t>{0, 1, 1, -1}, {n, 2});
    }
  }
  return b;
}

// Stage k: its data against its batch, one forward pass on a random batch, the trainable count.
void check_stage(const Recipe& r, const Config& c, Run& run, size_t k, Generator& gen, std::ostringstream& out) {
  Module& m = *run.model;
  const StageSpec& s = r.stages[k];
  const DataSpec& d = r.data.at(s.data);
  data::LoaderConfig lc = loader_config(d, r.seed, true);
  run.tasks[k]->configure(lc);
  if (std::find(s.task.needs.begin(), s.task.needs.end(), "image") != s.task.needs.end()) lc.transform.validate(lc.channels);
  if (d.present && int64_t(d.rows->rows.size()) < d.batch_size)
    c.fail(str_cat("data.", s.data, ".batch_size"),
           str_cat(d.manifest, " has ", d.rows->rows.size(), " rows, too few for one batch of ", d.batch_size));
  const bool audio = std::find(s.task.needs.begin(), s.task.needs.end(), "audio") != s.task.needs.end();
  if (audio) {
    lc.audio.validate();
    if (lc.audio.features == "fbank") {
      data::FbankOptions o = lc.audio.fbank;
      o.sample_rate = lc.audio.sample_rate;
      data::KaldiFbank fb(o);  // validates the filterbank against the rate
      if (fb.num_frames(lc.audio.samples()) < 1)
        c.fail(str_cat("data.", s.data, ".audio.duration"), "shorter than one fbank window");
    }
  }
  // One forward pass per source, no gradient: shapes and the task's wiring, as the first steps would
  // meet them (a source's batch holds what the task reads of what the source provides).
  data::Batch b;
  std::vector<LossPart> parts;
  for (const StageSpec::Source& src : s.sources) {
    if (src.weight <= 0 && s.sources.size() > 1) continue;
    std::vector<std::string> keys;
    const std::vector<std::string> have = r.data.at(src.name).provides();
    for (const std::string& need : s.task.needs)
      if (s.sources.size() == 1 || std::find(have.begin(), have.end(), need) != have.end()) keys.push_back(need);
    data::Batch sb = random_batch(lc, keys, r.vocab_size, run.tokenizer.get(), gen);
    sb.source = src.name;
    NoGradGuard ng;
    Generator drop(r.seed + 1);
    StepContext step;
    step.step = k ? r.stages[k - 1].steps : 0;
    step.stage_steps = std::max<int64_t>(1, s.steps);
    for (LossPart& p : run.tasks[k]->forward(sb, drop, step))
      if (std::none_of(parts.begin(), parts.end(), [&](const LossPart& q) { return q.name == p.name; })) parts.push_back(std::move(p));
    if (b.tensors.size() < sb.tensors.size()) b = std::move(sb);  // the batch shown: the widest
  }
  int64_t trainable = 0;
  for (auto& [_, p] : m.named_parameters()) p.set_requires_grad(true);
  if (!s.train_only.empty()) m.train_only(s.train_only);
  if (!s.freeze.empty()) m.freeze(s.freeze);
  for (const Tensor& p : m.parameters()) trainable += p.requires_grad() ? p.numel() : 0;
  out << "stage " << k + 1 << "/" << r.stages.size() << " '" << s.name << "': task " << s.task.type << " on data."
      << s.data << " (" << d.manifest << (d.present ? str_cat(", ", d.rows->rows.size(), " rows") : std::string(", not on this machine"))
      << "), batch " << d.batch_size << ", ";
  if (s.steps > 0) out << s.steps << " steps";
  else out << s.epochs << " epochs (steps unknown without the data)";
  out << ", " << trainable << " of " << m.parameter_count() << " parameters trainable\n  batch:";
  for (const auto& [key, t] : b.tensors) out << " " << key << " " << shape_str(t);
  out << "\n  forward:";
  for (const LossPart& p : parts) {
    const double v = p.value.item<float>();
    if (!std::isfinite(v)) throw Error(str_cat("stage '", s.name, "': loss ", p.name, " is ", v, " on a random batch"));
    out << " " << p.name << " " << v;
  }
  out << "\n";
}

}  // namespace

std::string check_recipe(const Recipe& r, const Config& c) {
  std::ostringstream out;
  // loom's BPE is trained with the run (random ids stand in); a tokenizer file is read now.
  const bool tokenizer_file = r.needs_text() && !r.tokenizer_path.empty();
  const bool tokenizer_absent = tokenizer_file && !std::filesystem::exists(r.tokenizer_path);
  // init_from is loaded as a run loads it, so a checkpoint that does not fit the model fails here.
  const bool init_present = !r.init_from.path.empty() && std::filesystem::exists(r.init_from.path);
  std::string init_line;
  std::unique_ptr<data::TextTokenizer> tok;
  if (tokenizer_file && !tokenizer_absent) tok = data::load_tokenizer(r.tokenizer_path, r.tokenizer_type);
  else if (r.needs_text()) tok = std::make_unique<StandInTokenizer>(r.vocab_size);  // masking and ITM need its ids
  Run run = Run::build(r, std::move(tok),
                       [&](Module& m) {
                         if (!init_present || tokenizer_absent) return;  // stand-in embeddings cannot match the file
                         const LoadReport rep = load_pretrained(m, r.init_from);
                         init_line = str_cat("init_from ", r.init_from.path, " (format ", r.init_from.format, "): fits the model",
                                             rep.missing.empty() ? std::string() : str_cat(", ", rep.missing.size(), " parameters not in it"),
                                             "\n");
                       });
  check_freeze_patterns(*run.model, r, c);
  Module& m = *run.model;
  out << "recipe " << c.source() << ": '" << r.name << "', model " << r.model.type << ", " << m.parameter_count()
      << " parameters\n";
  Generator gen(r.seed);
  for (size_t k = 0; k < r.stages.size(); ++k) check_stage(r, c, run, k, gen, out);
  if (r.has_probe) {
    const ViT& v = patch_tower(*run.model, default_patch_modality(r.model), "eval.probe");
    if (r.probe.blocks > v.depth())
      c.fail("eval.probe.blocks", str_cat(r.probe.blocks, " is more than the tower's ", v.depth(), " blocks"));
  }
  out << init_line;
  for (const auto& [name, f] : r.frozen)
    out << "frozen " << name << ": " << run.frozen.at(name)->parameter_count() << " parameters from " << f.recipe_path
        << (std::filesystem::is_directory(f.checkpoint) ? ", loaded from " + f.checkpoint
                                                        : ", random weights (its checkpoint " + f.checkpoint + " is not on this machine)")
        << "\n";
  if (tokenizer_absent)
    out << "tokenizer " << r.tokenizer_path << " is not on this machine: the model was checked with " << Recipe::stand_in_vocab_size
        << " stand-in token embeddings (a run has the file's count)\n";
  if (!c.missing_files().empty()) {
    out << "not on this machine (a run needs them):\n";
    for (const std::string& f : c.missing_files()) out << "  " << f << "\n";
  }
  out << "check passed: nothing trained, nothing written\n";
  return out.str();
}

}  // namespace loom
