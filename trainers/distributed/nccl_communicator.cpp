// The NCCL communicator for CUDA tensors: collectives on a stream of its own, ordered after the
// work already queued on the caller's current stream (an event) and before what the caller queues
// next (the caller's stream waits on NCCL's). Ranks find each other through a bootstrap
// communicator (MPI): rank 0's ncclUniqueId is broadcast over it. Built with CUDA and NCCL
// (LOOM_HAVE_NCCL); otherwise nccl() says loom was built without it.
#include "trainers/distributed/nccl.h"
#include "core/error.h"

#ifdef LOOM_HAVE_NCCL
#include <nccl.h>
#include <cstring>
#include "core/stream.h"
#endif

namespace loom::distributed {

#ifndef LOOM_HAVE_NCCL
std::shared_ptr<Communicator> nccl(std::shared_ptr<Communicator>, int) {
  throw Error("this loom was built without CUDA and NCCL, so it has no NCCL communicator");
}
#else
namespace {
namespace cu = gpu;

void check_nccl(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) throw Error(str_cat("NCCL ", what, " failed: ", ncclGetErrorString(rc)));
}

ncclDataType_t nccl_type(const Tensor& t, const char* op) {
  LOOM_CHECK(t.device().is_cuda(), op, ": the NCCL communicator moves CUDA tensors, got ", t.describe());
  LOOM_CHECK(t.is_contiguous(), op, ": expected a contiguous tensor, got ", t.describe());
  switch (t.dtype()) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
    case DType::i64: return ncclInt64;
    case DType::i32: return ncclInt32;
    default: throw Error(str_cat(op, ": NCCL collectives take f32, f64, bf16, f16, i32 or i64 tensors, got ", t.describe()));
  }
}

class Nccl final : public Communicator {
 public:
  Nccl(std::shared_ptr<Communicator> bootstrap, int device) : boot_(std::move(bootstrap)), device_(device) {
    cu::set_device(device_);
    // The unique id travels as 16 i64 over the bootstrap (MPI moves no raw bytes type here).
    static_assert(sizeof(ncclUniqueId) % sizeof(int64_t) == 0);
    ncclUniqueId id;
    std::memset(&id, 0, sizeof(id));
    if (boot_->rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    std::vector<int64_t> words(sizeof(id) / sizeof(int64_t));
    std::memcpy(words.data(), &id, sizeof(id));
    Tensor w = Tensor::from(words, {int64_t(words.size())});
    boot_->broadcast(w, 0);
    std::memcpy(&id, w.data_ptr<int64_t>(), sizeof(id));
    check_nccl(ncclCommInitRank(&comm_, boot_->world(), id, boot_->rank()), "ncclCommInitRank");
    stream_ = cu::stream_create();
    before_ = cu::event_create();
  }
  ~Nccl() override {
    if (comm_) ncclCommDestroy(comm_);
    if (before_) cu::event_destroy(before_);
    if (stream_) cu::stream_destroy(stream_);
  }
  int rank() const override { return boot_->rank(); }
  int world() const override { return boot_->world(); }
  int local_rank() const override { return boot_->local_rank(); }
  std::string backend() const override { return "nccl"; }

  void all_reduce_sum(Tensor& t) override { all_reduce_sum_async(t)->wait(); }
  std::unique_ptr<Pending> all_reduce_sum_async(Tensor& t) override {
    const ncclDataType_t ty = nccl_type(t, "all_reduce_sum");
    enter();
    check_nccl(ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), ty, ncclSum, comm_, stream()), "ncclAllReduce");
    return leave();
  }
  Tensor all_gather_rows(const Tensor& t_in, std::vector<int64_t>* counts_out) override {
    Tensor t = t_in.contiguous();
    const ncclDataType_t ty = nccl_type(t, "all_gather_rows");
    const std::vector<int64_t> rows = host_counts(t.size(0));
    const int64_t row = row_elements(t);
    int64_t total = 0;
    for (int64_t r : rows) total += r;
    Shape shape = t.shape();
    shape[0] = total;
    Tensor out = Tensor::empty(shape, t.dtype(), t.device());
    const size_t esize = dtype_size(t.dtype());
    enter();
    // Rows of unequal count: one broadcast per rank, grouped into one launch.
    check_nccl(ncclGroupStart(), "ncclGroupStart");
    int64_t at = 0;
    for (int r = 0; r < world(); ++r) {
      char* dst = static_cast<char*>(out.raw_data()) + size_t(at * row) * esize;
      check_nccl(ncclBroadcast(r == rank() ? t.raw_data() : dst, dst, size_t(rows[size_t(r)] * row), ty, r, comm_, stream()),
                 "ncclBroadcast");
      at += rows[size_t(r)];
    }
    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
    leave()->wait();
    if (counts_out) *counts_out = rows;
    return out;
  }
  Tensor reduce_scatter_rows(const Tensor& t_in, const std::vector<int64_t>& rows) override {
    Tensor t = t_in.contiguous();
    const ncclDataType_t ty = nccl_type(t, "reduce_scatter_rows");
    LOOM_CHECK(int(rows.size()) == world(), "reduce_scatter_rows: ", rows.size(), " counts for ", world(), " ranks");
    int64_t total = 0;
    for (int64_t r : rows) total += r;
    LOOM_CHECK(t.dim() >= 1 && t.size(0) == total, "reduce_scatter_rows: ", t.describe(), " does not hold ", total, " rows");
    const int64_t row = row_elements(t);
    Shape shape = t.shape();
    shape[0] = rows[size_t(rank())];
    Tensor out = Tensor::empty(shape, t.dtype(), t.device());
    const size_t esize = dtype_size(t.dtype());
    enter();
    check_nccl(ncclGroupStart(), "ncclGroupStart");
    int64_t at = 0;
    for (int r = 0; r < world(); ++r) {
      const char* src = static_cast<const char*>(t.raw_data()) + size_t(at * row) * esize;
      check_nccl(ncclReduce(src, r == rank() ? out.raw_data() : nullptr, size_t(rows[size_t(r)] * row), ty, ncclSum, r, comm_,
                            stream()),
                 "ncclReduce");
      at += rows[size_t(r)];
    }
    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
    leave()->wait();
    return out;
  }
  void broadcast(Tensor& t, int root) override {
    const ncclDataType_t ty = nccl_type(t, "broadcast");
    enter();
    check_nccl(ncclBroadcast(t.raw_data(), t.raw_data(), size_t(t.numel()), ty, root, comm_, stream()), "ncclBroadcast");
    leave()->wait();
  }
  void barrier() override {
    cu::stream_synchronize(stream_);
    boot_->barrier();
  }
  void abort(int code) override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    boot_->abort(code);
  }

 private:
  cudaStream_t stream() const { return static_cast<cudaStream_t>(stream_); }
  // NCCL's stream waits for what the caller has queued so far.
  void enter() {
    cu::event_record(before_, cu::current_stream());
    cu::stream_wait_event(stream_, before_);
  }
  // A handle whose wait() orders the caller's current stream after the collective.
  std::unique_ptr<Pending> leave() {
    struct Done final : Pending {
      cu::EventHandle ev;
      explicit Done(cu::StreamHandle s) : ev(cu::event_create()) { cu::event_record(ev, s); }
      ~Done() override { cu::event_destroy(ev); }
      void wait() override { cu::stream_wait_event(cu::current_stream(), ev); }
    };
    return std::make_unique<Done>(stream_);
  }
  std::vector<int64_t> host_counts(int64_t mine) {
    Tensor c = Tensor::from(std::vector<int64_t>{mine}, {1});
    return boot_->all_gather_rows(c).to_vector<int64_t>();
  }

  std::shared_ptr<Communicator> boot_;
  int device_;
  ncclComm_t comm_ = nullptr;
  cu::StreamHandle stream_ = nullptr;
  cu::EventHandle before_ = nullptr;
};

}  // namespace

std::shared_ptr<Communicator> nccl(std::shared_ptr<Communicator> bootstrap, int device) {
  LOOM_CHECK(bootstrap, "nccl: a bootstrap communicator is required (distributed::mpi(), or single_process())");
  return std::make_shared<Nccl>(std::move(bootstrap), device);
}
#endif

}  // namespace loom::distributed
