// WebDataset tar shards as a data source: the samples of a list of uncompressed tar files, each
// sample the members sharing a key ("shard/000123.png" + "shard/000123.txt" + "shard/000123.cls"
// is one sample, key "shard/000123"), grouped in the order the shards are listed.
//
// loom indexes the shards once when the recipe is read (libarchive reads the headers; the data is
// skipped, not read) and keeps every member's offset and size, so a sample's bytes are one read at
// a known place. The samples then behave as the rows of a JSONL manifest: the same loader, the
// same epoch permutation, the same sharding of global batches over ranks, the same exact resume —
// the same batches as a manifest of the same samples, for the same seed. (WebDataset's own loader
// streams shards through a shuffle buffer instead; random access gives exact reproducibility at
// the price of one seek per sample.)
//
// Extensions: jpg jpeg png pgm ppm bmp gif tga → the image; wav flac ogg opus mp3 aiff au → the
// audio; txt → the text; cls → the label (a decimal integer); json → {"text": ..., "label": ...}
// (either key). Other extensions are ignored. A key with two images or two texts is an error
// naming the shard and the key.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "data/manifest.h"

namespace loom::data {

// "train-{000000..000127}.tar" → 128 names; "{a,b}-{0..2}.tar" → 6; ranges keep the width of their
// zero-padded bounds. Without braces: the pattern itself. loom::Error naming the pattern when a
// brace is unbalanced, a range is empty or reversed, or it would expand to more than 10 million names.
std::vector<std::string> expand_braces(const std::string& pattern);

struct TarMember {
  std::string name;
  int64_t offset = 0, size = 0;  // the data's bytes within the tar file
};
// The regular files of an uncompressed tar (ustar, pax or GNU) with their data offsets, read with
// libarchive. loom::Error naming the shard when it cannot be opened, is compressed, or is corrupt.
std::vector<TarMember> index_tar(const std::string& path);

// What index_tar reads up to the first damage (a cut inside a member's data or a header, a
// corrupt header, a member past the end): the members before it, every one whole.
struct TarIndex {
  std::vector<TarMember> members;
  std::string damage;      // empty when the shard is whole
  int64_t damage_at = -1;  // the byte where the damaged header or member starts
  std::string cut_member;  // the last member whose header was read before the damage (its sample may be incomplete)
  int64_t file_size = 0;
};
// loom::Error only when the shard is missing, compressed or cannot be opened.
TarIndex index_tar_prefix(const std::string& path);

struct WebDatasetReport {
  int64_t shards = 0, samples = 0;
  std::vector<std::string> skipped;  // "shard: why" for shards skipped under on_error skip
  std::vector<std::string> cut;      // "shard: ..." for damaged shards whose samples before the damage were kept
};
// The samples of every shard of `pattern` (brace-expanded; relative names are relative to the
// working directory) as manifest rows. on_error "skip": a damaged shard (cut short, a corrupt
// header) keeps every sample before the damage, as WebDataset's tar reader does, and is listed in
// `cut`: the sample in progress at the damage is kept only when it has every kind of member the
// sample before it has; a shard that cannot be read at all is left out and listed in `skipped`.
// "fail": loom::Error naming the shard. A sample whose members are all of
// unknown extensions is left out; a member that cannot be parsed (a .cls that is not an integer, a
// .json that is not JSON) is an error naming shard and member under "fail", and drops its sample
// (listed) under "skip". Image and audio bytes are decoded later, by the loader, as files are.
Manifest load_webdataset(const std::string& pattern, const std::string& on_error = "fail", WebDatasetReport* report = nullptr);

struct PackReport {
  std::vector<std::string> shards;  // written, in order
  int64_t samples = 0;
};
// Writes the rows of a JSONL manifest as tar shards of `per_shard` samples each: key "%09d" (the row
// number), the image and audio files' bytes under their own extensions, the text as .txt, the label
// as .cls. `out_pattern` holds one printf integer field for the shard number ("out/train-%06d.tar").
// Each shard is written to a temporary name and renamed, so a shard that exists is whole.
PackReport pack_webdataset(const Manifest& manifest, const std::string& out_pattern, int64_t per_shard);

}  // namespace loom::data
