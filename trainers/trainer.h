// The loop: stages of tasks over one model, AdamW over all parameters (frozen ones skipped each step),
// schedules, gradient accumulation and clipping, periodic evaluation, metrics.jsonl, atomic
// checkpoints and exact resume. It knows no modality and no loss: those are the tasks'
// (trainers/tasks/task.h).
#pragma once
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include "core/autocast.h"
#include "core/uploader.h"
#include "data/loader.h"
#include "data/text_tokenizer.h"
#include "trainers/metrics.h"
#include "trainers/optimizer.h"
#include "trainers/distributed/communicator.h"
#include "trainers/distributed/reducer.h"
#include "trainers/recipe.h"
#include "trainers/run.h"

namespace loom {

class TensorBoardWriter;

class Trainer {
 public:
  // A new run in run_dir (created), or, with resume, the run continued from its latest checkpoint.
  // `resolved` is the recipe as read (errors about patterns and data name its file, line and key).
  // With a communicator of several processes (data parallelism; every rank constructs its Trainer
  // with the same arguments): data.*.batch_size is the global batch, cut into one shard per rank;
  // parameters start as rank 0's; gradients are summed across ranks during backward; rank 0 alone
  // writes the run directory, logs and evaluates. The result equals one process with the same
  // global batch up to the order of floating-point sums.
  Trainer(Recipe recipe, const Config& resolved, std::string run_dir, bool resume,
          std::shared_ptr<distributed::Communicator> comm = nullptr);
  ~Trainer();
  // Trains to the end of the last stage, or only until step `stop_at` (then checkpoints, as if interrupted).
  void train(int64_t stop_at = -1);
  Metrics evaluate();  // the current stage's task and the probe, on the stage's evaluation data
  // Training samples per second over `steps` steps of the first stage after `warmup` steps (no
  // checkpoints, no eval). With `profile`, the timed steps run under the op profiler, whose
  // table (per op and kernel, per step) is written there.
  // in_memory: the timed steps all train on one batch held in memory (the loader's next, after the
  // warm-up; the loader is then stopped), as the PyTorch twins in scripts/bench/ train on one random
  // batch; without it the loader reads and decodes every batch on the same cores.
  // times, when given: per-step milliseconds of the whole step, of backward (with the gradient
  // all-reduce it overlaps and the wait for what it did not), and of that wait alone.
  struct BenchTimes {
    double step_ms = 0, backward_ms = 0, comm_wait_ms = 0;
    int64_t comm_bytes = 0, buckets = 0;
    size_t peak_allocated = 0, peak_reserved = 0;  // over the timed steps: device memory, or the CPU caching allocator's host blocks (0 with LOOM_CPU_CACHE=0)
  };
  double bench(int64_t steps, int64_t warmup, std::string* profile = nullptr, BenchTimes* times = nullptr,
               bool in_memory = false);

  int64_t step() const { return step_; }
  int64_t total_steps() const { return ends_.back(); }
  size_t stage() const { return stage_; }
  MultimodalModel& model() { return *run_.model; }
  Device device() const { return device_; }
  const Recipe& recipe() const { return recipe_; }
  const std::string& run_dir() const { return run_dir_; }
  void save_checkpoint();
  distributed::Communicator& comm() const { return *comm_; }
  // For tests: the GPU's way of handling a step's numbers (left on the device, read back at log
  // points; with on_nonfinite: stop and one process) also on the CPU.
  void set_defer_step_scalars(bool on) { defer_scalars_ = on; }
  const distributed::GradReducer* reducer() const { return reducer_.get(); }
  const AdamW& optimizer() const { return *optim_; }  // the current stage's

 private:
  struct Saved;  // what restore() read from a checkpoint
  // The constructor's parts, in order.
  void check_world_fits() const;                 // the device and the batches for this many processes
  void prepare_run_dir(bool resume);             // refuses to overwrite, clears torn writes, keeps the recipe
  std::unique_ptr<data::TextTokenizer> shared_tokenizer(bool resume);  // rank 0 makes it, every rank reads it
  void join_data_parallel();                     // rank 0's weights everywhere, then the gradient reducer
  void open_logs(bool resume);                   // metrics.jsonl and the TensorBoard events (rank 0)
  void enter_stage(size_t k, const Saved* saved);
  // One optimizer step (grad_accum micro-batches). Its loss, parts and gradient norm go to window_
  // (nothing for a step skipped under train.on_nonfinite: skip_step), read back once per step; or,
  // on a GPU with on_nonfinite: stop, they stay on the device (pending_) until flush_step_scalars.
  void train_step(double lr);
  // What a step's micro-batches leave for its end: per micro-batch share * loss, then share * each
  // part (device scalars), and the parts' names.
  struct StepReadback {
    std::vector<Tensor> values;
    std::vector<std::string> part_names;
  };
  // Micro-batch `a` of the step: a usable batch, the task's forward, the weighted loss's backward
  // (the gradient all-reduce armed on the last one).
  void micro_step(int64_t a, StepReadback& rb);
  void grad_cache_step(StepReadback& rb);  // train.grad_cache: every micro-batch of the step in one loss
  // The step's end on the host: one read-back of the losses and the gradient norm, the non-finite
  // policy (stop naming the part or parameter, or skip_step), clipping, the optimizer step.
  void end_step(double lr, StepReadback& rb);
  // The next batch with at least the task's min_batch rows over all ranks (on_error: skip may shrink one).
  data::Batch next_usable_batch(int64_t& global_rows);
  std::vector<double> sum_over_ranks(std::vector<double> v) const;  // one small all-reduce (batch sizes, losses)
  void skip_step(const std::string& why);
  bool defer_scalars() const;
  void deferred_step_end(double lr, const std::vector<Tensor>& readback, const std::vector<std::string>& part_names,
                         const std::string& task_type);
  // Reads every pending step's numbers back at once (one synchronisation) into window_; throws for
  // the first non-finite one, naming its step. Called at log points, before evaluations and
  // checkpoints, every 64 steps and at the end of bench.
  void flush_step_scalars();
  void synchronize_device() const;
  // One line of metrics.jsonl at the current step, and the same scalars (and the last evaluation's
  // pictures) in the TensorBoard events.
  void log_metrics(const Metrics& m, const std::string& stage);  // waits for the GPU's queued work (nothing on the CPU)
  void restore(const std::string& checkpoint_dir, Saved& out);
  // The prefetched batch, or the loader's next (or the held bench batch), its tensors on the
  // training device.
  data::Batch next_batch();
  // On a GPU: reads and uploads the next step's first batch while this step's work runs.
  void prefetch_next_batch();

  bool leader() const { return comm_->rank() == 0; }  // writes, logs, evaluates
  // The data source global step `step` of the current stage draws from: the only one, or one of
  // several chosen with the stage's weights by a hash of (seed, stage, step) — the same on every
  // rank and on resume.
  size_t source_at(int64_t step) const;

  Recipe recipe_;
  Config config_;
  std::shared_ptr<distributed::Communicator> comm_;
  std::unique_ptr<distributed::GradReducer> reducer_;  // with more than one process
  std::string run_dir_, resolved_yaml_;
  Run run_;
  std::vector<Tensor> params_;  // the model's parameters (handles), for the per-step gradient norm
  std::vector<int64_t> ends_;  // ends_[k]: the global step at which stage k ends
  size_t stage_ = 0;
  Device device_;                       // train.device
  std::optional<DType> autocast_;       // train.precision: bf16
  std::unique_ptr<Uploader> uploader_;  // batches to device_ (pinned staging, a side stream, two slots)
  std::optional<data::Batch> prefetched_;  // the next step's first batch, already on device_
  data::LoaderPosition prefetched_at_;     // the loader's position before it (what a checkpoint saves)
  std::vector<std::unique_ptr<data::Loader>> loaders_;  // one per data source of the stage
  size_t prefetched_source_ = 0;                        // the source prefetched_ came from
  struct Window {  // the steps since the last log line
    double loss_sum = 0;
    int64_t loss_steps = 0, samples = 0;
    Metrics parts;  // sums of train/<part> and train/grad_norm
    std::map<std::string, int64_t> part_steps;  // steps each part was in (a source may not serve every part)
    void add_part(const std::string& k, double v) {
      parts[k] += v;
      ++part_steps[k];
    }
  };
  Window window_;
  struct PendingStep {  // a step whose numbers are still on the device
    int64_t step;
    Tensor values;  // f64: per micro-batch [share·loss, share·parts...], then the gradient norm
    std::vector<std::string> part_names;
    std::string task_type;
    int64_t samples = 0;  // the step's global batch (its source's)
  };
  std::vector<PendingStep> pending_;
  bool defer_scalars_ = false;  // set_defer_step_scalars
  std::string diverged_;        // set when a deferred step was found non-finite: the weights are spoiled
  std::exception_ptr prefetch_error_;  // a prefetched read that failed, rethrown by the step needing it
  int64_t until_ = INT64_MAX;          // the step this train() call stops at
  std::optional<data::Batch> bench_batch_;  // bench --in-memory: every step's batch (on device_), the loader stopped
  std::unique_ptr<AdamW> optim_;
  Generator drop_gen_;
  StepContext step_context_;  // the step tasks compute, and what they share within a micro-batch
  double backward_s_ = 0;  // time in backward (and the gradient reduction), for bench
  int64_t skipped_steps_ = 0;  // steps skipped for a non-finite loss or gradient (this run's process)
  int64_t step_ = 0;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // train.tensorboard
  std::vector<std::pair<std::string, std::string>> pictures_;  // the last evaluation's (tag, PNG path)
  Progress progress_;
};

}  // namespace loom
