// TensorBoard event files beside metrics.jsonl (train.tensorboard): every logged metric as a scalar,
// the evaluation's pictures (MAE reconstructions) as images, readable by TensorBoard itself
// (`tensorboard --logdir runs/`). The records are TFRecord-framed (length, masked CRC-32C of the
// length, the serialized Event, its masked CRC-32C); the Event itself is encoded by protobuf from
// tensorboard_event.proto, so the bytes are the protobuf library's, not loom's.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

namespace loom {

class TensorBoardWriter {
 public:
  // A new events.out.tfevents.<time>.<host>.<pid>.loom file in `dir` (created). `start_step` > 0 marks
  // a resumed run: the file begins with a restart at that step, so TensorBoard forgets the earlier
  // files' events at that step and after (those the resumed run writes again).
  explicit TensorBoardWriter(const std::string& dir, int64_t start_step = 0);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void scalars(int64_t step, const std::map<std::string, double>& values);  // non-finite values are skipped
  // A PNG file as an image under `tag`; a file that is not a readable PNG is a loom::Error naming it.
  void image(int64_t step, const std::string& tag, const std::string& png_path);
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& bytes);
  std::string path_;
  std::FILE* f_ = nullptr;
};

// CRC-32C (Castagnoli), as TFRecord frames use it, before masking.
uint32_t crc32c(const void* data, size_t n);

}  // namespace loom
