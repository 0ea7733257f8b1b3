// The public sets' own layouts read as they are distributed, written as loom's JSONL manifests
// (`loom data import FORMAT ROOT OUT.jsonl [--split NAME]`). Nothing is downloaded: ROOT is the
// directory the user has.
//
//   coco, flickr30k  Karpathy's split file (dataset_coco.json / dataset_flickr30k.json in ROOT):
//                    one row per caption; images at ROOT/<filepath>/<filename>, ROOT/<filename>,
//                    ROOT/images/ or ROOT/flickr30k-images/. Splits: train (train + restval, as
//                    Karpathy's convention), val, test.
//   audiocaps        ROOT/{train,val,test}.csv (audiocap_id, youtube_id, start_time, caption); the
//                    audio anywhere under ROOT, named <audiocap_id>, <youtube_id>, Y<youtube_id> or
//                    <youtube_id>_<start_time> with any audio extension. Splits: train, val, test.
//   clotho           ROOT/clotho_captions_<split>.csv (file_name, caption_1 .. caption_5): five
//                    rows per clip, the audio found by file_name anywhere under ROOT. Splits:
//                    development, validation, evaluation.
//   esc50            ROOT/meta/esc50.csv (filename, fold, target, category, ...), audio in ROOT/audio:
//                    label = target, text = the category ("chirping birds"). Splits: fold1 .. fold5
//                    (that fold) and not-fold1 .. not-fold5 (the other four, ESC-50's training side).
//   audioset         ROOT/class_labels_indices.csv (index, mid, display_name) and
//                    ROOT/{balanced_train,unbalanced_train,eval}_segments.csv (YTID, start_seconds,
//                    end_seconds, "positive_labels" as mids; '#' lines are comments); the audio
//                    anywhere under ROOT, named <YTID>, Y<YTID>, <YTID>_<start> or
//                    Y<YTID>_<start>_<end> (start and end in whole seconds, or as the CSV writes
//                    them). labels = the segment's class indices (multi-label), text = their display
//                    names joined by ", ". Splits: balanced_train, unbalanced_train, eval.
//   imagefolder      ROOT/<class>/<image>: ImageNet's layout; labels are the sorted class folders, the
//                    text the folder name with '_' as spaces.
//
// Classified sets (esc50, audioset, imagefolder) also write OUT's stem + ".classes.txt" (a class per line, in
// label order), the file a recipe's zero-shot evaluation reads. Paths in the manifest are relative
// to OUT's directory. Without a split, every split the format has (present in ROOT) goes into OUT.
// A malformed file (a missing column, a caption list of the wrong length, a clip or image with no
// file) is a loom::Error naming file and line; with skip_missing, rows whose media file is absent
// are left out and counted instead (AudioCaps' YouTube clips disappear over time).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace loom::data {

struct ImportOptions {
  std::string split;          // empty: all
  bool skip_missing = false;  // rows whose audio or image file is absent: left out, counted
};

struct ImportReport {
  int64_t rows = 0;         // written
  int64_t items = 0;        // distinct images or clips
  int64_t missing = 0;      // rows left out under skip_missing
  std::string classes_file;  // written beside OUT (esc50, audioset, imagefolder); empty otherwise
};

std::vector<std::string> import_formats();
// Reads ROOT in `format`'s layout and writes the manifest `out` (replacing it only when whole).
ImportReport import_dataset(const std::string& format, const std::string& root, const std::string& out,
                            const ImportOptions& options = {});

// One CSV record of `line` (RFC 4180: quoted fields, "" inside quotes, commas in quotes); `where`
// ("file:line") names an unterminated quote.
std::vector<std::string> parse_csv_line(const std::string& line, const std::string& where);

}  // namespace loom::data
