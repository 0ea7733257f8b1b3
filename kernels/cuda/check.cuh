#pragma once
#include <cuda_runtime.h>
#include <stdexcept>
#include <string>

#define LOOM_CUDA_CHECK(call)                                                                  \
  do {                                                                                         \
    cudaError_t err_ = (call);                                                                 \
    if (err_ != cudaSuccess)                                                                   \
      throw std::runtime_error(std::string("CUDA error in ") + #call + " (" + __FILE__ + ":" + \
                               std::to_string(__LINE__) + "): " + cudaGetErrorString(err_));   \
  } while (0)
