#include "core/autocast.h"
#include <vector>

namespace loom {
namespace {

thread_local std::optional<DType> t_autocast;

int width_rank(DType t) { return t == DType::f64 ? 3 : t == DType::f32 ? 2 : 1; }

// Every floating operand cast to the widest floating dtype among them.
void promote_all(const std::vector<Tensor*>& operands) {
  const Tensor* widest = nullptr;
  for (Tensor* t : operands)
    if (t->defined() && is_floating(t->dtype()) && (!widest || width_rank(t->dtype()) > width_rank(widest->dtype())))
      widest = t;
  if (!widest) return;
  const DType to = widest->dtype();
  for (Tensor* t : operands)
    if (t->defined() && is_floating(t->dtype()) && t->dtype() != to) *t = t->to(to);
}

}  // namespace

AutocastGuard::AutocastGuard(std::optional<DType> dtype) : previous_(t_autocast) {
  if (dtype && *dtype != DType::bf16 && *dtype != DType::f16)
    throw Error(str_cat("autocast: the compute dtype must be bf16 or f16, not ", dtype_name(*dtype)));
  t_autocast = dtype;
}

AutocastGuard::~AutocastGuard() { t_autocast = previous_; }

std::optional<DType> autocast_dtype() { return t_autocast; }

namespace ops::detail {

Tensor autocast_lower(const Tensor& t) {
  if (!t_autocast || !t.defined() || t.dtype() != DType::f32) return t;
  return t.to(*t_autocast);
}

Tensor autocast_f32(const Tensor& t) {
  if (!t_autocast || !t.defined() || (t.dtype() != DType::bf16 && t.dtype() != DType::f16)) return t;
  return t.to(DType::f32);
}

void autocast_promote(std::initializer_list<Tensor*> operands) {
  if (t_autocast) promote_all(std::vector<Tensor*>(operands));
}

void autocast_promote(std::vector<Tensor>& operands) {
  if (!t_autocast) return;
  std::vector<Tensor*> ptrs;
  for (Tensor& t : operands) ptrs.push_back(&t);
  promote_all(ptrs);
}

}  // namespace ops::detail
}  // namespace loom
