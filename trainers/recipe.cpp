#include "trainers/recipe.h"
#include "data/webdataset.h"
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <set>

namespace loom {
namespace {

std::string join(const std::vector<std::string>& xs) {
  std::string out;
  for (const auto& x : xs) out += (out.empty() ? "" : ", ") + x;
  return out;
}

data::ImageTransform read_transform(const Config& c, const std::string& k) {
  data::ImageTransform t;
  t.random_resized_crop = c.boolean(k + ".random_resized_crop", false);  // training only (loader_config)
  t.crop_scale_min = c.f64(k + ".crop_scale_min", 0.5);
  t.hflip = c.boolean(k + ".hflip", false);
  t.mean = c.f64_list(k + ".mean", {0.5});
  t.std = c.f64_list(k + ".std", {0.5});
  if (!(t.crop_scale_min > 0 && t.crop_scale_min <= 1)) c.fail(k + ".crop_scale_min", "must be in (0, 1]");
  for (double s : t.std) if (!(s > 0)) c.fail(k + ".std", "every std must be > 0");
  return t;
}

// data.NAME.audio: how audio rows become the batch's "audio" (data::AudioConfig). Crop and SpecAugment
// apply in training only (loader_config).
data::AudioConfig read_audio(const Config& c, const std::string& k) {
  data::AudioConfig a;
  a.sample_rate = c.f64(k + ".sample_rate", a.sample_rate);
  a.duration = c.f64(k + ".duration", a.duration);
  a.pad = data::parse_audio_pad(c.choice(k + ".pad", {"repeatpad", "repeat", "zero"}, "repeatpad"));
  a.random_crop = c.choice(k + ".crop", {"random", "center"}, "random") == "random";
  a.features = c.choice(k + ".features", {"fbank", "waveform"}, "fbank");
  a.fbank.num_mel_bins = c.i64(k + ".mel_bins", a.fbank.num_mel_bins);
  a.fbank.frame_length_ms = c.f64(k + ".frame_length_ms", a.fbank.frame_length_ms);
  a.fbank.frame_shift_ms = c.f64(k + ".frame_shift_ms", a.fbank.frame_shift_ms);
  a.fbank.window = c.choice(k + ".window", {"hanning", "povey", "hamming", "rectangular"}, a.fbank.window);
  a.fbank.low_freq = c.f64(k + ".low_freq", a.fbank.low_freq);
  a.fbank.high_freq = c.f64(k + ".high_freq", a.fbank.high_freq);
  a.fbank.preemphasis = c.f64(k + ".preemphasis", a.fbank.preemphasis);
  a.mean = c.f64(k + ".mean", a.mean);
  a.std = c.f64(k + ".std", a.std);
  a.spec_augment.max_freq_width = c.i64(k + ".freq_mask", 0);
  a.spec_augment.freq_masks = c.i64(k + ".freq_masks", 1);
  a.spec_augment.max_time_width = c.i64(k + ".time_mask", 0);
  a.spec_augment.time_masks = c.i64(k + ".time_masks", 1);
  a.fbank.sample_rate = a.sample_rate;
  try {
    a.validate();
  } catch (const Error& e) {
    c.fail(k, e.what());
  }
  return a;
}

DataSpec read_data(const Config& c, const std::string& name) {
  const std::string k = "data." + name;
  DataSpec d;
  d.name = name;
  d.on_error = c.choice(k + ".on_error", {"skip", "fail"}, "skip");
  d.shards = c.has(k + ".shards");
  if (d.shards == c.has(k + ".manifest"))
    c.fail(k, "give either manifest (a JSONL file) or shards (WebDataset tar files, e.g. train-{000000..000127}.tar)");
  const std::string src = k + (d.shards ? ".shards" : ".manifest");
  if (d.shards) {
    d.manifest = c.str(src);
    std::vector<std::string> names;
    try {
      names = data::expand_braces(d.manifest);
    } catch (const Error& e) {
      c.fail(src, e.what());
    }
    size_t here = 0;
    for (const std::string& n : names) here += std::filesystem::exists(n);
    d.present = here == names.size();
    if (!d.present && !c.missing_files_allowed())
      c.fail(src, str_cat(names.size() - here, " of its ", names.size(), " shards are not there (the first: ",
                          *std::find_if(names.begin(), names.end(), [](const std::string& n) { return !std::filesystem::exists(n); }),
                          ")"));
    if (!d.present) c.existing_path(src);  // listed by --check among the files not on this machine
  } else {
    d.manifest = c.existing_path(src);
    d.present = std::filesystem::exists(d.manifest);
  }
  if (!d.present) {  // only when Config allows missing files (loom train --check)
    d.rows = std::make_shared<const data::Manifest>();
  } else {
    try {
      data::WebDatasetReport rep;
      d.rows = std::make_shared<const data::Manifest>(d.shards ? data::load_webdataset(d.manifest, d.on_error, &rep)
                                                               : data::Manifest::load(d.manifest));
      for (const std::string& s : rep.skipped) std::cerr << "loom: " << src << ": skipped shard " << s << "\n";
      for (const std::string& s : rep.cut) std::cerr << "loom: " << src << ": damaged shard " << s << "\n";
    } catch (const Error& e) {
      c.fail(src, e.what());
    }
    if (d.rows->rows.empty()) c.fail(src, str_cat(d.manifest, d.shards ? ": the shards hold no samples" : ": the manifest is empty"));
  }
  if (c.has(k + ".read")) {
    d.read = c.str_list(k + ".read", {});
    const std::vector<std::string> columns = {"audio", "image", "label", "labels", "text"};
    if (d.read.empty()) c.fail(k + ".read", "expected a list of the columns to read, e.g. [image] or [text, label]");
    for (const std::string& col : d.read)
      if (std::find(columns.begin(), columns.end(), col) == columns.end())
        c.fail(k + ".read", str_cat("unknown column '", col, "' (the columns: audio, image, label, labels, text)"));
    if (d.present) {
      auto keep = [&](const char* col) { return std::find(d.read.begin(), d.read.end(), col) != d.read.end(); };
      auto rows = std::make_shared<data::Manifest>(*d.rows);
      for (data::Example& e : rows->rows) {
        if (!keep("image")) e.image.clear(), e.image_blob = {};
        if (!keep("audio")) e.audio.clear(), e.audio_blob = {};
        if (!keep("text")) e.text.clear();
        if (!keep("label")) e.label = -1;
        if (!keep("labels")) e.labels.clear();
      }
      std::erase_if(rows->rows, [](const data::Example& e) { return e.image.empty() && e.audio.empty() && e.text.empty(); });
      if (rows->rows.empty())
        c.fail(k + ".read", str_cat(d.manifest, ": no row has an image, audio or text among the columns read (", join(d.read), ")"));
      d.rows = std::move(rows);
    }
  }
  if (c.choice(k + ".sampler", {"shuffle", "balanced"}, "shuffle") == "balanced" && d.present) {
    std::map<int64_t, int64_t> count;  // rows per class
    for (const data::Example& e : d.rows->rows) {
      if (e.label >= 0) ++count[e.label];
      for (int64_t l : e.labels) ++count[l];
    }
    auto w = std::make_shared<std::vector<double>>();
    for (size_t i = 0; i < d.rows->rows.size(); ++i) {
      const data::Example& e = d.rows->rows[i];
      double x = e.label >= 0 ? 1.0 / double(count[e.label]) : 0.0;
      for (int64_t l : e.labels) x += 1.0 / double(count[l]);
      if (x == 0) c.fail(k + ".sampler", str_cat("balanced sampling weighs rows by their classes, and row ", i + 1, " of ", d.manifest,
                                                 " has no label or labels"));
      w->push_back(x);
    }
    d.sample_weights = std::move(w);
  }
  d.batch_size = c.i64(k + ".batch_size", name == "eval" ? 256 : 128);
  const int64_t workers = c.i64(k + ".workers", 2);
  if (workers < 0 || workers > 256) c.fail(k + ".workers", "must be in [0, 256]");
  d.workers = int(workers);
  d.transform = read_transform(c, k + ".transform");
  d.audio = read_audio(c, k + ".audio");
  if (d.batch_size < 1) c.fail(k + ".batch_size", "must be >= 1");
  return d;
}

void check_positive(const Config& c, const std::string& key, double v) {
  if (!(v > 0)) c.fail(key, str_cat("must be > 0, got ", v));
}

// optim.* at `k`, each key falling back to `base` (the top-level optim for a stage's overrides).
AdamWConfig read_optim(const Config& c, const std::string& k, const AdamWConfig& base) {
  c.choice(k + ".type", {"adamw"}, "adamw");
  AdamWConfig o;
  o.lr = c.f64(k + ".lr", base.lr);
  o.weight_decay = c.f64(k + ".weight_decay", base.weight_decay);
  auto betas = c.f64_list(k + ".betas", {base.beta1, base.beta2});
  if (betas.size() != 2 || !(betas[0] >= 0 && betas[0] < 1 && betas[1] >= 0 && betas[1] < 1))
    c.fail(k + ".betas", "expected two numbers in [0, 1)");
  o.beta1 = betas[0];
  o.beta2 = betas[1];
  o.eps = c.f64(k + ".eps", base.eps);
  check_positive(c, k + ".lr", o.lr);
  check_positive(c, k + ".eps", o.eps);
  if (!(o.weight_decay >= 0)) c.fail(k + ".weight_decay", "must be >= 0");
  o.layer_decay = c.f64(k + ".layer_decay", base.layer_decay);
  if (!(o.layer_decay > 0 && o.layer_decay <= 1)) c.fail(k + ".layer_decay", "must be in (0, 1] (1: off)");
  o.groups = base.groups;  // a stage keeps the recipe's groups unless it names its own
  if (c.has(k + ".groups")) {
    if (c.list_size(k + ".groups") == 0) c.fail(k + ".groups", "expected a list of {params: GLOB, lr_scale, weight_decay, decay}");
    o.groups.clear();
    for (size_t i = 0; i < c.list_size(k + ".groups"); ++i) {
      const std::string g = str_cat(k, ".groups.", i);
      ParamGroup pg;
      pg.key = g;
      if (!c.has(g + ".params")) c.fail(g + ".params", "required key is missing (a glob or a list of globs over parameter names)");
      pg.params = c.node(g + ".params").IsScalar() ? std::vector<std::string>{c.str(g + ".params")} : c.str_list(g + ".params", {});
      if (pg.params.empty()) c.fail(g + ".params", "give at least one pattern");
      pg.lr_scale = c.f64(g + ".lr_scale", 1.0);
      if (!(pg.lr_scale >= 0)) c.fail(g + ".lr_scale", "must be >= 0");
      if (c.has(g + ".weight_decay")) {
        pg.weight_decay = c.f64(g + ".weight_decay");
        if (!(*pg.weight_decay >= 0)) c.fail(g + ".weight_decay", "must be >= 0");
      }
      if (c.has(g + ".decay")) pg.decay = c.boolean(g + ".decay", true);
      o.groups.push_back(std::move(pg));
    }
  }
  return o;
}

ScheduleConfig read_schedule(const Config& c, const std::string& k, const ScheduleConfig& base) {
  ScheduleConfig s;
  s.type = c.choice(k + ".type", {"cosine", "linear", "constant"}, base.type);
  s.warmup_steps = c.i64(k + ".warmup_steps", base.warmup_steps);
  s.min_lr_ratio = c.f64(k + ".min_lr_ratio", base.min_lr_ratio);
  if (s.warmup_steps < 0) c.fail(k + ".warmup_steps", "must be >= 0");
  if (!(s.min_lr_ratio >= 0 && s.min_lr_ratio <= 1)) c.fail(k + ".min_lr_ratio", "must be in [0, 1]");
  return s;
}

// steps or epochs at `k` ("train" or "stages.N"): exactly one.
void read_length(const Config& c, const std::string& k, StageSpec& s) {
  if (c.has(k + ".steps") == c.has(k + ".epochs"))
    c.fail(k + ".steps", str_cat("give exactly one of ", k, ".steps and ", k, ".epochs", c.near_miss(k + ".steps")));
  s.steps = c.i64(k + ".steps", 0);
  s.epochs = c.i64(k + ".epochs", 0);
  if (c.has(k + ".steps") && s.steps < 1) c.fail(k + ".steps", "must be >= 1");
  if (c.has(k + ".epochs") && s.epochs < 1) c.fail(k + ".epochs", "must be >= 1");
}

// `data: NAME` (default train) or `data: {NAME: weight, ...}`, each a section of data:.
void read_sources(const Config& c, const std::string& k, const Recipe& r, StageSpec& s) {
  s.sources.clear();
  if (c.has(k) && c.node(k).IsMap()) {
    const std::vector<std::string> names = c.keys(k);
    if (names.empty()) c.fail(k, "expected a section name or a mapping of sections to weights");
    double total = 0;
    for (const std::string& n : names) {
      const double w = c.f64(k + "." + n);
      if (!(w >= 0) || !std::isfinite(w)) c.fail(k + "." + n, str_cat("a weight must be >= 0, got ", w));
      total += w;
      s.sources.push_back({n, w});
    }
    if (!(total > 0)) c.fail(k, "the weights of the sources must sum to a positive number");
  } else {
    s.sources.push_back({c.str(k, "train"), 1.0});
  }
  for (const StageSpec::Source& src : s.sources)
    if (!r.find_data(src.name))
      c.fail(s.sources.size() > 1 ? k + "." + src.name : k,
             str_cat("no section data.", src.name, " (the recipe has: ", join(c.keys("data")), ")"));
  s.data = s.sources.front().name;
}

ProbeOptions read_probe(const Config& c, const std::string& k) {
  ProbeOptions p;
  p.train_data = c.str(k + ".train_data", "train");
  p.train_samples = c.i64(k + ".train_samples", p.train_samples);
  p.test_samples = c.i64(k + ".test_samples", p.test_samples);
  p.features = c.choice(k + ".features", {"encoder", "pixels"}, "encoder");
  p.pool = c.choice(k + ".pool", {"cls", "mean"}, "cls");
  p.blocks = c.i64(k + ".blocks", 1);
  if (p.blocks < 1) c.fail(k + ".blocks", "must be >= 1");
  p.linear = c.boolean(k + ".linear", true);
  p.knn = c.boolean(k + ".knn", true);
  p.knn_k = c.i64(k + ".knn_k", p.knn_k);
  p.knn_temperature = c.f64(k + ".knn_temperature", p.knn_temperature);
  p.epochs = c.i64(k + ".epochs", p.epochs);
  p.lr = c.f64(k + ".lr", p.lr);
  p.weight_decays = c.f64_list(k + ".weight_decays", p.weight_decays);
  if (p.train_samples < 0) c.fail(k + ".train_samples", "must be >= 0 (0: all)");
  if (p.test_samples < 0) c.fail(k + ".test_samples", "must be >= 0 (0: all)");
  if (p.knn_k < 1) c.fail(k + ".knn_k", "must be >= 1");
  check_positive(c, k + ".knn_temperature", p.knn_temperature);
  if (p.epochs < 1) c.fail(k + ".epochs", "must be >= 1");
  check_positive(c, k + ".lr", p.lr);
  if (p.weight_decays.empty()) c.fail(k + ".weight_decays", "give at least one");
  for (double w : p.weight_decays) if (!(w >= 0)) c.fail(k + ".weight_decays", "every weight decay must be >= 0");
  if (!p.linear && !p.knn) c.fail(k, "both linear and knn are off; remove eval.probe instead");
  return p;
}

}  // namespace

bool Recipe::needs_text() const {
  for (const auto& s : stages) if (s.task.needs_text) return true;
  return false;
}

bool Recipe::needs_mask_token() const {
  for (const auto& s : stages) if (s.task.needs_mask_token) return true;
  return false;
}

const DataSpec* Recipe::find_data(const std::string& n) const {
  auto it = data.find(n);
  return it == data.end() ? nullptr : &it->second;
}

namespace {

// data.*: every section; the audio tower fixes the mel bins.
// frozen.NAME.{checkpoint, recipe}: each frozen model's recipe read now (its data need not be here),
// so tasks can check what they name before any work.
void read_frozen(const Config& c, Recipe& r) {
  for (const std::string& name : c.keys("frozen")) {
    const std::string k = "frozen." + name;
    FrozenRecipe f;
    f.name = name;
    f.key = k;
    f.checkpoint = c.existing_path(k + ".checkpoint");
    if (c.has(k + ".recipe")) {
      f.recipe_path = c.existing_path(k + ".recipe");
    } else {  // runs/NAME/checkpoints/step_N: the run's recipe.yaml two levels up
      const std::filesystem::path p = std::filesystem::weakly_canonical(f.checkpoint).parent_path().parent_path() / "recipe.yaml";
      if (!std::filesystem::exists(p))
        c.fail(k + ".checkpoint", str_cat("no recipe.yaml two levels above it (", p.string(),
                                          "), where a run keeps its recipe: give frozen.", name, ".recipe"));
      f.recipe_path = p.string();
    }
    if (!std::filesystem::exists(f.recipe_path)) c.fail(k + ".recipe", "the frozen model's recipe is not on this machine");
    try {
      Config fc = Config::load(f.recipe_path);
      fc.allow_missing_files();  // its data need not be on this machine
      f.recipe = std::make_shared<const Recipe>(Recipe::from(fc));
    } catch (const Error& e) {
      c.fail(k, str_cat("the frozen model's recipe does not read: ", e.what()));
    }
    FrozenModel m;
    m.key = k;
    m.checkpoint = f.checkpoint;
    m.model = std::make_shared<const ModelSpec>(f.recipe->model);
    for (const StageSpec& s : f.recipe->stages) {
      m.task_types.push_back(s.task.type);
      m.sizes.insert(s.task.sizes.begin(), s.task.sizes.end());
    }
    r.model.frozen[name] = m;
    r.frozen[name] = std::move(f);
  }
}

void read_all_data(const Config& c, Recipe& r) {
  if (!c.has("data.train")) c.fail("data.train", "required key is missing" + c.near_miss("data.train"));
  for (const std::string& name : c.keys("data")) r.data[name] = read_data(c, name);
  // The audio tower fixes the mel bins; a data section that names others would be silently overridden.
  for (const auto& [modality, t] : r.model.towers)
    if (t.input.kind == "audio")
      for (const auto& [name, d] : r.data) {
        const std::string k = str_cat("data.", name, ".audio.mel_bins");
        if (c.has(k) && d.audio.fbank.num_mel_bins != t.input.height)
          c.fail(k, str_cat(d.audio.fbank.num_mel_bins, " mel bins, but the model's ", modality, " tower reads ", t.input.height,
                            " (the tower sets them; drop this key or make them equal)"));
      }
}

// stages: (or the one implicit stage of task/tasks and train.*), each with its optimizer and schedule.
void read_stages(const Config& c, Recipe& r) {
  // Optimizer and schedule at the top level are the defaults of every stage.
  const AdamWConfig optim = read_optim(c, "optim", AdamWConfig{});
  const ScheduleConfig schedule = read_schedule(c, "schedule", ScheduleConfig{});
  r.explicit_stages = c.has("stages");
  if (r.explicit_stages) {
    if (c.list_size("stages") == 0) c.fail("stages", "expected a list of stages");
    for (const char* k : {"task", "tasks"})
      if (c.has(k)) c.fail(k, "with stages:, each stage has its own task; move it into a stage");
    for (const char* k : {"train.steps", "train.epochs"})
      if (c.has(k)) c.fail(k, "with stages:, each stage sets its own steps or epochs");
    std::set<std::string> names;
    for (size_t i = 0; i < c.list_size("stages"); ++i) {
      const std::string k = str_cat("stages.", i);
      if (c.keys(k).empty()) c.fail(k, "a stage is a mapping (name, task, data, steps, ...)");
      StageSpec s;
      s.key = k;
      if (c.has(k + ".tasks") && c.has(k + ".task")) c.fail(k + ".tasks", "give task (one) or tasks (a list), not both");
      s.task = c.has(k + ".tasks") ? parse_tasks(c, k + ".tasks", r.model) : parse_task(c, k + ".task", r.model);
      s.name = c.str(k + ".name", str_cat(s.task.type, "_", i));
      if (!names.insert(s.name).second) c.fail(k + ".name", str_cat("two stages are named '", s.name, "'"));
      read_sources(c, k + ".data", r, s);
      s.eval_data = c.str(k + ".eval_data", r.data.count("eval") ? "eval" : "");
      read_length(c, k, s);
      s.optim = read_optim(c, k + ".optim", optim);
      s.schedule = read_schedule(c, k + ".schedule", schedule);
      s.freeze = c.str_list(k + ".freeze", {});
      s.train_only = c.str_list(k + ".train_only", {});
      r.stages.push_back(std::move(s));
    }
  } else {
    StageSpec s;
    s.key = "task";
    if (c.has("tasks") && c.has("task")) c.fail("tasks", "give task (one) or tasks (a list), not both");
    if (c.has("tasks")) {
      s.key = "tasks";
      s.task = parse_tasks(c, "tasks", r.model);
    } else {
      s.task = parse_task(c, "task", r.model, "contrastive");  // the default, as before tasks existed
    }
    s.name = s.task.type;
    s.eval_data = r.data.count("eval") ? "eval" : "";
    read_sources(c, "train.data", r, s);
    read_length(c, "train", s);
    s.optim = optim;
    s.schedule = schedule;
    r.stages.push_back(std::move(s));
  }
}

void check_sources_serve(const Config& c, const Recipe& r, const StageSpec& s, const std::string& dkey) {
  // Several sources: each must serve the task, and together they must serve all of it.
  std::vector<std::vector<std::string>> serves = s.task.serves;
  if (serves.empty()) serves = {s.task.needs};
  std::vector<bool> served(serves.size(), false);
  auto may_serve = [&](size_t i, const std::string& source) {
    if (i >= s.task.serves_from.size() || s.task.serves_from[i].empty()) return true;
    const auto& from = s.task.serves_from[i];
    return std::find(from.begin(), from.end(), source) != from.end();
  };
  for (const StageSpec::Source& src : s.sources) {
    const std::vector<std::string> have = r.find_data(src.name)->provides();
    bool any = false;
    for (size_t i = 0; i < serves.size(); ++i) {
      if (!may_serve(i, src.name)) continue;
      bool all = true;
      for (const std::string& k : serves[i]) all = all && std::find(have.begin(), have.end(), k) != have.end();
      if (all) any = true;
      if (all && src.weight > 0) served[i] = true;  // a source of weight 0 is never drawn
    }
    if (!any)
      c.fail(dkey + "." + src.name, str_cat("task ", s.task.type, " cannot use data.", src.name, " (it provides ", join(have),
                                            "; the task reads ", [&] {
                                              std::string o;
                                              for (const auto& keys : serves) o += (o.empty() ? "" : " or ") + join(keys);
                                              return o;
                                            }(), ")"));
  }
  for (size_t i = 0; i < serves.size(); ++i)
    if (!served[i])
      c.fail(dkey, str_cat("no source of this stage with a weight above 0 provides ", join(serves[i]), ", which task ",
                           s.task.type, " reads"));
}

// A task of a tasks list limited to some sources (tasks.N.data) names sources of its stage (whether
// they provide what it reads is checked with the rest of the stage's data).
void check_task_sources(const Config& c, const Recipe& r, const StageSpec& s) {
  const std::string tasks = r.explicit_stages ? s.key + ".tasks" : "tasks";
  for (size_t i = 0; i < c.list_size(tasks); ++i) {
    const std::string k = str_cat(tasks, ".", i, ".data");
    if (!c.has(k)) continue;
    for (const std::string& name : c.str_list(k, {})) {
      auto it = std::find_if(s.sources.begin(), s.sources.end(), [&](const StageSpec::Source& x) { return x.name == name; });
      if (it == s.sources.end()) {
        std::vector<std::string> have;
        for (const StageSpec::Source& x : s.sources) have.push_back(x.name);
        c.fail(k, str_cat("'", name, "' is not a data source of this stage (its sources: ", join(have), ")"));
      }
    }
  }
}

void check_stage_data(const Config& c, const Recipe& r) {
  // Every stage's data exists and provides what its task needs.
  for (const StageSpec& s : r.stages) {
    const std::string dkey = r.explicit_stages ? s.key + ".data" : c.has("train.data") ? "train.data" : "data.train.manifest";
    check_task_sources(c, r, s);
    if (s.sources.size() == 1) {
      const DataSpec* d = r.find_data(s.data);
      const std::vector<std::string> have = d->provides();
      for (const std::string& need : s.task.needs)
        if (std::find(have.begin(), have.end(), need) == have.end())
          c.fail(dkey, str_cat("task ", s.task.type, " needs batch key '", need, "', but data.", s.data, " (", d->manifest,
                               ") provides only: ", join(have)));
    } else {
      check_sources_serve(c, r, s, dkey);
    }
    if (!s.eval_data.empty() && !r.find_data(s.eval_data))
      c.fail(s.key + ".eval_data", str_cat("no section data.", s.eval_data));
    if (s.task.needs_eval_data && s.eval_data.empty()) c.fail("eval", "evaluation needs data.eval");
    if (s.task.needs_text && !r.model.has_text())
      c.fail(r.explicit_stages ? s.key + ".task.type" : s.key + ".type",
             str_cat("task ", s.task.type, " needs a text tower, and the model has none (its towers: ",
                     r.model.describe_towers(), ")"));
  }
}

void merge_pair_temperatures(Recipe& r) {
  // The temperatures the model holds: one per pair, learnable when any task learns it, starting where
  // the first task that learns it says.
  for (const StageSpec& s : r.stages)
    for (const PairTemperature& p : s.task.pairs) {
      PairTemperature* known = nullptr;
      for (PairTemperature& q : r.model.pairs)
        if ((q.a == p.a && q.b == p.b) || (q.a == p.b && q.b == p.a)) known = &q;
      if (!known) r.model.pairs.push_back(p);
      else if (p.learnable && !known->learnable) *known = p;
    }
}

// tokenizer.*: trained (bpe, on tokenizer.train_on or the first text source) or read from a file.
void read_tokenizer(const Config& c, Recipe& r) {
  r.tokenizer_type = c.choice("tokenizer.type", {"bpe", "wordpiece", "clip_bpe"}, "bpe");
  // loom's bpe is trained by the run, or read from an earlier run's tokenizer.json (fine-tuning its
  // checkpoint: the ids must be the ones its embeddings learned).
  if (r.tokenizer_type == "bpe" && !c.has("tokenizer.path")) {
    r.vocab_size = c.i64("tokenizer.vocab_size", 512);
    if (r.vocab_size < 64) c.fail("tokenizer.vocab_size", "must be >= 64");
    if (c.has("tokenizer.train_on")) r.tokenizer_train_on = c.existing_path("tokenizer.train_on");
  } else {
    for (const char* k : {"tokenizer.vocab_size", "tokenizer.train_on"})
      if (c.has(k)) c.fail(k, str_cat("a ", r.tokenizer_type, " tokenizer is read from tokenizer.path, not trained: its vocabulary is the file's"));
    r.tokenizer_path = c.existing_path("tokenizer.path");
    if (!std::filesystem::exists(r.tokenizer_path)) {
      r.vocab_size = Recipe::stand_in_vocab_size;  // only under --check, which says so
    } else {
      std::unique_ptr<data::TextTokenizer> tok;
      try {
        tok = data::load_tokenizer(r.tokenizer_path, r.tokenizer_type);
      } catch (const Error& e) {
        c.fail("tokenizer.path", e.what());
      }
      r.vocab_size = tok->vocab_size();
      if (r.needs_mask_token() && tok->mask_token() < 0)
        c.fail("tokenizer.path", str_cat("masked language modelling needs a mask token, and this ", tok->kind(),
                                         " tokenizer's vocabulary has none (BERT's WordPiece has [MASK]; loom's bpe makes one)"));
    }
  }
  if (r.tokenizer_type == "bpe" && r.tokenizer_path.empty() && r.needs_text() && r.tokenizer_train_on.empty()) {
    for (const StageSpec& s : r.stages) {
      if (!s.task.needs_text) continue;
      for (const StageSpec::Source& src : s.sources) {  // the first source with text
        const std::vector<std::string> have = r.data.at(src.name).provides();
        if (std::find(have.begin(), have.end(), "text") == have.end()) continue;
        r.tokenizer_train_on = r.data.at(src.name).manifest;
        r.tokenizer_rows = r.data.at(src.name).rows;  // shards have no file to re-read
        break;
      }
      if (!r.tokenizer_train_on.empty()) break;
    }
  }
}

void read_init_from(const Config& c, Recipe& r) {
  if (c.has("init_from")) {
    r.init_from.path = c.existing_path("init_from.path");
    r.init_from.strict = c.boolean("init_from.strict", true);
    r.init_from.format = c.choice("init_from.format", {"loom", "hf-bert", "hf-clip"}, "loom");
    if (c.has("init_from.remap")) {
      YAML::Node n = c.node("init_from.remap");  // old key prefix -> new prefix
      if (!n.IsMap()) c.fail("init_from.remap", "expected a mapping of key prefixes");
      for (auto it = n.begin(); it != n.end(); ++it) {
        if (!it->first.IsScalar() || !it->second.IsScalar()) c.fail("init_from.remap", "expected old-prefix: new-prefix pairs of strings");
        r.init_from.remap[it->first.Scalar()] = it->second.Scalar();
      }
    }
  }
}

// train.* (but steps, epochs and data) and kernels.*.
void read_train_and_kernels(const Config& c, Recipe& r) {
  r.grad_accum = c.i64("train.grad_accum", 1);
  if (r.grad_accum < 1) c.fail("train.grad_accum", "must be >= 1");
  r.grad_cache = c.boolean("train.grad_cache", false);
  if (r.grad_cache)
    for (const StageSpec& s : r.stages)
      if (!s.task.caches_features)
        c.fail("train.grad_cache", str_cat("stage ", s.name, "'s task ", s.task.type, " cannot cache features (only a single "
                                           "contrastive task can: its loss couples the examples of the batch)"));
  r.clip_grad_norm = c.f64("train.clip_grad_norm", 0.0);
  if (!(r.clip_grad_norm >= 0)) c.fail("train.clip_grad_norm", "must be >= 0 (0: off)");
  // Whether this machine has the device is the trainer's question (--check reads GPU recipes anywhere).
  r.device = c.choice("train.device", {"cpu", "cuda"}, "cpu");
  r.precision = c.choice("train.precision", {"fp32", "bf16"}, "fp32");
  // CUDA kernels for bf16 attention: composed (cuBLASLt + softmax, the default until the flash
  // kernels are validated on a GPU) or the hand-written flash kernels.
  r.attention_kernel = c.choice("kernels.attention", {"composed", "flash"}, "composed");
  // bf16 GEMMs on CUDA: cuBLASLt, or the hand-written kernel (default once validated on a GPU).
  r.gemm_kernel = c.choice("kernels.gemm", {"cublas", "loom"}, "cublas");
  r.checkpoint_every = c.i64("train.checkpoint_every", 0);
  r.keep = c.i64("train.keep", 2);
  r.log_every = c.i64("train.log_every", 10);
  r.tensorboard = c.boolean("train.tensorboard", true);
  const int64_t threads = c.i64("train.threads", 0);
  if (threads < 0 || threads > 4096) c.fail("train.threads", "must be in [0, 4096] (0: OpenMP's default)");
  r.threads = int(threads);
  const double bucket_mb = c.f64("train.bucket_mb", 25.0);
  if (!(bucket_mb > 0 && bucket_mb <= 4096)) c.fail("train.bucket_mb", "must be in (0, 4096] megabytes");
  r.bucket_bytes = std::max<int64_t>(1, int64_t(bucket_mb * double(1 << 20)));
  r.overlap_comm = c.boolean("train.overlap_comm", true);
  r.on_nonfinite = c.choice("train.on_nonfinite", {"stop", "skip_step"}, "stop");
  r.detect_anomaly = c.boolean("train.detect_anomaly", false);
  if (r.keep < 0) c.fail("train.keep", "must be >= 0 (0 keeps every checkpoint)");
  if (r.checkpoint_every < 0) c.fail("train.checkpoint_every", "must be >= 0");
}

void epochs_to_steps(const Config& c, Recipe& r) {
  // Epochs become steps: full batches per epoch of the stage's data, divided by grad_accum.
  for (StageSpec& s : r.stages)
    if (s.epochs > 0) {
      if (s.sources.size() > 1)
        c.fail(r.explicit_stages ? s.key + ".epochs" : "train.epochs",
               "an epoch of several data sources is not one length; give steps");
      const DataSpec& d = r.data.at(s.data);
      if (!d.present) continue;  // --check without the data: the length stays unknown (steps 0)
      const int64_t per_epoch = int64_t(d.rows->rows.size()) / d.batch_size;
      if (per_epoch < 1)
        c.fail(str_cat("data.", s.data, ".batch_size"), str_cat(d.rows->rows.size(), " rows make no full batch of ", d.batch_size));
      s.steps = std::max<int64_t>(1, s.epochs * per_epoch / r.grad_accum);
    }
}

void read_eval(const Config& c, Recipe& r) {
  r.eval_every = c.i64("eval.every", 0);
  if (r.eval_every < 0) c.fail("eval.every", "must be >= 0 (0: never during training; loom eval evaluates a checkpoint)");
  r.eval_max_samples = c.i64("eval.max_samples", 0);
  if (r.eval_max_samples < 0) c.fail("eval.max_samples", "must be >= 0 (0: all)");
  if (c.has("eval.probe")) {
    r.has_probe = true;
    r.probe = read_probe(c, "eval.probe");
    if (!r.find_data(r.probe.train_data)) c.fail("eval.probe.train_data", str_cat("no section data.", r.probe.train_data));
    if (!r.find_data("eval")) c.fail("eval.probe", "the probe tests on data.eval, and the recipe has none");
  }
}

}  // namespace

Recipe Recipe::from(const Config& c) {
  Recipe r;
  r.name = c.str("name");
  r.seed = uint64_t(c.i64("seed", 0));
  r.model = parse_model(c);
  read_frozen(c, r);
  read_all_data(c, r);
  read_stages(c, r);
  check_stage_data(c, r);
  merge_pair_temperatures(r);
  read_tokenizer(c, r);
  read_init_from(c, r);
  read_train_and_kernels(c, r);
  epochs_to_steps(c, r);
  read_eval(c, r);
  c.check_unknown();
  return r;
}

}  // namespace loom
