#include "trainers/run.h"
#include <filesystem>
#include "core/autocast.h"
#include "data/bpe_tokenizer.h"
#include "trainers/checkpoint.h"

namespace loom {
namespace fs = std::filesystem;

// The recipe's tokenizer for a new run: the named file (tokenizer.path), or loom's BPE trained on the captions.
std::unique_ptr<data::TextTokenizer> make_tokenizer(const Recipe& r) {
  if (!r.tokenizer_path.empty()) return data::load_tokenizer(r.tokenizer_path, r.tokenizer_type);
  const data::Manifest corpus_src = r.tokenizer_rows ? *r.tokenizer_rows : data::Manifest::load(r.tokenizer_train_on);
  std::vector<std::string> corpus;
  for (const auto& e : corpus_src.rows) if (!e.text.empty()) corpus.push_back(e.text);
  LOOM_CHECK(!corpus.empty(), r.tokenizer_train_on, ": no text to train the tokenizer on");
  return data::train_bpe_tokenizer(corpus, r.vocab_size, r.needs_mask_token());
}

// The device a recipe trains on (train.device), checked against this build and machine; a failure
// names the recipe key through `fail`.
Device training_device(const Recipe& r, int local_rank, const std::function<void(const std::string&)>& fail) {
  if (r.device == "cpu") return Device::cpu();
#ifndef LOOM_WITH_CUDA
  fail("cuda, but this loom was built without CUDA (configure with the CUDA toolkit present, or LOOM_CUDA=ON)");
#endif
  const int count = cuda_device_count();
  if (count == 0) fail("cuda, but no GPU is visible to this process (nvidia-smi; CUDA_VISIBLE_DEVICES)");
  return Device::cuda(local_rank % count);
}

// train.precision: bf16 computes GEMMs and attention in bf16 under autocast (core/autocast.h).
std::optional<DType> autocast_of(const Recipe& r) {
  return r.precision == "bf16" ? std::optional<DType>(DType::bf16) : std::nullopt;
}

// kernels.attention and kernels.gemm: which CUDA kernels run bf16 attention and GEMMs (process-wide).
void use_recipe_kernels(const Recipe& r) {
  ops::set_attention_kernel(r.attention_kernel == "flash" ? ops::AttentionKernel::flash : ops::AttentionKernel::composed);
  ops::set_gemm_kernel(r.gemm_kernel == "loom" ? ops::GemmKernel::loom : ops::GemmKernel::cublas);
}

// The linear probe / k-NN of eval.probe on the recipe's patch tower (eval mode, restored after).
Metrics probe_model(MultimodalModel& model, const Recipe& r) {
  const bool was_training = model.is_training();
  model.eval();
  const std::string modality = default_patch_modality(r.model);
  const ViT& v = patch_tower(model, modality, "eval.probe");
  auto features_of = [&](const DataSpec& d, int64_t limit) {
    data::LoaderConfig lc = loader_config(d, r.seed, false);
    configure_input(v.input(), lc);
    lc.read_images = modality == "image";
    lc.read_audio = modality == "audio";
    return extract_features(vit_features(v, r.probe), d, lc, limit, modality);
  };
  FeatureSet train = features_of(*r.find_data(r.probe.train_data), r.probe.train_samples);
  FeatureSet test = features_of(*r.find_data("eval"), r.probe.test_samples);
  Metrics m = probe(train, test, r.probe, r.seed);
  model.train(was_training);
  return m;
}

Run Run::build(const Recipe& r, std::unique_ptr<data::TextTokenizer> tokenizer, const std::function<void(Module&)>& load_init,
               distributed::Communicator* comm) {
  Run run;
  run.tokenizer = std::move(tokenizer);
  // What the tokenizer fixes in the text towers: vocabulary, the padding id (BERT masks these keys)
  // and the end of text (a causal tower pools there).
  TowerContext ctx;
  ctx.vocab_size = r.vocab_size;
  ctx.eot_id = data::BpeTokenizer::eot_id;
  if (run.tokenizer) {
    ctx.vocab_size = run.tokenizer->vocab_size();
    ctx.pad_id = run.tokenizer->pad_token();
    ctx.eot_id = run.tokenizer->end_token();
  }
  for (const auto& [name, f] : r.frozen) {
    std::unique_ptr<data::TextTokenizer> tok;
    const fs::path tok_path = fs::path(f.checkpoint) / "tokenizer.json";
    if (f.recipe->needs_text() && fs::exists(tok_path)) tok = data::load_tokenizer(tok_path.string(), f.recipe->tokenizer_type);
    Run inner = Run::build(*f.recipe, std::move(tok));
    if (fs::is_directory(f.checkpoint)) {
      try {
        load_weights(*inner.model, InitFrom{f.checkpoint, {}, true});
      } catch (const Error& e) {
        throw Error(str_cat(f.key, ": ", e.what()));
      }
    }
    inner.model->freeze({"*"});
    inner.model->eval();
    run.frozen[name] = inner.model;
  }
  Generator init_gen(r.seed);
  run.model = r.model.build(init_gen, ctx);
  const bool after_tasks = r.init_from.format != "loom";
  if (load_init && !after_tasks) load_init(*run.model);
  for (const StageSpec& s : r.stages) {
    TaskEnv env{*run.model, run.tokenizer.get(), r.seed, s.name, comm, &run.frozen};
    run.tasks.push_back(s.task.build(env));
  }
  if (load_init && after_tasks) load_init(*run.model);
  return run;
}

Metrics evaluate_stage(Run& run, const Recipe& r, size_t stage, const std::string& run_dir, int64_t step,
                       std::vector<std::pair<std::string, std::string>>* pictures) {
  const StageSpec& s = r.stages[stage];
  EvalEnv env;
  env.data = s.eval_data.empty() ? nullptr : r.find_data(s.eval_data);
  env.tokenizer = run.tokenizer.get();
  env.run_dir = run_dir;
  env.step = step;
  env.max_samples = r.eval_max_samples;
  env.pictures = pictures;
  Metrics m = run.tasks[stage]->evaluate(env);
  if (r.has_probe)
    for (auto& [k, v] : probe_model(*run.model, r)) m[k] = v;
  return m;
}

Metrics evaluate_recipe(const Recipe& r, const std::string& checkpoint) {
  std::unique_ptr<data::TextTokenizer> tok;
  if (r.needs_text()) {
    if (!checkpoint.empty()) {
      tok = data::load_tokenizer((fs::path(checkpoint) / "tokenizer.json").string(), r.tokenizer_type);
    } else {
      tok = make_tokenizer(r);  // loom's BPE is trained as a run would train it (deterministic from its text)
    }
  }
  Run run = Run::build(r, std::move(tok));
  if (!checkpoint.empty()) load_weights(*run.model, InitFrom{checkpoint, {}, true});
  const Device dev = training_device(r, 0, [](const std::string& why) { throw Error("train.device: " + why); });
  run.model->to(dev);
  for (auto& [_, m] : run.frozen) m->to(dev);
  use_recipe_kernels(r);
  AutocastGuard autocast(autocast_of(r));
  return evaluate_stage(run, r, r.stages.size() - 1, "", 0);
}

void check_freeze_patterns(const Module& model, const Recipe& r, const Config& c) {
  const auto params = model.named_parameters();
  auto check = [&](const std::string& key, const std::string& p) {
    bool hit = false;
    for (const auto& [name, _] : params) hit = hit || glob_match(p, name);
    if (!hit)
      c.fail(key, str_cat("pattern '", p, "' matches no parameter (names look like ",
                          params.empty() ? std::string("-") : params.front().first, "; '*' matches any run of characters)"));
  };
  for (const StageSpec& s : r.stages) {
    for (const auto& [key, patterns] : {std::pair{".freeze", &s.freeze}, {".train_only", &s.train_only}})
      for (const std::string& p : *patterns) check(s.key + key, p);
    for (const ParamGroup& g : s.optim.groups)
      for (const std::string& p : g.params) check(g.key + ".params", p);
  }
}

}  // namespace loom
