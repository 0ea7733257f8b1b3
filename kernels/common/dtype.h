// Element types. DType lives in the lowest layer because kernels dispatch on it;
// core re-exports it as loom::DType.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

#if defined(__CUDACC__)
#define LOOM_HD __host__ __device__
#else
#define LOOM_HD
#endif

namespace loom::kernels {

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, u8, boolean };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64: case DType::i64: return 8;
    case DType::f32: case DType::i32: return 4;
    case DType::bf16: case DType::f16: return 2;
    case DType::u8: case DType::boolean: return 1;
  }
  return 0;
}
constexpr bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";  case DType::f64: return "f64";
    case DType::bf16: return "bf16"; case DType::f16: return "f16";
    case DType::i32: return "i32";  case DType::i64: return "i64";
    case DType::u8: return "u8";    case DType::boolean: return "bool";
  }
  return "?";
}

// bfloat16: the top 16 bits of an IEEE float, rounded to nearest even.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  LOOM_HD explicit bf16(float f) {
    uint32_t u; std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) { bits = uint16_t((u >> 16) | 0x40); return; }  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    bits = uint16_t(u >> 16);
  }
  LOOM_HD explicit operator float() const {
    uint32_t u = uint32_t(bits) << 16; float f; std::memcpy(&f, &u, 4); return f;
  }
};

// IEEE binary16, converted by hand (round to nearest even) so the CPU build needs no compiler extension.
struct f16 {
  uint16_t bits = 0;
  f16() = default;
  LOOM_HD explicit f16(float f) {
    uint32_t x; std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) { bits = uint16_t(sign | 0x7e00u); return; }           // NaN
    if (absx >= 0x477ff000u) { bits = uint16_t(sign | 0x7c00u); return; }         // overflow -> inf
    if (absx < 0x38800000u) {                                                      // subnormal or zero
      if (absx < 0x33000000u) { bits = uint16_t(sign); return; }
      uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
      int shift = 126 - int(absx >> 23);                                           // 14..24
      uint32_t half = mant >> shift;
      uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
      if (rem > mid || (rem == mid && (half & 1u))) ++half;
      bits = uint16_t(sign | half); return;
    }
    uint32_t v = absx - 0x38000000u;                                               // rebias exponent 127 -> 15
    uint32_t half = v >> 13, rem = v & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;
    bits = uint16_t(sign | half);
  }
  LOOM_HD explicit operator float() const {
    uint32_t sign = uint32_t(bits & 0x8000u) << 16, exp = (bits >> 10) & 0x1fu, mant = bits & 0x3ffu, u;
    if (exp == 0) {
      if (mant == 0) u = sign;
      else {  // subnormal: normalise
        int e = -1;
        do { mant <<= 1; ++e; } while (!(mant & 0x400u));
        u = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
      }
    } else if (exp == 31) u = sign | 0x7f800000u | mant << 13;
    else u = sign | (exp + 112u) << 23 | mant << 13;
    float f; std::memcpy(&f, &u, 4); return f;
  }
};

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::u8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::boolean; };

// Compute type: bf16/f16 are computed in f32, f64 in f64.
template <class T> struct acc_of { using type = float; };
template <> struct acc_of<double> { using type = double; };
template <> struct acc_of<int32_t> { using type = int64_t; };
template <> struct acc_of<int64_t> { using type = int64_t; };
template <> struct acc_of<uint8_t> { using type = int64_t; };
template <> struct acc_of<bool> { using type = int64_t; };
template <class T> using acc_t = typename acc_of<T>::type;

template <class T> LOOM_HD inline acc_t<T> load(const T& v) { return acc_t<T>(v); }
template <> LOOM_HD inline float load<bf16>(const bf16& v) { return float(v); }
template <> LOOM_HD inline float load<f16>(const f16& v) { return float(v); }
template <class T, class A> LOOM_HD inline T store(A v) { return T(v); }

}  // namespace loom::kernels

namespace loom::kernels {

// Calls f(type_tag<T>{}) for the element type T of `dtype`; f reads T as typename decltype(tag)::type.
// (Functions rather than macros, so OpenMP pragmas may stand inside the lambda.)
template <class T> struct type_tag { using type = T; };

[[noreturn]] inline void unsupported_dtype(const char* op, DType t) {
  throw std::invalid_argument(std::string(op) + ": unsupported dtype " + std::string(dtype_name(t)));
}

template <class F> decltype(auto) dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(type_tag<float>{});
    case DType::f64: return f(type_tag<double>{});
    case DType::bf16: return f(type_tag<bf16>{});
    case DType::f16: return f(type_tag<f16>{});
    default: unsupported_dtype(op, t);
  }
}

template <class F> decltype(auto) dispatch_all(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(type_tag<float>{});
    case DType::f64: return f(type_tag<double>{});
    case DType::bf16: return f(type_tag<bf16>{});
    case DType::f16: return f(type_tag<f16>{});
    case DType::i32: return f(type_tag<int32_t>{});
    case DType::i64: return f(type_tag<int64_t>{});
    case DType::u8: return f(type_tag<uint8_t>{});
    case DType::boolean: return f(type_tag<bool>{});
  }
  unsupported_dtype(op, t);
}

}  // namespace loom::kernels
