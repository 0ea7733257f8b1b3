// loom bench: training throughput of a recipe's model on its data.
#include <unistd.h>
#include <filesystem>
#include <iostream>
#include "core/stream.h"
#include "trainers/cli/cli.h"
#include "trainers/trainer.h"

namespace loom::cli {
namespace {

void report(const Recipe& r, const Args& a, double sps, const Trainer::BenchTimes& times, int world) {
  std::cout << "loom bench " << r.name << ": " << sps << " samples/s (batch " << r.data.at(r.stages[0].data).batch_size << ", "
            << a.steps << " steps; " << (a.in_memory ? "one batch in memory" : "batches from the loader") << "; "
            << (r.device == "cuda" ? str_cat("cuda ", r.precision, ", attention ", r.attention_kernel, ", gemm ", r.gemm_kernel)
                                   : str_cat("CPU f32 GEMM: ", cpu_gemm_library()))
            << ")\n";
  std::cout << "  per step: " << times.step_ms << " ms, backward " << times.backward_ms << " ms";
  if (world > 1)
    std::cout << " (with the gradient all-reduce over " << world << " processes: " << times.comm_bytes << " bytes in "
              << times.buckets << " buckets, " << times.comm_wait_ms << " ms waited for after backward"
              << (r.overlap_comm ? "" : "; train.overlap_comm false") << ")";
  if (times.peak_allocated > 0)
    std::cout << "; " << (r.device == "cuda" ? "GPU" : "host") << " memory peak " << double(times.peak_allocated) / double(1 << 30)
              << " GiB allocated, "
              << double(times.peak_reserved) / double(1 << 30) << " GiB reserved";
  std::cout << "\n";
}

int bench(const Args& a, Session& s) {
  const Config c = load_recipe(a);
  const Recipe r = Recipe::from(c);
  s.comm = distributed::from_launcher();
  Tensor id = Tensor::from(std::vector<int64_t>{int64_t(::getpid())}, {1});
  s.comm->broadcast(id, 0);  // one scratch directory for all ranks: rank 0's
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("loom-bench-" + std::to_string(id.to_vector<int64_t>()[0]))).string();
  double sps;
  std::string profile;
  Trainer::BenchTimes times;
  {
    Trainer t(r, c, dir, false, s.comm);
    sps = t.bench(a.steps, 3, a.profile ? &profile : nullptr, &times, a.in_memory);
  }
  s.comm->barrier();
  if (s.comm->rank() != 0) return 0;
  std::filesystem::remove_all(dir);
  report(r, a, sps, times, s.comm->world());
  if (a.profile) std::cout << "\n" << profile;
  return 0;
}

}  // namespace

const Command kBench = {"bench", R"(  bench RECIPE [--steps N] [--profile] [--in-memory] [key.path=value ...]
        Training throughput (samples/s) of the recipe's model on its data, after 3 warm-up steps.
        --in-memory trains every timed step on one batch held in memory (as the PyTorch scripts in
        scripts/bench/ do) instead of loading and decoding each batch on the same cores.
        --profile adds a table of the time per step of each op (forward, and backward per gradient
        rule) and each kernel, calls, bytes allocated and share of the step.
)", bench};

}  // namespace loom::cli
