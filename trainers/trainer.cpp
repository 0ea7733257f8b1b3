#include "trainers/trainer.h"
#include "core/profiler.h"
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>
#include "core/json_integer.h"
#include "data/bpe_tokenizer.h"
#include "trainers/checkpoint.h"
#include "trainers/pretrained.h"
#include "trainers/run.h"
#include "trainers/tensorboard.h"
#include "core/stream.h"

namespace loom {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kDropPathSalt = 1;  // the drop-path stream is seeded with seed + 1

// The recipe with the keys that may change on --resume removed: the run's length (train.steps/epochs,
// or the last stage's), logging, checkpointing, threads, loader workers and evaluation.
std::string resume_relevant(const std::string& yaml) {
  YAML::Node n = YAML::Load(yaml);
  if (n["train"]) for (const char* k : {"steps", "epochs", "checkpoint_every", "keep", "log_every", "threads", "bucket_mb", "overlap_comm"}) n["train"].remove(k);
  n.remove("eval");
  if (n["stages"] && n["stages"].IsSequence() && n["stages"].size() > 0) {
    YAML::Node last = n["stages"][n["stages"].size() - 1];
    if (last.IsMap()) for (const char* k : {"steps", "epochs"}) last.remove(k);
  }
  if (n["data"] && n["data"].IsMap()) {
    if (n["data"]["eval"]) n["data"].remove("eval");
    for (auto it = n["data"].begin(); it != n["data"].end(); ++it)
      if (it->second.IsMap()) it->second.remove("workers");
  }
  YAML::Emitter e;
  e << n;
  return e.c_str();
}

}  // namespace

// ---------------------------------------------------------------- trainer
struct Trainer::Saved {
  size_t stage = 0;
  int64_t optimizer_steps = 0;
  TensorMap optimizer;
  std::vector<data::LoaderPosition> loaders;  // per data source of the stage
};

Trainer::Trainer(Recipe recipe, const Config& resolved, std::string run_dir, bool resume,
                 std::shared_ptr<distributed::Communicator> comm)
    : recipe_(std::move(recipe)), config_(resolved), comm_(comm ? std::move(comm) : distributed::single_process()),
      run_dir_(std::move(run_dir)), resolved_yaml_(resolved.dump()),
      // Each rank draws its own drop-path masks (rank 0 the one-process stream): with one shared
      // stream, the i-th example of every rank would be dropped alike.
      drop_gen_(recipe_.seed + kDropPathSalt + uint64_t(comm_->rank()) * 0x9E3779B97F4A7C15ull) {
  if (recipe_.threads > 0) omp_set_num_threads(recipe_.threads);
  autograd::set_detect_anomaly(recipe_.detect_anomaly);
  // The device first: a recipe this machine cannot run stops before any work.
  device_ = training_device(recipe_, comm_->local_rank(), [&](const std::string& why) { config_.fail("train.device", why); });
  check_world_fits();
  prepare_run_dir(resume);
  run_ = Run::build(recipe_, shared_tokenizer(resume), [&](Module& m) {
    if (!resume && !recipe_.init_from.path.empty()) load_pretrained(m, recipe_.init_from);
  }, comm_.get());
  check_freeze_patterns(*run_.model, recipe_, config_);
  params_ = run_.model->parameters();  // tasks add their heads in Run::build: the set is final here

  int64_t end = 0;
  for (const StageSpec& s : recipe_.stages) ends_.push_back(end += s.steps);

  Saved saved;
  if (resume) {
    restore(fs::canonical(fs::path(run_dir_) / "checkpoints" / "latest").string(), saved);
    while (stage_ + 1 < ends_.size() && step_ >= ends_[stage_]) ++stage_;
  }
  // The model moves before the optimizer is built (enter_stage), so its moments live beside the weights.
  run_.model->to(device_);
  for (auto& [_, m] : run_.frozen) m->to(device_);
  autocast_ = autocast_of(recipe_);
  use_recipe_kernels(recipe_);
  uploader_ = std::make_unique<Uploader>(device_);
  // A checkpoint taken at the end of a stage resumes into the next one, with its fresh optimizer and data.
  enter_stage(stage_, resume && saved.stage == stage_ ? &saved : nullptr);
  if (comm_->world() > 1) join_data_parallel();
  open_logs(resume);
  comm_->barrier();
}

void Trainer::check_world_fits() const {
  const int world = comm_->world();
  if (world == 1) return;
  if (device_.is_cuda())
    config_.fail("train.device", str_cat("cuda with ", world, " processes: the trainer's data parallelism runs on the CPU "
                                         "(MPI) only so far; run one process per GPU once NCCL is wired into it"));
  for (const StageSpec& s : recipe_.stages)
    for (const StageSpec::Source& src : s.sources) {
      const int64_t bs = recipe_.data.at(src.name).batch_size;
      if (bs % world != 0)
        config_.fail(str_cat("data.", src.name, ".batch_size"),
                     str_cat(bs, " is the global batch, and it does not split evenly over ", world,
                             " processes (make it a multiple of ", world, ")"));
    }
}

void Trainer::prepare_run_dir(bool resume) {
  const fs::path ckdir = fs::path(run_dir_) / "checkpoints";
  // Only whole checkpoints count: a process killed while writing its first one leaves a .tmp-*
  // directory, which must not stop a fresh start (nor be resumed from).
  bool whole = fs::exists(ckdir / "latest");
  if (fs::is_directory(ckdir))
    for (auto& e : fs::directory_iterator(ckdir)) whole = whole || step_of_dir(e.path().string()) >= 0;
  if (resume) {
    LOOM_CHECK(fs::exists(ckdir / "latest"), "--resume ", run_dir_, ": no checkpoints/latest in that run directory");
  } else if (whole) {
    throw Error(str_cat(run_dir_, " already holds a run with checkpoints; pass --resume ", run_dir_,
                        " to continue it, or choose another run directory"));
  }
  comm_->barrier();  // every rank has looked before rank 0 writes
  if (!leader()) return;
  fs::create_directories(ckdir);
  std::vector<fs::path> torn;  // writes of an interrupted run
  for (auto& e : fs::directory_iterator(ckdir))
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) torn.push_back(e.path());
  for (const fs::path& p : torn) fs::remove_all(p);
  if (!resume) {  // a resumed run keeps the recipe it started with (restore() checks the new one matches)
    std::ofstream f(fs::path(run_dir_) / "recipe.yaml");
    f << "# resolved recipe (file + overrides) of this run\n" << resolved_yaml_ << "\n";
    f.close();
    LOOM_CHECK(f, "writing ", (fs::path(run_dir_) / "recipe.yaml").string(), " failed");
  }
}

std::unique_ptr<data::TextTokenizer> Trainer::shared_tokenizer(bool resume) {
  std::unique_ptr<data::TextTokenizer> tok;
  if (!recipe_.needs_text()) return tok;
  const fs::path tok_path = fs::path(run_dir_) / "tokenizer.json";
  if (!resume && leader()) {  // rank 0 trains (or copies) it; the others read what it wrote
    tok = make_tokenizer(recipe_);
    tok->save(tok_path.string());
  }
  comm_->barrier();
  if (!tok) tok = data::load_tokenizer(tok_path.string(), recipe_.tokenizer_type);
  return tok;
}

void Trainer::join_data_parallel() {
  // Every rank starts from rank 0's weights, whatever its files said; then gradients stay equal.
  std::vector<Tensor> state;
  for (auto& [_, t] : run_.model->state_dict()) state.push_back(t);
  distributed::broadcast_tensors(*comm_, state, 0);
  reducer_ = std::make_unique<distributed::GradReducer>(comm_, run_.model->named_parameters(), recipe_.bucket_bytes,
                                                        recipe_.overlap_comm);
}

void Trainer::open_logs(bool resume) {
  if (!leader()) return;
  metrics_ = std::make_unique<MetricsLog>((fs::path(run_dir_) / "metrics.jsonl").string());
  // A resumed run writes the steps after its checkpoint again: TensorBoard forgets them from the earlier files.
  if (recipe_.tensorboard)
    tensorboard_ = std::make_unique<TensorBoardWriter>((fs::path(run_dir_) / "tensorboard").string(), resume ? step_ + 1 : 0);
}

Trainer::~Trainer() = default;

void Trainer::enter_stage(size_t k, const Saved* saved) {
  stage_ = k;
  const StageSpec& s = recipe_.stages[k];
  MultimodalModel& m = *run_.model;
  for (auto& [_, p] : m.named_parameters()) p.set_requires_grad(true);
  if (!s.train_only.empty()) m.train_only(s.train_only);
  if (!s.freeze.empty()) m.freeze(s.freeze);
  // Every parameter is in the optimizer: one frozen now keeps its slot and is skipped while frozen.
  optim_ = std::make_unique<AdamW>(m.named_parameters(), s.optim, parameter_settings(m, m.tower_names(), s.optim));
  if (saved) {
    const std::string path = (fs::path(checkpoint_dir(run_dir_, step_)) / "optimizer.safetensors").string();
    optim_->load_state_dict(saved->optimizer, saved->optimizer_steps, path);
  }
  Task& task = *run_.tasks[k];
  const bool text = std::find(s.task.needs.begin(), s.task.needs.end(), "text") != s.task.needs.end();
  prefetched_.reset();  // never set across a stage's end; cleared for certain with the old loaders
  prefetch_error_ = nullptr;
  loaders_.clear();
  LOOM_CHECK(!saved || saved->loaders.size() == s.sources.size(), "the checkpoint holds ", saved ? saved->loaders.size() : 0,
             " data positions for stage '", s.name, "', which reads ", s.sources.size(), " sources");
  for (size_t i = 0; i < s.sources.size(); ++i) {  // one loader per data source, each with its own position
    const DataSpec& d = recipe_.data.at(s.sources[i].name);
    data::LoaderConfig lc = loader_config(d, recipe_.seed, true);
    task.configure(lc);
    // Only what the task reads is decoded (a model's other towers' files in a shared manifest are not).
    lc.read_images = std::find(s.task.needs.begin(), s.task.needs.end(), "image") != s.task.needs.end();
    lc.read_audio = std::find(s.task.needs.begin(), s.task.needs.end(), "audio") != s.task.needs.end();
    lc.shard = comm_->rank();
    lc.shards = comm_->world();
    const std::vector<std::string> have = d.provides();
    const bool source_text = text && std::find(have.begin(), have.end(), "text") != have.end();
    loaders_.push_back(std::make_unique<data::Loader>(d.rows, source_text ? run_.tokenizer.get() : nullptr, lc,
                                                      saved ? saved->loaders[i] : data::LoaderPosition{}));
  }
  if (recipe_.explicit_stages && leader()) {
    int64_t trainable = 0;
    for (const Tensor& p : m.parameters()) trainable += p.requires_grad() ? p.numel() : 0;
    std::cerr << "loom: stage " << k + 1 << "/" << recipe_.stages.size() << " '" << s.name << "': task " << s.task.type
              << " on data." << s.data
              << (s.sources.size() > 1 ? str_cat(" and ", s.sources.size() - 1, " more sources") : std::string()) << ", steps "
              << (k ? ends_[k - 1] : 0) << ".." << ends_[k] << ", " << trainable
              << " of " << m.parameter_count() << " parameters trainable\n";
  }
}

void Trainer::save_checkpoint() {
  flush_step_scalars();  // a step found non-finite stops the run before its weights are written
  // A prefetched batch (or one whose read failed) is not yet consumed.
  std::vector<data::LoaderPosition> pos;
  for (size_t i = 0; i < loaders_.size(); ++i)
    pos.push_back((prefetched_ || prefetch_error_) && i == prefetched_source_ ? prefetched_at_ : loaders_[i]->position());
  json positions = json::array();
  for (size_t i = 0; i < pos.size(); ++i)
    positions.push_back({{"source", recipe_.stages[stage_].sources[i].name}, {"epoch", pos[i].epoch}, {"batch", pos[i].batch}});
  json tasks = json::object();
  for (size_t k = 0; k < recipe_.stages.size(); ++k) tasks[recipe_.stages[k].name] = run_.tasks[k]->state();
  json st = {{"step", step_},
             {"stage", stage_},
             {"stage_name", recipe_.stages[stage_].name},
             {"optimizer_steps", optim_->steps()},
             {"world_size", comm_->world()},
             {"skipped_steps", skipped_steps_},
             {"seed", recipe_.seed},
             {"drop_path_rng", {{"seed", drop_gen_.seed()}, {"offset", drop_gen_.offset()}}},
             {"loader", {{"epoch", pos[0].epoch}, {"batch", pos[0].batch}}},  // the first source's
             {"loaders", positions},
             {"tasks", tasks},
             {"recipe", resolved_yaml_}};
  if (leader()) {  // every rank holds the same weights and optimizer state
    write_checkpoint(run_dir_, step_, run_.model->state_dict(), optim_->state_dict(), run_.tokenizer.get(), st);
    prune_checkpoints(run_dir_, recipe_.keep);
  }
  comm_->barrier();  // no rank runs ahead of a checkpoint being written
}

void Trainer::restore(const std::string& dir, Saved& out) {
  const std::string state_path = (fs::path(dir) / "trainer.json").string();
  std::ifstream f(state_path);
  LOOM_CHECK(f, state_path, ": cannot open");
  std::string saved_recipe;
  json tasks;
  int saved_world = 1;
  try {
    json st = json::parse(f);
    step_ = json_int64(st.at("step"), "step");
    out.stage = size_t(json_int64_or(st, "stage", 0, "trainer"));
    out.optimizer_steps = json_int64(st.at("optimizer_steps"), "optimizer_steps");
    // trainer.json holds rank 0's drop-path stream; another rank keeps its own seed at the same offset
    // (every rank draws the same count per step).
    drop_gen_.set_state(leader() ? json_uint64(st.at("drop_path_rng").at("seed"), "drop_path_rng.seed") : drop_gen_.seed(),
                        json_uint64(st.at("drop_path_rng").at("offset"), "drop_path_rng.offset"));
    out.loaders = {{json_int64(st.at("loader").at("epoch"), "loader.epoch"), json_int64(st.at("loader").at("batch"), "loader.batch")}};
    if (st.contains("loaders")) {  // every source's (checkpoints before several sources have "loader" only)
      out.loaders.clear();
      for (const json& l : st.at("loaders"))
        out.loaders.push_back({json_int64(l.at("epoch"), "loaders.epoch"), json_int64(l.at("batch"), "loaders.batch")});
    }
    saved_recipe = st.at("recipe").get<std::string>();
    tasks = st.value("tasks", json::object());
    saved_world = int(json_int64_or(st, "world_size", 1, "trainer"));
    skipped_steps_ = json_int64_or(st, "skipped_steps", 0, "trainer");
  } catch (const std::exception& e) {
    throw Error(str_cat(state_path, ": ", e.what()));
  }
  if (resume_relevant(saved_recipe) != resume_relevant(resolved_yaml_))
    throw Error(str_cat("--resume ", run_dir_, ": the recipe differs from the one this run was trained with (saved in ",
                        state_path, "); only the run's length (train.steps/epochs, or the last stage's), logging, "
                        "checkpointing, threads, workers and eval may change, or the run would not continue as it was"));
  LOOM_CHECK(out.stage < recipe_.stages.size() && step_ <= ends_.back(), state_path, ": step ", step_, " of stage ",
             out.stage, " lies outside this recipe's ", ends_.back(), " steps");
  run_.model->load_state_dict(load_safetensors((fs::path(dir) / "model.safetensors").string()).tensors, true);
  out.optimizer = load_safetensors((fs::path(dir) / "optimizer.safetensors").string()).tensors;
  for (size_t k = 0; k < recipe_.stages.size(); ++k)
    if (tasks.contains(recipe_.stages[k].name)) run_.tasks[k]->load_state(tasks[recipe_.stages[k].name], state_path);

  // Steps after this checkpoint were lost with the interruption: drop their metrics and later checkpoints.
  comm_->barrier();  // every rank has read the checkpoint before rank 0 tidies the directory
  if (leader() && saved_world != comm_->world())
    // Supported: batch_size is the global batch and the data is sharded by position, so the run
    // sees the same batches; what differs is the order of floating-point sums, and the drop-path
    // masks of ranks other than 0 (each rank draws its own).
    std::cerr << "loom: resuming a run of " << saved_world << " process" << (saved_world > 1 ? "es" : "") << " with "
              << comm_->world() << ": the same batches, sums in another order\n";
  if (leader()) {
    MetricsLog::truncate_after((fs::path(run_dir_) / "metrics.jsonl").string(), step_);
    remove_checkpoints_after(run_dir_, step_);
    std::cerr << "loom: resumed " << dir << " at step " << step_ << "\n";
  }
}

data::Batch Trainer::next_batch() {
  if (bench_batch_) return *bench_batch_;
  if (prefetch_error_) {  // the prefetch's read failed: the step that needs the batch reports it
    std::exception_ptr e = prefetch_error_;
    prefetch_error_ = nullptr;
    std::rethrow_exception(e);
  }
  data::Batch b;
  if (prefetched_) {
    b = std::move(*prefetched_);
    prefetched_.reset();
  } else {
    const size_t src = source_at(step_);
    b = *loaders_[src]->next();
    b.source = recipe_.stages[stage_].sources[src].name;
    b.tensors = uploader_->upload(b.tensors);
  }
  uploader_->taken();
  return b;
}

void Trainer::prefetch_next_batch() {
  // On a GPU the next step's first batch is read and copied while this step's work runs; not past
  // the stage's end (the next stage has its own loader). Checkpoints save the position before it.
  if (!device_.is_cuda() || bench_batch_ || prefetched_ || prefetch_error_ || step_ + 1 >= ends_[stage_] ||
      step_ + 1 >= until_)
    return;
  prefetched_source_ = source_at(step_ + 1);
  prefetched_at_ = loaders_[prefetched_source_]->position();
  try {
    data::Batch b = *loaders_[prefetched_source_]->next();
    b.source = recipe_.stages[stage_].sources[prefetched_source_].name;
    b.tensors = uploader_->upload(b.tensors);
    prefetched_ = std::move(b);
  } catch (...) {
    // A batch that cannot be read (on_error: fail) fails the step that needs it, as without the
    // prefetch: this step still completes and is checkpointed as due.
    prefetch_error_ = std::current_exception();
  }
}

std::vector<double> Trainer::sum_over_ranks(std::vector<double> v) const {
  if (comm_->world() > 1) {
    Tensor t = Tensor::from(v, {int64_t(v.size())});
    comm_->all_reduce_sum(t);
    v = t.to_vector<double>();
  }
  return v;
}

data::Batch Trainer::next_usable_batch(int64_t& global_rows) {
  const Task& task = *run_.tasks[stage_];
  const StageSpec& stage = recipe_.stages[stage_];
  data::Batch b = next_batch();
  global_rows = int64_t(sum_over_ranks({double(b.size())})[0]);
  // on_error: skip can shrink a batch below what the task can learn from (a pair needs a negative).
  for (int tries = 0; global_rows < task.min_batch(); ++tries) {
    LOOM_CHECK(!bench_batch_, "bench --in-memory: the held batch of ", recipe_.data.at(stage.data).manifest, " has fewer than ",
               task.min_batch(), " readable examples");
    LOOM_CHECK(tries < 100, recipe_.data.at(stage.data).manifest, ": 100 batches in a row had fewer than ",
               task.min_batch(), " readable examples");
    b = next_batch();
    global_rows = int64_t(sum_over_ranks({double(b.size())})[0]);
  }
  LOOM_CHECK(b.size() > 0, "rank ", comm_->rank(), ": every example of its part of a batch of ",
             recipe_.data.at(stage.data).manifest, " was unreadable (on_error: skip); the run cannot go on without it");
  return b;
}

void Trainer::micro_step(int64_t a, StepReadback& rb) {
  Task& task = *run_.tasks[stage_];
  const StageSpec& stage = recipe_.stages[stage_];
  int64_t global_rows = 0;
  data::Batch b = next_usable_batch(global_rows);
  // This rank's share of the global batch: losses are means over examples, so the sum over ranks of
  // share * loss is the one-process loss (and the summed gradients its gradient).
  const double share = double(b.size()) / double(global_rows);
  const bool reduce = reducer_ && a + 1 == recipe_.grad_accum;  // no communication on earlier micro-steps
  std::vector<LossPart> ps;
  Tensor loss;
  {
    AutocastGuard autocast(autocast_);  // forward only: backward runs in the dtypes forward chose
    step_context_.shared.clear();  // what tasks share lives for one micro-batch
    ps = task.forward(b, drop_gen_, step_context_);
    LOOM_CHECK(!ps.empty(), "task ", stage.task.type, " returned no loss");
    if (ps.size() == 1 && ps[0].weight == 1.0) {
      loss = ps[0].value;
    } else {
      for (const LossPart& p : ps) {
        Tensor w = p.weight == 1.0 ? p.value : ops::mul(p.value, p.weight);
        loss = loss.defined() ? ops::add(loss, w) : w;
      }
    }
  }
  if (a == 0)
    for (const LossPart& p : ps) rb.part_names.push_back(p.name);
  LOOM_CHECK(ps.size() == rb.part_names.size(), "task ", stage.task.type, " returned ", ps.size(),
             " losses on one micro-batch and ", rb.part_names.size(), " on the first");
  {
    NoGradGuard ng;
    auto scalar = [share](const Tensor& v) { return ops::mul(v.detach().to(DType::f64), share).reshape({}); };
    rb.values.push_back(scalar(loss));
    for (const LossPart& p : ps) rb.values.push_back(scalar(p.value));
  }
  const double scale = share / double(recipe_.grad_accum);
  const auto b0 = std::chrono::steady_clock::now();
  if (reduce) reducer_->arm();
  (scale != 1.0 ? ops::mul(loss, scale) : loss).backward();
  if (reduce) reducer_->finish();
  backward_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - b0).count();
}

// GradCache (Gao et al. 2021; open_clip's accum_freq): 1. every micro-batch encoded without a graph,
// the drop generator's state noted before each; 2. the loss over all of their features, as leaves,
// backward to their gradients (and to what the loss reads directly: the temperature); 3. each
// micro-batch encoded again from its noted state (the same dropout and drop-path) with its graph,
// backward from its slice of the gradient. The last backward carries the loss's direct gradients
// too, so the reducer sees every gradient in its one armed backward. Equal to one big batch.
void Trainer::grad_cache_step(StepReadback& rb) {
  Task& task = *run_.tasks[stage_];
  const StageSpec& stage = recipe_.stages[stage_];
  const int64_t G = recipe_.grad_accum;
  std::vector<data::Batch> batches;
  std::vector<std::pair<uint64_t, uint64_t>> gen_at;
  std::vector<Task::Features> cached;
  double local_rows = 0, global_rows = 0;
  for (int64_t a = 0; a < G; ++a) {
    int64_t rows = 0;
    batches.push_back(next_usable_batch(rows));
    global_rows += double(rows);
    local_rows += double(batches.back().size());
    gen_at.push_back({drop_gen_.seed(), drop_gen_.offset()});
    NoGradGuard ng;
    AutocastGuard autocast(autocast_);
    Task::Features f = task.features(batches.back(), drop_gen_);
    for (auto& [_, t] : f) t = t.detach().set_requires_grad(true);
    cached.push_back(std::move(f));
  }
  const std::pair<uint64_t, uint64_t> gen_end{drop_gen_.seed(), drop_gen_.offset()};
  const double share = local_rows / global_rows;  // this rank's part of the global accumulated batch
  std::vector<LossPart> ps;
  Tensor loss;
  {
    AutocastGuard autocast(autocast_);
    ps = task.loss_of_features(cached, batches);
    for (const LossPart& p : ps) {
      Tensor w = p.weight == 1.0 ? p.value : ops::mul(p.value, p.weight);
      loss = loss.defined() ? ops::add(loss, w) : w;
    }
  }
  for (const LossPart& p : ps) rb.part_names.push_back(p.name);
  {
    NoGradGuard ng;
    auto scalar = [share](const Tensor& v) { return ops::mul(v.detach().to(DType::f64), share).reshape({}); };
    // end_step averages G micro-steps' values: the one loss of the whole batch stands for each.
    for (int64_t a = 0; a < G; ++a) {
      rb.values.push_back(scalar(loss));
      for (const LossPart& p : ps) rb.values.push_back(scalar(p.value));
    }
  }
  const auto b0 = std::chrono::steady_clock::now();
  (share != 1.0 ? ops::mul(loss, share) : loss).backward();
  // What the loss reads besides the features (the temperature) has its gradient now: held back for
  // the last backward, so that no gradient reaches a parameter outside the reducer's armed pass.
  std::vector<std::pair<Tensor, Tensor>> direct;
  for (Tensor& p : params_)
    if (p.grad().defined()) {
      direct.push_back({p, p.grad()});
      p.zero_grad();
    }
  for (int64_t a = 0; a < G; ++a) {
    drop_gen_.set_state(gen_at[size_t(a)].first, gen_at[size_t(a)].second);
    Tensor surrogate;
    {
      AutocastGuard autocast(autocast_);
      const Task::Features f = task.features(batches[size_t(a)], drop_gen_);
      for (const auto& [m, t] : f) {
        const Tensor g = cached[size_t(a)].at(m).grad();
        if (!g.defined()) continue;  // a modality the loss did not read
        const Tensor term = ops::sum(ops::mul(t.to(g.dtype()), g));
        surrogate = surrogate.defined() ? ops::add(surrogate, term) : term;
      }
      if (a + 1 == G)
        for (const auto& [p, g] : direct) {
          const Tensor term = ops::sum(ops::mul(p, g));
          surrogate = surrogate.defined() ? ops::add(surrogate, term) : term;
        }
    }
    LOOM_CHECK(surrogate.defined(), "task ", stage.task.type, ": no feature of micro-batch ", a, " reached the loss");
    const bool reduce = reducer_ && a + 1 == G;
    if (reduce) reducer_->arm();
    surrogate.backward();
    if (reduce) reducer_->finish();
  }
  drop_gen_.set_state(gen_end.first, gen_end.second);
  backward_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - b0).count();
}

void Trainer::train_step(double lr) {
  const StageSpec& stage = recipe_.stages[stage_];
  step_context_.step = step_;
  step_context_.stage_step = step_ - (stage_ ? ends_[stage_ - 1] : 0);
  step_context_.stage_steps = stage.steps;
  optim_->zero_grad();
  // Every micro-batch's loss and parts stay on the device until the step's one read-back (with the
  // gradient norm): a GPU step queues all its work before the host waits once.
  StepReadback rb;
  if (recipe_.grad_cache && recipe_.grad_accum > 1)
    grad_cache_step(rb);
  else
    for (int64_t a = 0; a < recipe_.grad_accum; ++a) micro_step(a, rb);
  if (defer_scalars()) return deferred_step_end(lr, rb.values, rb.part_names, stage.task.type);
  prefetch_next_batch();  // the step's backward is queued: the next batch's copy runs beside it
  end_step(lr, rb);
}

void Trainer::end_step(double lr, StepReadback& rb) {
  const StageSpec& stage = recipe_.stages[stage_];
  // The step's one host read-back: the losses and the gradient's squared global norm (after the
  // reduction, so every rank agrees), then summed over ranks.
  {
    NoGradGuard ng;
    Tensor norm_sq = grad_norm_squared(params_);
    rb.values.push_back(norm_sq.defined() ? norm_sq : Tensor::zeros({}, DType::f64, device_));
  }
  std::vector<double> values = ops::stack(rb.values, 0).to_vector<double>();
  const double norm_sq = values.back();
  values.pop_back();
  values = sum_over_ranks(values);  // the global batch's losses and parts, the same on every rank
  const size_t per = 1 + rb.part_names.size();
  double total = 0;
  Metrics step_parts;  // added to the window once the step is taken
  for (size_t a = 0; a < values.size() / per; ++a) {
    for (size_t k = 0; k < rb.part_names.size(); ++k) {
      const double pv = values[a * per + 1 + k];
      if (std::isfinite(pv)) {
        step_parts["train/" + rb.part_names[k]] += pv / double(recipe_.grad_accum);
        continue;
      }
      const std::string what = str_cat("step ", step_ + 1, ": the loss ", rb.part_names[k], " of task ", stage.task.type, " is ",
                                       std::isnan(pv) ? "nan" : (pv > 0 ? "inf" : "-inf"));
      if (recipe_.on_nonfinite == "stop")
        throw Error(str_cat(what, "; stopping before it spoils the weights (lower optim.lr, set train.clip_grad_norm, "
                                  "or train.detect_anomaly: true to find the op)"));
      return skip_step(what);  // every rank decides alike: the values are the global batch's
    }
    total += values[a * per];
  }
  // The norm, before clipping: a non-finite one is found and named here.
  const double norm = std::sqrt(norm_sq);
  if (!std::isfinite(norm)) {
    std::string first = "?";
    for (const auto& [name, p] : run_.model->named_parameters())
      if (p.grad().defined() && !autograd::all_finite(p.grad())) { first = name; break; }
    const std::string what = str_cat("step ", step_ + 1, ": the gradient of ", first, " is not finite (the loss was ",
                                     total / double(recipe_.grad_accum), ")");
    if (recipe_.on_nonfinite == "stop")
      throw Error(str_cat(what, "; stopping before it spoils the weights (train.detect_anomaly: true names the op)"));
    return skip_step(what);
  }
  if (recipe_.clip_grad_norm > 0) scale_grads_to(params_, norm, recipe_.clip_grad_norm);
  for (auto& [k, v] : step_parts) window_.add_part(k, v);
  window_.add_part("train/grad_norm", norm);
  window_.loss_sum += total / double(recipe_.grad_accum);
  ++window_.loss_steps;
  window_.samples += recipe_.data.at(stage.sources[source_at(step_)].name).batch_size * recipe_.grad_accum;
  optim_->step(lr);
  run_.tasks[stage_]->after_step();
}

size_t Trainer::source_at(int64_t step) const {
  const auto& sources = recipe_.stages[stage_].sources;
  if (sources.size() == 1) return 0;
  // splitmix64 of (seed, stage, step): a uniform draw in [0, 1) that needs no generator state.
  uint64_t z = recipe_.seed * 0x9E3779B97F4A7C15ull + uint64_t(stage_ + 1) * 0xBF58476D1CE4E5B9ull + uint64_t(step) + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const double u = double(z >> 11) * 0x1.0p-53;
  double total = 0;
  for (const auto& src : sources) total += src.weight;
  double at = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    at += sources[i].weight / total;
    if (u < at && sources[i].weight > 0) return i;
  }
  for (size_t i = sources.size(); i-- > 0;)  // rounding left u at the very top: the last with weight
    if (sources[i].weight > 0) return i;
  return 0;
}

void Trainer::synchronize_device() const { synchronize(device_); }

bool Trainer::defer_scalars() const {
  return (device_.is_cuda() || defer_scalars_) && comm_->world() == 1 && recipe_.on_nonfinite == "stop";
}

void Trainer::deferred_step_end(double lr, const std::vector<Tensor>& readback, const std::vector<std::string>& part_names,
                                const std::string& task_type) {
  Task& task = *run_.tasks[stage_];
  {
    NoGradGuard ng;
    // Per micro-batch [loss, parts...] (each times its share), then the gradient's global norm:
    // what the read-back path reads, so the flush can add them up in the same order.
    Tensor norm_sq = grad_norm_squared(params_);
    Tensor norm = ops::sqrt(norm_sq.defined() ? norm_sq : Tensor::zeros({}, DType::f64, device_)).reshape({1});
    if (recipe_.clip_grad_norm > 0) {
      // scale_grads_to on the device: g · max/(norm + 1e-6) where norm > max, unchanged elsewhere.
      const double max = recipe_.clip_grad_norm;
      Tensor factor = ops::where(ops::gt(norm, max), ops::rdiv(max, ops::add(norm, 1e-6)), Tensor::ones({1}, DType::f64, device_))
                          .reshape({});  // a scalar: the product keeps each gradient's shape (0-d ones too)
      std::map<DType, Tensor> factor_as;  // converted once per gradient dtype
      for (Tensor& p : params_) {
        Tensor g = p.grad();
        if (!g.defined()) continue;
        Tensor& f = factor_as[g.dtype()];
        if (!f.defined()) f = factor.to(g.dtype());
        p.set_grad(ops::mul(g, f));  // one pass: the scaled gradient replaces the old one
      }
    }
    pending_.push_back({step_ + 1, ops::cat({ops::stack(readback, 0), norm}, 0), part_names, task_type,
                        recipe_.data.at(recipe_.stages[stage_].sources[source_at(step_)].name).batch_size * recipe_.grad_accum});
  }
  optim_->step(lr);
  task.after_step();
  prefetch_next_batch();  // the step's work, optimizer included, is queued: the copy runs beside it
  // Bounded: a divergence is found within this many steps even with a long log_every.
  if (pending_.size() >= 64) flush_step_scalars();
}

void Trainer::flush_step_scalars() {
  if (!diverged_.empty()) throw Error(diverged_);  // no weights a non-finite step touched are used
  if (pending_.empty()) return;
  std::vector<Tensor> all;
  for (const PendingStep& p : pending_) all.push_back(p.values);
  const std::vector<double> v = ops::cat(all, 0).to_vector<double>();  // one read-back for all of them
  std::vector<PendingStep> pending = std::move(pending_);
  pending_.clear();
  const char* when = " (found when the step's numbers were read back, at the next log point, checkpoint or evaluation "
                     "or within 64 steps: none of these has used the weights since)";
  size_t at = 0;
  for (const PendingStep& p : pending) {
    // The read-back path's host arithmetic, in its order: per micro-batch, then over them.
    const size_t per = p.part_names.size() + 1, G = size_t(recipe_.grad_accum);
    const double* x = v.data() + at;
    at += G * per + 1;
    double total = 0;
    Metrics step_parts;
    for (size_t a = 0; a < G; ++a) {
      for (size_t k = 0; k < p.part_names.size(); ++k) {
        const double pv = x[a * per + 1 + k];
        if (std::isfinite(pv)) {
          step_parts["train/" + p.part_names[k]] += pv / double(G);
          continue;
        }
        diverged_ = str_cat("step ", p.step, ": the loss ", p.part_names[k], " of task ", p.task_type, " is ",
                            std::isnan(pv) ? "nan" : (pv > 0 ? "inf" : "-inf"), when,
                            "; stopping before it spoils the weights (lower optim.lr, set train.clip_grad_norm, or "
                            "train.detect_anomaly: true to find the op)");
        throw Error(diverged_);
      }
      total += x[a * per];
    }
    const double norm = x[G * per];
    if (!std::isfinite(norm)) {
      diverged_ = str_cat("step ", p.step, ": the gradient is not finite (its global norm is ", norm, ", the loss was ",
                          total / double(G), ")", when, "; stopping before it spoils the weights (train.detect_anomaly: "
                          "true names the op)");
      throw Error(diverged_);
    }
    for (auto& [k, val] : step_parts) window_.add_part(k, val);
    window_.add_part("train/grad_norm", norm);
    window_.loss_sum += total / double(G);
    ++window_.loss_steps;
    window_.samples += p.samples;
  }
}

void Trainer::skip_step(const std::string& why) {
  // train.on_nonfinite: skip_step. Nothing moves: gradients are dropped before the optimizer, its
  // moments and step count, and the task's after-step work; the data was consumed.
  optim_->zero_grad();
  ++skipped_steps_;
  if (leader()) {
    progress_.finish_line();
    std::cerr << "loom: " << why << "; step skipped (" << skipped_steps_ << " so far)\n";
  }
}

void Trainer::log_metrics(const Metrics& m, const std::string& stage) {
  metrics_->write(step_, m, stage);
  if (!tensorboard_) return;
  tensorboard_->scalars(step_, m);
  for (const auto& [tag, path] : pictures_) tensorboard_->image(step_, tag, path);
  pictures_.clear();
}

Metrics Trainer::evaluate() {
  if (!diverged_.empty()) throw Error(diverged_);  // a deferred step went non-finite: these weights are spoiled
  AutocastGuard autocast(autocast_);  // evaluation computes as training does
  return evaluate_stage(run_, recipe_, stage_, run_dir_, step_, &pictures_);
}

void Trainer::train(int64_t stop_at) {
  using clock = std::chrono::steady_clock;
  const int64_t total = total_steps();
  if (leader())
    std::cerr << "loom: training " << recipe_.name << " for " << total << " steps, " << run_.model->parameter_count()
              << " parameters, "
              << (comm_->world() > 1 ? str_cat(comm_->world(), " processes (", comm_->backend(), ") of ") : std::string())
              << omp_get_max_threads() << " threads, run directory " << run_dir_ << "\n";
  // Examples skipped by every rank's loader (a collective: every rank calls it at the same steps).
  auto skipped_everywhere = [&] {
    int64_t mine = 0;
    for (const auto& l : loaders_) mine += l->skipped();
    Tensor t = Tensor::from(std::vector<int64_t>{mine}, {1});
    comm_->all_reduce_sum(t);
    return t.to_vector<int64_t>()[0];
  };
  auto t0 = clock::now(), window = t0;
  int64_t window_steps = 0, skipped_reported = 0;
  window_ = Window{};
  const int64_t first = step_;
  const int64_t until = stop_at >= 0 ? std::min(stop_at, total) : total;
  until_ = until;  // no batch is prefetched for a step this call does not take
  while (step_ < until) {
    if (step_ >= ends_[stage_] && stage_ + 1 < ends_.size()) {  // the next stage: its task, data, optimizer
      enter_stage(stage_ + 1, nullptr);
      window = clock::now();
      window_steps = 0;
      window_ = Window{};
    }
    const StageSpec& s = recipe_.stages[stage_];
    const int64_t start = stage_ ? ends_[stage_ - 1] : 0;
    const std::string tag = recipe_.explicit_stages ? s.name : "";
    const double lr = scheduled_lr(s.schedule, s.optim.lr, step_ - start, s.steps);
    train_step(lr);  // adds to window_ (a skipped step adds nothing), or leaves its numbers on the device
    ++step_;
    ++window_steps;
    const bool last = step_ == until, stage_end = step_ == ends_[stage_];
    if (step_ % std::max<int64_t>(1, recipe_.log_every) == 0 || last || stage_end) {
      flush_step_scalars();  // a GPU run's one synchronisation in log_every steps
      auto now = clock::now();
      const double secs = std::chrono::duration<double>(now - window).count();
      const double sps = double(window_.samples) / std::max(secs, 1e-9);
      const double elapsed = std::chrono::duration<double>(now - t0).count();
      const double eta = elapsed / double(step_ - first) * double(total - step_);
      Metrics m{{"train/lr", lr}, {"train/samples_per_s", sps}};
      if (window_.loss_steps > 0) m["train/loss"] = window_.loss_sum / double(window_.loss_steps);
      for (auto& [k, v] : window_.parts) m[k] = v / double(std::max<int64_t>(1, window_.part_steps[k]));
      if (skipped_steps_ > 0) m["train/skipped_steps"] = double(skipped_steps_);
      for (auto& [k, v] : run_.tasks[stage_]->train_metrics()) m[k] = v;
      const int64_t skipped = skipped_everywhere();
      if (skipped > skipped_reported) {
        m["data/skipped"] = double(skipped);
        skipped_reported = skipped;
      }
      if (leader()) {
        log_metrics(m, tag);
        progress_.report(step_, total, tag, m.count("train/loss") ? m["train/loss"] : std::nan(""), lr, sps, eta);
      }
      window = now;
      window_steps = 0;
      window_ = Window{};
    }
    const bool do_eval = recipe_.eval_every > 0 && (step_ % recipe_.eval_every == 0 || stage_end);
    // Rank 0 evaluates (every rank holds the same weights); the others wait at the next collective.
    if (do_eval && (run_.tasks[stage_]->evaluates() || recipe_.has_probe) && leader()) {
      flush_step_scalars();  // no evaluation of weights a non-finite step has touched
      Metrics m = evaluate();
      log_metrics(m, tag);
      progress_.finish_line();
      for (auto& [k, v] : m) std::cerr << "  " << k << " = " << v << "\n";
    }
    if ((recipe_.checkpoint_every > 0 && step_ % recipe_.checkpoint_every == 0) || last || stage_end) save_checkpoint();
  }
  const int64_t skipped = skipped_everywhere();
  if (skipped > 0 && leader()) std::cerr << "loom: skipped " << skipped << " unreadable examples (see messages above)\n";
}

double Trainer::bench(int64_t steps, int64_t warmup, std::string* profile, BenchTimes* times, bool in_memory) {
  using clock = std::chrono::steady_clock;
  const StageSpec& s = recipe_.stages[stage_];
  for (int64_t i = 0; i < warmup; ++i) train_step(s.optim.lr);
  if (in_memory) {
    bench_batch_ = next_batch();
    loaders_.clear();  // joins their workers: nothing else runs beside the timed steps
    train_step(s.optim.lr);  // one more warm-up, on the held batch
  }
  flush_step_scalars();  // the warm-up checked
  synchronize_device();  // and its work done before the clock starts
  if (profile) profiler::start();
  reset_peak_memory(device_);  // the timed steps' peak (on the CPU, the caching allocator's host blocks)
  backward_s_ = 0;
  const double wait0 = reducer_ ? reducer_->wait_seconds() : 0;
  auto t0 = clock::now();
  for (int64_t i = 0; i < steps; ++i) train_step(s.optim.lr);
  flush_step_scalars();
  synchronize_device();  // the timed steps' work done before the clock stops
  const double secs = std::chrono::duration<double>(clock::now() - t0).count();
  if (times) {
    const double n = double(std::max<int64_t>(1, steps));
    times->step_ms = 1e3 * secs / n;
    times->backward_ms = 1e3 * backward_s_ / n;
    times->comm_wait_ms = reducer_ ? 1e3 * (reducer_->wait_seconds() - wait0) / n : 0;
    times->comm_bytes = reducer_ ? reducer_->bytes_per_step() : 0;
    times->buckets = reducer_ ? int64_t(reducer_->buckets()) : 0;
    const MemoryStats m = memory_stats(device_);
    times->peak_allocated = m.peak_allocated;
    times->peak_reserved = m.peak_reserved;
  }
  if (profile) *profile = profiler::format_report(profiler::stop(), steps, secs / double(std::max<int64_t>(1, steps)));
  return double(steps * recipe_.data.at(s.data).batch_size * recipe_.grad_accum) / secs;
}

}  // namespace loom
