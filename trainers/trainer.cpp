#include "trainers/trainer.h"
#include <omp.h>
#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>
#include "core/safetensors.h"

namespace loom {
namespace fs = std::filesystem;
using json = nlohmann::json;

// ---------------------------------------------------------------- metrics
MetricsLog::MetricsLog(const std::string& path) {
  f_ = std::fopen(path.c_str(), "a");
  LOOM_CHECK(f_, "cannot open ", path, " for appending");
}
MetricsLog::~MetricsLog() { if (f_) std::fclose(f_); }

void MetricsLog::write(int64_t step, const Metrics& m) {
  json j;
  j["step"] = step;
  for (const auto& [k, v] : m) j[k] = std::isfinite(v) ? json(v) : json(nullptr);
  std::fprintf(f_, "%s\n", j.dump().c_str());
  std::fflush(f_);
}

namespace {

// fsync a file or directory by path (a directory's entry list is what makes a rename durable).
void sync_path(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY);
  LOOM_CHECK(fd >= 0, "cannot open ", p.string(), " to sync it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  LOOM_CHECK(rc == 0, "fsync of ", p.string(), " failed: ", std::strerror(err));
}

int64_t step_of_dir(const fs::path& p) {  // "step_00000600" -> 600, anything else -> -1
  const std::string n = p.filename().string();
  if (n.rfind("step_", 0) != 0 || n.size() == 5 || n.find_first_not_of("0123456789", 5) != std::string::npos) return -1;
  return std::stoll(n.substr(5));
}

// The recipe with the keys that may change on --resume removed (length, logging, evaluation, threads).
std::string resume_relevant(const std::string& yaml) {
  YAML::Node n = YAML::Load(yaml);
  if (n["train"]) for (const char* k : {"steps", "epochs", "checkpoint_every", "keep", "log_every", "threads"}) n["train"].remove(k);
  n.remove("eval");
  if (n["data"] && n["data"]["eval"]) n["data"].remove("eval");
  if (n["data"] && n["data"]["train"]) n["data"]["train"].remove("workers");
  YAML::Emitter e;
  e << n;
  return e.c_str();
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  LOOM_CHECK(f, path, ": cannot open");
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  LOOM_CHECK(!out.empty(), path, ": no labels in file");
  return out;
}

std::string fill_template(const std::string& tmpl, const std::string& name) {
  std::string s = tmpl;
  const size_t at = s.find("{}");
  return s.replace(at, 2, name);
}

data::LoaderConfig loader_config(const DataSpec& d, const Recipe& r, bool train) {
  data::LoaderConfig c;
  c.batch_size = d.batch_size;
  c.workers = d.workers;
  c.shuffle = train;
  c.drop_last = train;
  c.repeat = train;
  c.seed = r.seed;
  c.on_error = d.on_error;
  c.transform = d.transform;
  c.channels = r.model.vision.channels;
  c.context = r.model.text.context;
  return c;
}

// Recall@K of rows against columns. Column j is a positive for row i when their captions are the same
// text (group[i] == group[j]): with duplicate captions (ten class prompts over a test set) any copy is a
// correct answer, as with COCO's five captions per image. rank = negatives scoring at least as high as the best
// positive (ties count against it, so a collapsed model with equal scores everywhere scores 0, not 1).
Metrics recall_at(const Tensor& sim, const std::vector<int64_t>& group, const std::string& prefix) {
  const int64_t n = sim.size(0);
  std::vector<float> s = sim.contiguous().to_vector<float>();
  int64_t hit[3] = {0, 0, 0};
  const int64_t ks[3] = {1, 5, 10};
  for (int64_t i = 0; i < n; ++i) {
    const float* row = s.data() + i * n;
    float best = -INFINITY;
    for (int64_t j = 0; j < n; ++j) if (group[size_t(j)] == group[size_t(i)]) best = std::max(best, row[j]);
    int64_t rank = 0;
    for (int64_t j = 0; j < n; ++j) rank += group[size_t(j)] != group[size_t(i)] && row[j] >= best;
    for (int k = 0; k < 3; ++k) hit[k] += rank < ks[k];
  }
  Metrics m;
  for (int k = 0; k < 3; ++k) m[prefix + std::to_string(ks[k])] = double(hit[k]) / double(std::max<int64_t>(1, n));
  return m;
}

}  // namespace

// ---------------------------------------------------------------- evaluation
Metrics evaluate_clip(Clip& model, const data::BpeTokenizer& tok, const Recipe& r) {
  Metrics out;
  if (!r.has_eval_data) return out;
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  auto manifest = std::make_shared<const data::Manifest>(data::Manifest::load(r.eval_data.manifest));
  data::Loader loader(manifest, &tok, loader_config(r.eval_data, r, false));
  std::vector<Tensor> img_feats, txt_feats, labels;
  std::vector<int64_t> caption_group;  // same caption text -> same group
  std::map<std::string, int64_t> caption_ids;
  int64_t seen = 0, with_text = 0;
  const int64_t limit = r.eval_max_samples > 0 ? r.eval_max_samples : INT64_MAX;
  while (seen < limit) {
    auto b = loader.next();
    if (!b) break;
    Tensor images = b->images, tokens = b->tokens, lab = b->labels;
    const int64_t take = std::min<int64_t>(images.size(0), limit - seen);
    if (take < images.size(0)) {
      images = images.narrow(0, 0, take);
      tokens = tokens.narrow(0, 0, take);
      lab = lab.narrow(0, 0, take);
    }
    img_feats.push_back(model.encode_image(images));
    labels.push_back(lab);
    if (r.retrieval && with_text < r.retrieval_samples) {
      txt_feats.push_back(model.encode_text(tokens, data::BpeTokenizer::eot_id));
      for (int64_t i = 0; i < take; ++i)
        caption_group.push_back(caption_ids.emplace(b->texts[size_t(i)], int64_t(caption_ids.size())).first->second);
      with_text += take;
    }
    seen += take;
  }
  LOOM_CHECK(seen > 0, r.eval_data.manifest, ": no evaluation examples could be read");
  Tensor img = ops::cat(img_feats, 0), lab = ops::cat(labels, 0);

  if (r.zeroshot) {
    const auto classes = read_lines(r.zeroshot_labels);
    std::vector<Tensor> cls;
    for (const auto& name : classes) {
      std::vector<std::string> prompts;
      for (const auto& t : r.zeroshot_templates) prompts.push_back(fill_template(t, name));
      Tensor f = model.encode_text(tok.encode_batch(prompts, r.model.text.context), data::BpeTokenizer::eot_id);
      cls.push_back(ops::l2_normalize(ops::mean(f, {0}), -1));
    }
    Tensor weights = ops::stack(cls, 0);                        // [C, E]
    Tensor logits = ops::matmul(img, weights.transpose(0, 1));  // [N, C]
    const int64_t k = std::min<int64_t>(5, int64_t(classes.size()));
    Tensor top = ops::topk(logits, k, -1).indices;
    auto t = top.to_vector<int64_t>();
    auto y = lab.to_vector<int64_t>();
    int64_t top1 = 0, top5 = 0, counted = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      if (y[i] < 0) continue;
      ++counted;
      top1 += t[i * size_t(k)] == y[i];
      for (int64_t j = 0; j < k; ++j) top5 += t[i * size_t(k) + size_t(j)] == y[i];
    }
    LOOM_CHECK(counted > 0, r.eval_data.manifest, ": zero-shot evaluation needs labels, and no example has one");
    out["eval/zeroshot_top1"] = double(top1) / double(counted);
    out["eval/zeroshot_top5"] = double(top5) / double(counted);
  }
  if (r.retrieval && !txt_feats.empty()) {
    Tensor txt = ops::cat(txt_feats, 0);
    const int64_t n = std::min<int64_t>(txt.size(0), r.retrieval_samples);
    Tensor sim = ops::matmul(img.narrow(0, 0, n), txt.narrow(0, 0, n).transpose(0, 1));
    for (auto& [k, v] : recall_at(sim, caption_group, "eval/i2t_r")) out[k] = v;
    for (auto& [k, v] : recall_at(sim.transpose(0, 1), caption_group, "eval/t2i_r")) out[k] = v;
  }
  out["eval/samples"] = double(seen);
  model.train(was_training);
  return out;
}

// ---------------------------------------------------------------- trainer
Trainer::Trainer(Recipe recipe, const Config& resolved, std::string run_dir, bool resume)
    : recipe_(std::move(recipe)), run_dir_(std::move(run_dir)), resolved_yaml_(resolved.dump()), drop_gen_(recipe_.seed + 1) {
  if (recipe_.threads > 0) omp_set_num_threads(recipe_.threads);
  const fs::path ckdir = fs::path(run_dir_) / "checkpoints";
  if (resume) {
    LOOM_CHECK(fs::exists(ckdir / "latest"), "--resume ", run_dir_, ": no checkpoints/latest in that run directory");
  } else if (fs::exists(ckdir) && !fs::is_empty(ckdir)) {
    throw Error(str_cat(run_dir_, " already holds a run with checkpoints; pass --resume ", run_dir_,
                        " to continue it, or choose another run directory"));
  }
  fs::create_directories(ckdir);
  if (!resume) {  // a resumed run keeps the recipe it started with (restore() checks the new one matches)
    std::ofstream f(fs::path(run_dir_) / "recipe.yaml");
    f << "# resolved recipe (file + overrides) of this run\n" << resolved_yaml_ << "\n";
    f.close();
    LOOM_CHECK(f, "writing ", (fs::path(run_dir_) / "recipe.yaml").string(), " failed");
  }

  train_manifest_ = std::make_shared<const data::Manifest>(data::Manifest::load(recipe_.train_data.manifest));
  LOOM_CHECK(!train_manifest_->rows.empty(), recipe_.train_data.manifest, ": the training manifest is empty");
  const fs::path tok_path = fs::path(run_dir_) / "tokenizer.json";
  if (resume) {
    tokenizer_ = std::make_unique<data::BpeTokenizer>(data::BpeTokenizer::load(tok_path.string()));
  } else {
    const data::Manifest corpus_src = recipe_.tokenizer_train_on == recipe_.train_data.manifest
                                          ? *train_manifest_ : data::Manifest::load(recipe_.tokenizer_train_on);
    std::vector<std::string> corpus;
    for (const auto& e : corpus_src.rows) if (!e.text.empty()) corpus.push_back(e.text);
    LOOM_CHECK(!corpus.empty(), recipe_.tokenizer_train_on, ": no text to train the tokenizer on");
    tokenizer_ = std::make_unique<data::BpeTokenizer>(data::BpeTokenizer::train(corpus, recipe_.vocab_size));
    tokenizer_->save(tok_path.string());
  }
  recipe_.model.text.vocab_size = tokenizer_->vocab_size();

  Generator init_gen(recipe_.seed);
  model_ = std::make_unique<Clip>(recipe_.model, init_gen);
  if (!resume && !recipe_.init_from.path.empty()) load_weights(*model_, recipe_.init_from);

  std::vector<std::pair<std::string, Tensor>> trainable;
  for (auto& [name, p] : model_->named_parameters())
    if (p.requires_grad()) trainable.emplace_back(name, p);
  optim_ = std::make_unique<AdamW>(trainable, recipe_.optim);

  data::LoaderPosition start;
  if (resume) start = restore(fs::canonical(ckdir / "latest").string());
  loader_ = std::make_unique<data::Loader>(train_manifest_, tokenizer_.get(), loader_config(recipe_.train_data, recipe_, true), start);
  if (recipe_.epochs > 0) recipe_.steps = std::max<int64_t>(1, recipe_.epochs * loader_->batches_per_epoch() / recipe_.grad_accum);
  metrics_ = std::make_unique<MetricsLog>((fs::path(run_dir_) / "metrics.jsonl").string());
}

LoadReport Trainer::load_weights(Module& model, const InitFrom& from) {
  const fs::path p = fs::is_directory(from.path) ? fs::path(from.path) / "model.safetensors" : fs::path(from.path);
  SafetensorsFile file = load_safetensors(p.string());
  TensorMap state;
  std::vector<std::pair<std::string, std::string>> rules(from.remap.begin(), from.remap.end());
  std::sort(rules.begin(), rules.end(), [](auto& a, auto& b) { return a.first.size() > b.first.size(); });
  for (auto& [key, t] : file.tensors) {
    std::string k = key;
    for (auto& [old_prefix, new_prefix] : rules)
      if (k.rfind(old_prefix, 0) == 0) { k = new_prefix + k.substr(old_prefix.size()); break; }
    state[k] = t;
  }
  LoadReport rep = model.load_state_dict(state, from.strict);
  std::cerr << "loom: loaded " << state.size() - rep.unexpected.size() << " tensors from " << p.string() << "\n";
  for (auto& k : rep.missing) std::cerr << "loom:   missing (kept its initial value): " << k << "\n";
  for (auto& k : rep.unexpected) std::cerr << "loom:   unexpected (ignored): " << k << "\n";
  return rep;
}

std::string Trainer::checkpoint_dir(int64_t step) const {
  char name[32];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
  return (fs::path(run_dir_) / "checkpoints" / name).string();
}

void Trainer::save_checkpoint() {
  const fs::path final_dir = checkpoint_dir(step_);
  const fs::path tmp = final_dir.parent_path() / (".tmp-" + final_dir.filename().string());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  save_safetensors((tmp / "model.safetensors").string(), model_->state_dict(), {{"format", "pt"}, {"step", std::to_string(step_)}});
  save_safetensors((tmp / "optimizer.safetensors").string(), optim_->state_dict(), {{"step", std::to_string(step_)}});
  tokenizer_->save((tmp / "tokenizer.json").string());
  const auto pos = loader_->position();
  json st = {{"step", step_},
             {"optimizer_steps", optim_->steps()},
             {"seed", recipe_.seed},
             {"drop_path_rng", {{"seed", drop_gen_.seed()}, {"offset", drop_gen_.offset()}}},
             {"loader", {{"epoch", pos.epoch}, {"batch", pos.batch}}},
             {"recipe", resolved_yaml_}};
  {
    std::ofstream f(tmp / "trainer.json");
    f << st.dump(2) << "\n";
    f.close();
    LOOM_CHECK(f, "writing ", (tmp / "trainer.json").string(), " failed");
  }
  // Every file and the directory reach the disk before the rename makes the checkpoint visible, and
  // the rename reaches the disk before `latest` points at it.
  for (auto& e : fs::directory_iterator(tmp)) sync_path(e.path());
  sync_path(tmp);
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);  // the checkpoint appears whole or not at all
  sync_path(final_dir.parent_path());
  const fs::path link = final_dir.parent_path() / "latest", link_tmp = final_dir.parent_path() / ".latest.tmp";
  fs::remove(link_tmp);
  fs::create_directory_symlink(final_dir.filename(), link_tmp);
  fs::rename(link_tmp, link);
  sync_path(final_dir.parent_path());
  prune_checkpoints();
}

void Trainer::prune_checkpoints() {
  if (recipe_.keep <= 0) return;
  const fs::path dir = fs::path(run_dir_) / "checkpoints";
  std::error_code ec;
  const fs::path latest = fs::read_symlink(dir / "latest", ec).filename();
  std::vector<std::pair<int64_t, fs::path>> steps;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && !e.is_symlink() && step_of_dir(e.path()) >= 0) steps.emplace_back(step_of_dir(e.path()), e.path());
  std::sort(steps.begin(), steps.end());  // by step number, not by name
  for (size_t i = 0; i + size_t(recipe_.keep) < steps.size(); ++i)
    if (steps[i].second.filename() != latest) fs::remove_all(steps[i].second);
}

data::LoaderPosition Trainer::restore(const std::string& dir) {
  const std::string state_path = (fs::path(dir) / "trainer.json").string();
  std::ifstream f(state_path);
  LOOM_CHECK(f, state_path, ": cannot open");
  int64_t optimizer_steps = 0;
  data::LoaderPosition pos;
  std::string saved_recipe;
  try {
    json st = json::parse(f);
    step_ = st.at("step").get<int64_t>();
    optimizer_steps = st.at("optimizer_steps").get<int64_t>();
    drop_gen_.set_state(st.at("drop_path_rng").at("seed").get<uint64_t>(), st.at("drop_path_rng").at("offset").get<uint64_t>());
    pos = {st.at("loader").at("epoch").get<int64_t>(), st.at("loader").at("batch").get<int64_t>()};
    saved_recipe = st.at("recipe").get<std::string>();
  } catch (const std::exception& e) {
    throw Error(str_cat(state_path, ": ", e.what()));
  }
  if (resume_relevant(saved_recipe) != resume_relevant(resolved_yaml_))
    throw Error(str_cat("--resume ", run_dir_, ": the recipe differs from the one this run was trained with (saved in ",
                        state_path, "); only train.steps/epochs, logging, checkpointing, threads, workers and eval may "
                        "change, or the run would not continue as it was"));
  model_->load_state_dict(load_safetensors((fs::path(dir) / "model.safetensors").string()).tensors, true);
  const std::string opt_path = (fs::path(dir) / "optimizer.safetensors").string();
  optim_->load_state_dict(load_safetensors(opt_path).tensors, optimizer_steps, opt_path);

  // Steps after this checkpoint were lost with the interruption: drop their metrics and later checkpoints.
  const fs::path metrics = fs::path(run_dir_) / "metrics.jsonl";
  if (fs::exists(metrics)) {
    std::ifstream in(metrics);
    std::string kept, line;
    while (std::getline(in, line)) {
      try {
        if (json::parse(line).at("step").get<int64_t>() <= step_) kept += line + "\n";
      } catch (const std::exception&) {  // a torn last line from the crash
      }
    }
    in.close();
    std::ofstream out(metrics, std::ios::trunc);
    out << kept;
  }
  for (auto& e : fs::directory_iterator(fs::path(run_dir_) / "checkpoints"))
    if (e.is_directory() && !e.is_symlink() && step_of_dir(e.path()) > step_) fs::remove_all(e.path());
  std::cerr << "loom: resumed " << dir << " at step " << step_ << "\n";
  return pos;
}

double Trainer::train_step(double lr) {
  optim_->zero_grad();
  double total = 0;
  for (int64_t a = 0; a < recipe_.grad_accum; ++a) {
    data::Batch b = *loader_->next();
    // on_error: skip can shrink a batch; one with fewer than two pairs has no negatives to learn from.
    for (int tries = 0; b.images.dim() == 0 || b.images.size(0) < 2; ++tries) {
      LOOM_CHECK(tries < 100, recipe_.train_data.manifest, ": 100 batches in a row had fewer than two readable examples");
      b = *loader_->next();
    }
    if (recipe_.contrastive.same_label_positives)
      for (int64_t y : b.labels.to_vector<int64_t>())
        LOOM_CHECK(y >= 0, recipe_.train_data.manifest,
                   ": task.same_label_positives needs a label on every training example, and a row has none");
    Tensor img = model_->encode_image(b.images, &drop_gen_);
    Tensor txt = model_->encode_text(b.tokens, data::BpeTokenizer::eot_id);
    Tensor loss = recipe_.loss == "triplet"
                      ? triplet_loss(img, txt, recipe_.triplet_margin)
                      : clip_loss(img, txt, model_->logit_scale,
                                  recipe_.contrastive.same_label_positives ? b.labels : Tensor(), recipe_.contrastive);
    const double v = loss.item<double>();
    LOOM_CHECK(std::isfinite(v), "step ", step_, ": the loss is ", v, "; stopping before it spoils the weights ",
               "(lower optim.lr, or set train.clip_grad_norm)");
    total += v;
    (recipe_.grad_accum > 1 ? ops::mul(loss, 1.0 / double(recipe_.grad_accum)) : loss).backward();
  }
  if (recipe_.clip_grad_norm > 0) clip_grad_norm(model_->parameters(), recipe_.clip_grad_norm);
  optim_->step(lr);
  {  // open_clip clamps the learnable log-scale to [0, log 100] after each step
    NoGradGuard ng;
    float* s = model_->logit_scale.data_ptr<float>();
    *s = std::clamp(*s, 0.0f, float(recipe_.contrastive.max_logit_scale));
  }
  return total / double(recipe_.grad_accum);
}

namespace {
std::string hms(double seconds) {
  const int64_t s = int64_t(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return buf;
}
}  // namespace

void Trainer::train(int64_t stop_at) {
  using clock = std::chrono::steady_clock;
  const bool tty = isatty(fileno(stderr));
  const int64_t total = recipe_.steps;
  const int64_t samples_per_step = recipe_.train_data.batch_size * recipe_.grad_accum;
  std::cerr << "loom: training " << recipe_.name << " for " << total << " steps, " << model_->parameter_count()
            << " parameters, " << omp_get_max_threads() << " threads, run directory " << run_dir_ << "\n";
  auto t0 = clock::now(), window = t0;
  int64_t window_steps = 0, skipped_reported = 0;
  double loss_sum = 0;
  const int64_t first = step_;
  const int64_t until = stop_at >= 0 ? std::min(stop_at, total) : total;
  while (step_ < until) {
    const double lr = scheduled_lr(recipe_.schedule, recipe_.optim.lr, step_, total);
    loss_sum += train_step(lr);
    ++step_;
    ++window_steps;
    const bool last = step_ == until;
    if (step_ % std::max<int64_t>(1, recipe_.log_every) == 0 || last) {
      auto now = clock::now();
      const double secs = std::chrono::duration<double>(now - window).count();
      const double sps = double(window_steps * samples_per_step) / std::max(secs, 1e-9);
      const double elapsed = std::chrono::duration<double>(now - t0).count();
      const double eta = elapsed / double(step_ - first) * double(total - step_);
      Metrics m{{"train/loss", loss_sum / double(window_steps)}, {"train/lr", lr}, {"train/samples_per_s", sps},
                {"train/logit_scale", double(std::exp(model_->logit_scale.item<float>()))}};
      if (loader_->skipped() > skipped_reported) {
        m["data/skipped"] = double(loader_->skipped());
        skipped_reported = loader_->skipped();
      }
      metrics_->write(step_, m);
      char line[256];
      std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f  lr %.2e  %.1f samples/s  ETA %s",
                    static_cast<long long>(step_), static_cast<long long>(total), m["train/loss"], lr, sps, hms(eta).c_str());
      if (tty) {
        const int width = 24, filled = int(double(width) * double(step_) / double(total));
        std::cerr << "\r[" << std::string(size_t(filled), '#') << std::string(size_t(width - filled), ' ') << "] " << line
                  << std::flush;
        if (last) std::cerr << "\n";
      } else {
        std::cerr << line << "\n";
      }
      window = now;
      window_steps = 0;
      loss_sum = 0;
    }
    const bool do_eval = recipe_.eval_every > 0 && (step_ % recipe_.eval_every == 0 || step_ == total);
    if (do_eval && (recipe_.zeroshot || recipe_.retrieval)) {
      Metrics m = evaluate();
      metrics_->write(step_, m);
      if (tty) std::cerr << "\n";
      for (auto& [k, v] : m) std::cerr << "  " << k << " = " << v << "\n";
    }
    if ((recipe_.checkpoint_every > 0 && step_ % recipe_.checkpoint_every == 0) || last) save_checkpoint();
  }
  if (loader_->skipped() > 0) std::cerr << "loom: skipped " << loader_->skipped() << " unreadable examples (see messages above)\n";
}

double Trainer::bench(int64_t steps, int64_t warmup) {
  using clock = std::chrono::steady_clock;
  for (int64_t i = 0; i < warmup; ++i) train_step(recipe_.optim.lr);
  auto t0 = clock::now();
  for (int64_t i = 0; i < steps; ++i) train_step(recipe_.optim.lr);
  const double secs = std::chrono::duration<double>(clock::now() - t0).count();
  return double(steps * recipe_.train_data.batch_size * recipe_.grad_accum) / secs;
}

}  // namespace loom
