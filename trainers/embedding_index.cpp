#include "trainers/embedding_index.h"
#include "trainers/tasks/itm.h"
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include "core/autograd.h"
#include "core/safetensors.h"
#include "trainers/checkpoint.h"
#include "trainers/eval/retrieval.h"

namespace loom {
namespace fs = std::filesystem;

namespace {
constexpr int64_t kBatch = 256;
}

Embedder::Embedder(const Recipe& r, const std::string& checkpoint) : recipe_(r), checkpoint_(checkpoint) {
  const std::string tok = (fs::path(checkpoint) / "tokenizer.json").string();
  if (r.needs_text()) {
    LOOM_CHECK(fs::exists(tok), "loom embed: ", checkpoint, " has no tokenizer.json (is it a checkpoint directory?)");
    run_ = Run::build(r, data::load_tokenizer(tok, r.tokenizer_type));
  } else {
    run_ = Run::build(r, nullptr);
  }
  load_weights(*run_.model, InitFrom{checkpoint, {}, true});
  run_.model->eval();
  towers_ = run_.tasks.back()->towers();
  LOOM_CHECK(towers_, "loom embed: the recipe's last stage is task ", r.stages.back().task.type,
             ", not a contrastive task (whose towers share an embedding space)");
}

const std::vector<std::string>& Embedder::kinds() const { return towers_->modalities; }

void Embedder::check_kind(const std::string& kind, const char* who) const {
  const auto& k = kinds();
  if (std::find(k.begin(), k.end(), kind) != k.end() && (kind != "text" || run_.tokenizer)) return;
  std::string have;
  for (const std::string& m : k) have += (have.empty() ? "" : ", ") + m;
  throw Error(str_cat(who, ": this model embeds ", have, ", not ", kind));
}

Tensor Embedder::embed_inputs(std::shared_ptr<const data::Manifest> m, const std::string& kind, std::vector<int64_t>* rows,
                              bool progress) const {
  return read_inputs(m, kind, rows, progress, [&](const Tensor& x) { return run_.model->embed(kind, x); });
}

Tensor Embedder::read_inputs(std::shared_ptr<const data::Manifest> m, const std::string& kind, std::vector<int64_t>* rows,
                             bool progress, const std::function<Tensor(const Tensor&)>& embed) const {
  // The evaluation data's transform / audio settings (the model saw inputs made this way).
  const DataSpec* spec = recipe_.find_data("eval") ? recipe_.find_data("eval") : recipe_.find_data("train");
  DataSpec d = *spec;
  d.rows = m;
  d.batch_size = std::min<int64_t>(kBatch, std::max<int64_t>(1, int64_t(m->rows.size())));
  data::LoaderConfig lc = loader_config(d, recipe_.seed, false);
  towers_->configure(lc, {kind});
  lc.read_images = kind == "image";
  lc.read_audio = kind == "audio";
  data::Loader loader(m, nullptr, lc);
  NoGradGuard ng;
  std::vector<Tensor> out;
  int64_t done = 0;
  while (auto b = loader.next()) {
    if (b->size() == 0) continue;
    out.push_back(embed((*b)[kind]));
    if (rows) rows->insert(rows->end(), b->indices.begin(), b->indices.end());
    done += b->size();
    if (progress) std::cerr << "\rloom embed: " << done << "/" << m->rows.size() << std::flush;
  }
  if (progress) std::cerr << "\n";
  if (loader.skipped() > 0) std::cerr << "loom embed: " << loader.skipped() << " unreadable rows skipped\n";
  LOOM_CHECK(!out.empty(), m->path, ": no row could be embedded");
  return ops::cat(out, 0);
}

namespace {
const std::string& file_of(const data::Example& e, const std::string& kind) { return kind == "audio" ? e.audio : e.image; }
}  // namespace

Embeddings Embedder::embed_manifest(const std::string& manifest, std::string kind, bool progress) const {
  auto m = std::make_shared<const data::Manifest>(data::Manifest::load(manifest));
  LOOM_CHECK(!m->rows.empty(), manifest, ": the manifest is empty");
  auto has = [&](const std::string& k) {
    for (const data::Example& e : m->rows)
      if (!(k == "text" ? e.text : file_of(e, k)).empty()) return true;
    return false;
  };
  if (kind.empty()) {  // the first of the model's other towers the manifest has, else text
    for (const std::string& k : kinds())
      if (k != "text" && has(k)) { kind = k; break; }
    if (kind.empty()) kind = "text";
  }
  check_kind(kind, "loom embed: --kind");
  Embeddings out;
  out.kind = kind;
  out.manifest = manifest;
  out.checkpoint = checkpoint_;
  out.recipe = recipe_.name;
  LOOM_CHECK(has(kind), manifest, ": no row has ", kind == "audio" ? "an " : "a ", kind);
  if (kind != "text") {
    out.vectors = embed_inputs(m, kind, &out.rows, progress);
    return out;
  }
  NoGradGuard ng;
  std::vector<Tensor> parts;
  std::vector<std::string> texts;
  auto flush = [&] {
    if (texts.empty()) return;
    parts.push_back(run_.model->embed("text", run_.tokenizer->encode_batch(texts, towers_->context())));
    texts.clear();
  };
  for (size_t i = 0; i < m->rows.size(); ++i) {
    if (m->rows[i].text.empty()) continue;
    texts.push_back(m->rows[i].text);
    out.rows.push_back(int64_t(i));
    if (int64_t(texts.size()) == kBatch) flush();
  }
  flush();
  out.vectors = ops::cat(parts, 0);
  return out;
}

Tensor Embedder::embed_query(const std::string& kind, const std::string& value) const {
  check_kind(kind, "loom retrieve");
  NoGradGuard ng;
  if (kind == "text") return run_.model->embed("text", run_.tokenizer->encode_batch({value}, towers_->context())).select(0, 0);
  LOOM_CHECK(fs::exists(value), "loom retrieve: ", value, ": file not found");
  auto m = std::make_shared<data::Manifest>();
  m->path = value;
  data::Example e;
  (kind == "audio" ? e.audio : e.image) = value;
  m->rows.push_back(e);
  return embed_inputs(m, kind, nullptr, false).select(0, 0);
}

std::vector<Hit> Embedder::rerank(const std::string& query_kind, const std::string& query, const std::string& kind,
                                  const data::Manifest& m, std::vector<Hit> hits) const {
  const char* who = "loom retrieve --rerank";
  LOOM_CHECK((query_kind == "text" && kind == "image") || (query_kind == "image" && kind == "text"), who,
             ": re-ranks image-text pairs, not a ", query_kind, " query against ", kind, " rows");
  check_kind(query_kind, who);
  check_kind(kind, who);
  if (hits.empty()) return hits;
  NoGradGuard ng;
  const int64_t n = int64_t(hits.size());
  auto one = std::make_shared<data::Manifest>();  // the candidates' rows (image queries: the query itself)
  one->path = query_kind == "image" ? query : m.path;
  std::vector<std::string> texts;
  for (const Hit& h : hits) {
    LOOM_CHECK(h.row >= 0 && h.row < int64_t(m.rows.size()), who, ": row ", h.row, " of the index is not in ", m.path,
               " (", m.rows.size(), " rows): the index was made from another manifest");
    const data::Example& x = m.rows[size_t(h.row)];
    if (kind == "text") {
      texts.push_back(x.text);
    } else {
      data::Example e;
      e.image = x.image;
      one->rows.push_back(e);
    }
  }
  if (query_kind == "image") {
    LOOM_CHECK(fs::exists(query), who, ": ", query, ": file not found");
    data::Example e;
    e.image = query;
    one->rows.push_back(e);
  } else {
    texts.assign(size_t(n), query);
  }
  const auto identity = [](const Tensor& x) { return x; };
  std::vector<int64_t> read;
  Tensor images = read_inputs(one, "image", &read, false, identity);
  LOOM_CHECK(int64_t(read.size()) == int64_t(one->rows.size()), who, ": ", one->rows.size() - read.size(),
             " of the images to re-rank could not be read (", m.path, ")");
  if (query_kind == "image") images = images.expand({n, images.size(1), images.size(2), images.size(3)}).contiguous();
  const Tensor tokens = run_.tokenizer->encode_batch(texts, towers_->context()).to(images.device());
  const std::vector<float> odds = itm_match_log_odds(*run_.model, images, tokens, who).to_vector<float>();
  const Tensor log_scale = run_.model->pair_logit_scale("image", "text");
  const double scale = log_scale.defined() ? std::exp(log_scale.item<double>()) : 1.0 / 0.07;
  for (int64_t i = 0; i < n; ++i) hits[size_t(i)].score = double(odds[size_t(i)]) + scale * hits[size_t(i)].score;
  std::stable_sort(hits.begin(), hits.end(), [](const Hit& a, const Hit& b) { return a.score > b.score; });
  return hits;
}

void save_embeddings(const std::string& path, const Embeddings& e) {
  save_safetensors(path, {{"embeddings", e.vectors.contiguous()}, {"rows", Tensor::from(e.rows, {int64_t(e.rows.size())})}},
                   {{"kind", e.kind}, {"manifest", e.manifest}, {"recipe", e.recipe}, {"checkpoint", e.checkpoint}});
}

Embeddings load_embeddings(const std::string& path) {
  SafetensorsFile f = load_safetensors(path);
  LOOM_CHECK(f.tensors.count("embeddings") && f.tensors.count("rows"), path,
             ": not an embeddings file (loom embed writes 'embeddings' and 'rows')");
  Embeddings e;
  e.vectors = f.tensors.at("embeddings").to(DType::f32);
  const Tensor rows = f.tensors.at("rows");
  LOOM_CHECK(e.vectors.dim() == 2 && rows.dim() == 1 && rows.dtype() == DType::i64 && rows.size(0) == e.vectors.size(0),
             path, ": 'embeddings' must be [N, E] and 'rows' i64 [N], got ", e.vectors.describe(), " and ", rows.describe());
  e.rows = rows.to_vector<int64_t>();
  auto meta = [&](const char* k) { return f.metadata.count(k) ? f.metadata.at(k) : std::string(); };
  e.kind = meta("kind"), e.manifest = meta("manifest"), e.recipe = meta("recipe"), e.checkpoint = meta("checkpoint");
  return e;
}

std::vector<Hit> top_k(const Embeddings& e, const Tensor& query, int64_t k) {
  LOOM_CHECK(query.dim() == 1 && query.size(0) == e.vectors.size(1), "loom retrieve: the query has ", query.describe(),
             " and the index ", e.vectors.size(1), "-d rows (another model?)");
  const std::vector<float> s = ops::matmul(e.vectors, query.reshape({query.size(0), 1})).contiguous().to_vector<float>();
  std::vector<int64_t> idx(s.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = int64_t(i);
  const int64_t n = std::min<int64_t>(k, int64_t(idx.size()));
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int64_t a, int64_t b) {
    return s[size_t(a)] != s[size_t(b)] ? s[size_t(a)] > s[size_t(b)] : a < b;
  });
  std::vector<Hit> out;
  for (int64_t i = 0; i < n; ++i) out.push_back({e.rows[size_t(idx[size_t(i)])], double(s[size_t(idx[size_t(i)])])});
  return out;
}

}  // namespace loom
