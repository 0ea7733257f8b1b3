// A recipe, read strictly from YAML (trainers/config.h): the model, the data sections, and the stages
// (each a task over the one model, with its data, length, optimizer, schedule and freeze patterns).
// A recipe without `stages:` is one implicit stage made of its top-level task, optim, schedule and
// train.steps. Everything is validated here, before any work (see ../recipes/README.md).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>
#include "trainers/config.h"
#include "trainers/eval/probe.h"
#include "trainers/models.h"
#include "trainers/optimizer.h"
#include "trainers/tasks/task.h"

namespace loom {

struct InitFrom {
  std::string path;                            // a checkpoint directory or a .safetensors file
  std::map<std::string, std::string> remap;    // key prefix -> new prefix, applied in order of length
  bool strict = true;
  // loom: loom's own names; hf-bert / hf-clip: a Hugging Face BertModel / CLIPModel directory
  // (config.json + model.safetensors), mapped onto loom's modules (trainers/pretrained.h).
  std::string format = "loom";
};

// frozen.NAME: a model trained by another loom run, built from that run's recipe and loaded from its
// checkpoint (a teacher, a visual tokenizer); tasks name it. ModelSpec::frozen holds what tasks check.
struct FrozenRecipe {
  std::string name, key;
  std::string checkpoint, recipe_path;
  std::shared_ptr<const struct Recipe> recipe;
};

struct StageSpec {
  std::string name;
  std::string key;  // where it is in the recipe, for errors: "stages.1" (or "task" for the implicit stage)
  TaskSpec task;
  std::string data = "train", eval_data;  // sections of data: (data: the first source); eval_data empty: none
  // The sections a step draws from: `data: NAME` is one; `data: {image_text: 0.5, image_audio: 0.5}`
  // several, each step's batch from one of them, chosen with these weights from (seed, stage, step).
  struct Source {
    std::string name;
    double weight = 1.0;
  };
  std::vector<Source> sources;
  int64_t steps = 0, epochs = 0;          // exactly one is set; epochs become steps once the data is known
  AdamWConfig optim;
  ScheduleConfig schedule;
  // Applied at the start of the stage, after every parameter is made trainable: train_only (when
  // given) leaves only the matching parameters trainable, then freeze fixes the matching ones.
  std::vector<std::string> freeze, train_only;
};

struct Recipe {
  std::string name;
  uint64_t seed = 0;
  ModelSpec model;
  int64_t vocab_size = 512;
  // bpe: loom's own, trained on tokenizer_train_on (a manifest; empty when no task needs text) at the
  // start of a run, or an earlier run's file at tokenizer_path; wordpiece / clip_bpe: a Hugging Face
  // tokenizer.json at tokenizer_path.
  std::string tokenizer_type = "bpe", tokenizer_path;
  // `loom train --check` of a recipe whose tokenizer file is not on this machine builds the model
  // with this many token embeddings instead of the file's count, and says so.
  static constexpr int64_t stand_in_vocab_size = 1000;
  std::string tokenizer_train_on;
  std::shared_ptr<const data::Manifest> tokenizer_rows;  // when set (a data section's rows), trained on these instead

  std::map<std::string, DataSpec> data;
  std::vector<StageSpec> stages;
  bool explicit_stages = false;  // the recipe has stages: (metrics lines are tagged with the stage)
  InitFrom init_from;
  std::map<std::string, FrozenRecipe> frozen;

  int64_t grad_accum = 1, checkpoint_every = 0, keep = 2, log_every = 10;
  // train.grad_cache (GradCache, open_clip's accum_freq): with grad_accum > 1 the loss contrasts the
  // whole accumulated batch: features of every micro-batch first, without graphs, then the loss over
  // all of them, then each micro-batch re-encoded with its graph and given its slice of the gradient.
  bool grad_cache = false;
  bool tensorboard = true;  // TensorBoard event files in <run>/tensorboard beside metrics.jsonl
  double clip_grad_norm = 0.0;
  std::string device = "cpu", precision = "fp32";
  std::string attention_kernel = "composed";  // kernels.attention: composed | flash
  std::string gemm_kernel = "cublas";         // kernels.gemm: cublas | loom
  int threads = 0;  // 0: OpenMP's default
  int64_t bucket_bytes = 25 << 20;  // data parallelism: gradients all-reduced in buckets of about this size
  bool overlap_comm = true;  // each bucket's all-reduce started as soon as backward has finished it (false: all after backward)
  std::string on_nonfinite = "stop";  // a NaN/inf loss or gradient: stop (naming it) | skip_step (counted)
  bool detect_anomaly = false;        // check every op's output and gradient, naming the first non-finite

  int64_t eval_every = 0, eval_max_samples = 0;
  bool has_probe = false;
  ProbeOptions probe;

  bool needs_text() const;
  bool needs_mask_token() const;  // a task masks tokens: loom's BPE is trained with "<mask>"
  const DataSpec* find_data(const std::string& name) const;

  // Reads and validates everything (types, choices, files, shapes, batch keys against the data) and
  // rejects unknown keys.
  static Recipe from(const Config& c);
};

}  // namespace loom
