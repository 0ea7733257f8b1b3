#include "losses/contrastive.h"
#include "core/autocast.h"

#include <vector>

namespace loom {

namespace {

[[noreturn]] void fail(const char* op, const std::string& what, std::initializer_list<std::pair<const char*, Tensor>> xs) {
  std::string s = str_cat(op, ": ", what, " (");
  bool first = true;
  for (const auto& [name, t] : xs) {
    s += str_cat(first ? "" : ", ", name, ": ", t.defined() ? t.describe() : std::string("undefined"));
    first = false;
  }
  throw OpError(s + ")");
}

bool is_index(const Tensor& t) { return t.dtype() == DType::i64 || t.dtype() == DType::i32; }

// Soft targets for same-label positives: Q[i, j] = [labels_all[j] == labels_local[i]] / count_i.
Tensor label_targets(const Tensor& labels_local, const Tensor& labels_all, DType dtype) {
  const int64_t n = labels_local.numel(), N = labels_all.numel();
  Tensor eq = ops::eq(labels_local.reshape({n, 1}), labels_all.reshape({1, N})).to(dtype);
  Tensor count = ops::sum(eq, {1}, true);
  if (ops::amax(ops::logical_not(ops::gt(count, 0.0)).to(DType::f32)).item<float>() > 0)
    fail("clip_loss", "a row's label does not occur among labels_all", {{"labels_local", labels_local}, {"labels_all", labels_all}});
  return ops::div(eq, count);
}

// Mean over rows of the cross-entropy of `logits` [n, N] against soft targets Q [n, N].
Tensor soft_cross_entropy(const Tensor& logits, const Tensor& q) {
  return ops::neg(ops::mean(ops::sum(ops::mul(ops::log_softmax(logits, 1), q), {1})));
}

}  // namespace

Tensor clip_loss(const Tensor& img_local, const Tensor& txt_local, const Tensor& img_all, const Tensor& txt_all,
                 int64_t offset, const Tensor& logit_scale, const Tensor& labels_local, const Tensor& labels_all,
                 const ContrastiveOptions& opt) {
  const char* op = "clip_loss";
  for (const auto& [name, t] : {std::pair<const char*, Tensor>{"img_local", img_local}, {"txt_local", txt_local},
                                {"img_all", img_all}, {"txt_all", txt_all}, {"logit_scale", logit_scale}})
    if (!t.defined()) fail(op, str_cat(name, " is undefined"), {});
  auto operands = {std::pair<const char*, Tensor>{"img_local", img_local}, {"txt_local", txt_local},
                   {"img_all", img_all}, {"txt_all", txt_all}};
  if (img_local.dim() != 2 || !(img_local.shape() == txt_local.shape()) || img_all.dim() != 2 ||
      !(img_all.shape() == txt_all.shape()) || img_local.size(1) != img_all.size(1))
    fail(op, "features must be img_local, txt_local [n, E] and img_all, txt_all [N, E]", operands);
  const int64_t n = img_local.size(0), N = img_all.size(0);
  if (offset < 0 || offset + n > N)
    fail(op, str_cat("offset ", offset, " + n ", n, " must lie within N ", N), operands);
  if (logit_scale.numel() != 1 || !is_floating(logit_scale.dtype()))
    fail(op, "logit_scale must be a floating scalar", {{"logit_scale", logit_scale}});
  if (opt.same_label_positives) {
    if (!labels_local.defined() || !labels_all.defined())
      fail(op, "same_label_positives needs labels_local [n] and labels_all [N]",
           {{"img_local", img_local}, {"img_all", img_all}, {"labels_local", labels_local}, {"labels_all", labels_all}});
    if (!is_index(labels_local) || !is_index(labels_all) || labels_local.dim() != 1 || labels_all.dim() != 1 ||
        labels_local.size(0) != n || labels_all.size(0) != N)
      fail(op, "labels_local must be integer [n] and labels_all integer [N]",
           {{"img_local", img_local}, {"img_all", img_all}, {"labels_local", labels_local}, {"labels_all", labels_all}});
  }

  // The similarities and the loss in f32 (f64 stays f64) whatever precision made the features: under
  // bf16 autocast the logits' 8-bit mantissa would tie near negatives (a scale of 100 turns a bf16
  // step of 2^-8 into 0.4 nats). Backward converts the gradient back to the features' dtype.
  AutocastGuard f32_loss(std::nullopt);
  const DType dt = img_local.dtype() == DType::f64 ? DType::f64 : DType::f32;
  auto as_dt = [dt](const Tensor& t) { return t.dtype() == dt ? t : t.to(dt); };
  Tensor ls = as_dt(logit_scale.reshape({}));
  Tensor scale = ops::exp(ops::clamp(ls, std::nullopt, opt.max_logit_scale));
  Tensor logits_img = ops::mul(ops::matmul(as_dt(img_local), as_dt(txt_all).transpose(0, 1)), scale);  // [n, N]
  Tensor logits_txt = ops::mul(ops::matmul(as_dt(txt_local), as_dt(img_all).transpose(0, 1)), scale);  // [n, N]
  Tensor li, lt;
  if (opt.same_label_positives) {
    Tensor q = label_targets(labels_local, labels_all, dt);
    li = soft_cross_entropy(logits_img, q);
    lt = soft_cross_entropy(logits_txt, q);
  } else {
    std::vector<int64_t> t(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) t[size_t(i)] = offset + i;
    Tensor targets = Tensor::from(t, {n}).to(img_local.device());
    li = ops::cross_entropy(logits_img, targets);
    lt = ops::cross_entropy(logits_txt, targets);
  }
  return ops::mul(ops::add(li, lt), 0.5);
}

Tensor clip_loss(const Tensor& img, const Tensor& txt, const Tensor& logit_scale, const Tensor& labels,
                 const ContrastiveOptions& opt) {
  return clip_loss(img, txt, img, txt, 0, logit_scale, labels, labels, opt);
}

Tensor triplet_loss(const Tensor& img, const Tensor& txt, double margin) {
  const char* op = "triplet_loss";
  if (!img.defined() || !txt.defined()) fail(op, "img and txt must be defined", {{"img", img}, {"txt", txt}});
  if (img.dim() != 2 || !(img.shape() == txt.shape()))
    fail(op, "img and txt must both be [n, E]", {{"img", img}, {"txt", txt}});
  const int64_t n = img.size(0);
  if (n < 2) fail(op, "needs at least 2 pairs (in-batch negatives)", {{"img", img}, {"txt", txt}});
  Tensor s = ops::matmul(img, txt.transpose(0, 1));                      // [n, n]
  Tensor pos = ops::sum(ops::mul(img, txt), {1});                        // s_ii, [n]
  Tensor idx = Tensor::arange(n, DType::i64, img.device());
  Tensor diag = ops::eq(idx.reshape({n, 1}), idx.reshape({1, n}));
  Tensor neg = ops::masked_fill(s, diag, -INFINITY);
  Tensor hard_txt = ops::amax(neg, {1});  // hardest caption for each image
  Tensor hard_img = ops::amax(neg, {0});  // hardest image for each caption
  Tensor li = ops::relu(ops::add(ops::sub(hard_txt, pos), margin));
  Tensor lt = ops::relu(ops::add(ops::sub(hard_img, pos), margin));
  return ops::add(ops::mean(li), ops::mean(lt));
}

}  // namespace loom
