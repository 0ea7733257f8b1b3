// loom data import: miniature copies of each public set's layout, made here, turned into manifests
// the loader reads; every malformed file named with its line.
#include <gtest/gtest.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "data/audio.h"
#include "data/importers.h"
#include "data/loader.h"
#include "helpers.h"

namespace {
using namespace loom::data;
using loom::data::testing::error_of;
using loom::data::testing::TempDir;
using loom::data::testing::write_file;
using loom::data::testing::write_pgm;
namespace fs = std::filesystem;

void tone(const std::string& path) {
  fs::create_directories(fs::path(path).parent_path());
  std::vector<float> s(1600);
  for (size_t i = 0; i < s.size(); ++i) s[i] = 0.3f * float((i % 40) < 20 ? 1 : -1);
  write_audio(path, s, 1, 16000, false);
}
void image(const std::string& path) { write_pgm(path, 6, 6, std::vector<uint8_t>(36, 90)); }

std::vector<nlohmann::json> lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  for (std::string l; std::getline(in, l);) out.push_back(nlohmann::json::parse(l));
  return out;
}

// One batch of everything, through the loader: the manifest's paths resolve and decode.
int64_t load_all(const std::string& manifest, bool audio) {
  LoaderConfig c;
  c.batch_size = int64_t(Manifest::load(manifest).rows.size());
  c.workers = 0;
  c.shuffle = false;
  c.on_error = "fail";
  c.read_images = !audio;
  c.read_audio = audio;
  c.transform.size = 6;
  Loader l(std::make_shared<const Manifest>(Manifest::load(manifest)), nullptr, c);
  return l.next()->size();
}

TEST(Import, CsvFieldsQuotedAsRfc4180) {
  EXPECT_EQ(parse_csv_line(R"(a,"b, c","say ""hi""",,d)", "x:1"),
            (std::vector<std::string>{"a", "b, c", "say \"hi\"", "", "d"}));
  EXPECT_NE(error_of([] { parse_csv_line(R"(a,"open)", "f.csv:7"); }).find("f.csv:7: a quoted field is not closed"), std::string::npos);
}

TEST(Import, KarpathySplitsOfCocoAndFlickr) {
  TempDir d;
  nlohmann::json j = {{"images", nlohmann::json::array()}};
  const char* splits[] = {"train", "restval", "val", "test"};
  for (int i = 0; i < 4; ++i) {
    const std::string name = "COCO_" + std::to_string(i) + ".pgm";
    image(d.file(std::string("coco/") + (i < 2 ? "train2014/" : "val2014/") + name));
    j["images"].push_back({{"filepath", i < 2 ? "train2014" : "val2014"}, {"filename", name}, {"split", splits[i]},
                           {"sentences", {{{"raw", "a cat " + std::to_string(i)}}, {{"raw", "a dog, " + std::to_string(i)}}}}});
  }
  write_file(d.file("coco/dataset_coco.json"), j.dump());
  ImportReport r = import_dataset("coco", d.file("coco"), d.file("out/coco_train.jsonl"), {"train", false});
  EXPECT_EQ(r.rows, 4);  // train + restval, two captions each
  EXPECT_EQ(r.items, 2);
  auto rows = lines(d.file("out/coco_train.jsonl"));
  EXPECT_EQ(rows[0]["image"], "../coco/train2014/COCO_0.pgm");
  EXPECT_EQ(rows[1]["text"], "a dog, 0");
  EXPECT_EQ(load_all(d.file("out/coco_train.jsonl"), false), 4);
  EXPECT_EQ(import_dataset("coco", d.file("coco"), d.file("out/all.jsonl")).rows, 8);
  EXPECT_NE(error_of([&] { import_dataset("coco", d.file("coco"), d.file("out/x.jsonl"), {"restval", false}); })
                .find("--split restval is not one of: train, val, test"), std::string::npos);
  // Flickr30k: images straight in ROOT/flickr30k-images; an image that is not there.
  nlohmann::json f = {{"images", {{{"filename", "1.pgm"}, {"split", "test"}, {"sentences", {{{"raw", "two men"}}}}},
                                  {{"filename", "2.pgm"}, {"split", "test"}, {"sentences", {{{"raw", "a boat"}}}}}}}};
  image(d.file("f30k/flickr30k-images/1.pgm"));
  write_file(d.file("f30k/dataset_flickr30k.json"), f.dump());
  const std::string e = error_of([&] { import_dataset("flickr30k", d.file("f30k"), d.file("out/f.jsonl")); });
  EXPECT_NE(e.find("dataset_flickr30k.json: images[1]: no image file 2.pgm"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(d.file("out/f.jsonl"))) << "nothing written on an error";
  r = import_dataset("flickr30k", d.file("f30k"), d.file("out/f.jsonl"), {"", true});
  EXPECT_EQ(r.rows, 1);
  EXPECT_EQ(r.missing, 1);
}

TEST(Import, AudioCapsFindsClipsByAnyOfItsNames) {
  TempDir d;
  write_file(d.file("ac/train.csv"), "audiocap_id,youtube_id,start_time,caption\n"
                                     "91139,r1nicOVtvkQ,130,\"A woman talks, and a goat bleats\"\n"
                                     "58146,UDGBjjwyaqE,20,Rain falls\r\n");
  write_file(d.file("ac/test.csv"), "audiocap_id,youtube_id,start_time,caption\n103549,7fmOlUlwoNg,20,A dog barks\n");
  tone(d.file("ac/audio/train/91139.wav"));           // by audiocap_id
  tone(d.file("ac/audio/train/YUDGBjjwyaqE.flac"));   // by Y + youtube_id
  tone(d.file("ac/audio/test/7fmOlUlwoNg_20.wav"));   // youtube_id_start
  ImportReport r = import_dataset("audiocaps", d.file("ac"), d.file("ac_train.jsonl"), {"train", false});
  EXPECT_EQ(r.rows, 2);
  auto rows = lines(d.file("ac_train.jsonl"));
  EXPECT_EQ(rows[0]["text"], "A woman talks, and a goat bleats");
  EXPECT_EQ(rows[1]["audio"], "ac/audio/train/YUDGBjjwyaqE.flac");
  EXPECT_EQ(load_all(d.file("ac_train.jsonl"), true), 2);
  EXPECT_EQ(import_dataset("audiocaps", d.file("ac"), d.file("all.jsonl")).rows, 3);
  // A clip id with no audio; a CSV without its caption column.
  write_file(d.file("ac/val.csv"), "audiocap_id,youtube_id,start_time,caption\n1,none,0,Wind\n");
  std::string e = error_of([&] { import_dataset("audiocaps", d.file("ac"), d.file("v.jsonl"), {"val", false}); });
  EXPECT_NE(e.find("val.csv:2: no audio file for audiocap_id 1 / youtube_id none"), std::string::npos) << e;
  write_file(d.file("ac/val.csv"), "audiocap_id,youtube_id,start_time\n1,none,0\n");
  e = error_of([&] { import_dataset("audiocaps", d.file("ac"), d.file("v.jsonl"), {"val", false}); });
  EXPECT_NE(e.find("val.csv:1: no column 'caption' (the header has: audiocap_id, youtube_id, start_time)"), std::string::npos) << e;
}

TEST(Import, ClothoFiveCaptionsPerClip) {
  TempDir d;
  write_file(d.file("clotho/clotho_captions_evaluation.csv"),
             "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
             "a.wav,one,two,three,four,\"five, with a comma\"\n"
             "b b.wav,uno,dos,tres,cuatro,cinco\n");
  tone(d.file("clotho/evaluation/a.wav"));
  tone(d.file("clotho/evaluation/b b.wav"));
  ImportReport r = import_dataset("clotho", d.file("clotho"), d.file("eval.jsonl"));
  EXPECT_EQ(r.rows, 10);
  EXPECT_EQ(r.items, 2);
  auto rows = lines(d.file("eval.jsonl"));
  EXPECT_EQ(rows[4]["text"], "five, with a comma");
  EXPECT_EQ(rows[5]["audio"], "clotho/evaluation/b b.wav");
  EXPECT_EQ(load_all(d.file("eval.jsonl"), true), 10);
  // A caption list of the wrong length; a row with a field too few.
  write_file(d.file("clotho/clotho_captions_evaluation.csv"),
             "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\na.wav,one,two,three,four,\n");
  std::string e = error_of([&] { import_dataset("clotho", d.file("clotho"), d.file("eval.jsonl")); });
  EXPECT_NE(e.find("clotho_captions_evaluation.csv:2: a.wav has 4 of its 5 captions"), std::string::npos) << e;
  write_file(d.file("clotho/clotho_captions_evaluation.csv"),
             "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\na.wav,one,two,three,four\n");
  e = error_of([&] { import_dataset("clotho", d.file("clotho"), d.file("eval.jsonl")); });
  EXPECT_NE(e.find("clotho_captions_evaluation.csv:2: 5 fields, and the header has 6"), std::string::npos) << e;
  write_file(d.file("clotho/clotho_captions_evaluation.csv"), "file_name,caption_1,caption_2\na.wav,one,two\n");
  e = error_of([&] { import_dataset("clotho", d.file("clotho"), d.file("eval.jsonl")); });
  EXPECT_NE(e.find("clotho_captions_evaluation.csv:1: Clotho has five captions per clip"), std::string::npos) << e;
}

TEST(Import, Esc50FoldsAndClasses) {
  TempDir d;
  std::string meta = "filename,fold,target,category,esc10,src_file,take\n";
  const char* cats[] = {"dog", "chirping_birds", "rain"};
  for (int i = 0; i < 6; ++i) {
    const std::string name = std::to_string(i % 5 + 1) + "-" + std::to_string(i) + "-A-" + std::to_string(i % 3) + ".wav";
    meta += name + "," + std::to_string(i % 5 + 1) + "," + std::to_string(i % 3) + "," + cats[i % 3] + ",False,x,A\n";
    tone(d.file("esc/audio/" + name));
  }
  write_file(d.file("esc/meta/esc50.csv"), meta);
  ImportReport r = import_dataset("esc50", d.file("esc"), d.file("m/esc50.jsonl"));
  EXPECT_EQ(r.rows, 6);
  EXPECT_EQ(r.classes_file, d.file("m/esc50.classes.txt"));
  std::ifstream cf(r.classes_file);
  std::string all((std::istreambuf_iterator<char>(cf)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all, "dog\nchirping birds\nrain\n");
  auto rows = lines(d.file("m/esc50.jsonl"));
  EXPECT_EQ(rows[1]["label"], 1);
  EXPECT_EQ(rows[1]["text"], "chirping birds");
  EXPECT_EQ(import_dataset("esc50", d.file("esc"), d.file("m/f1.jsonl"), {"fold1", false}).rows, 2);   // rows 0 and 5
  EXPECT_EQ(import_dataset("esc50", d.file("esc"), d.file("m/nf1.jsonl"), {"not-fold1", false}).rows, 4);
  EXPECT_EQ(load_all(d.file("m/nf1.jsonl"), true), 4);
  EXPECT_NE(error_of([&] { import_dataset("esc50", d.file("esc"), d.file("m/x.jsonl"), {"fold6", false}); }).find("fold1 .. fold5"),
            std::string::npos);
  write_file(d.file("esc/meta/esc50.csv"), "filename,fold,target,category\n1-0-A-0.wav,1,dog,dog\n");
  EXPECT_NE(error_of([&] { import_dataset("esc50", d.file("esc"), d.file("m/x.jsonl")); }).find("esc50.csv:2: target 'dog' is not a class number"),
            std::string::npos);
}

TEST(Import, ImageFoldersAreClasses) {
  TempDir d;
  image(d.file("train/n02_tabby_cat/a.pgm"));
  image(d.file("train/n02_tabby_cat/b.pgm"));
  image(d.file("train/n01_goldfish/x/c.pgm"));
  write_file(d.file("train/n01_goldfish/notes.txt"), "not an image");
  ImportReport r = import_dataset("imagefolder", d.file("train"), d.file("train.jsonl"));
  EXPECT_EQ(r.rows, 3);
  auto rows = lines(d.file("train.jsonl"));
  EXPECT_EQ(rows[0]["label"], 0);
  EXPECT_EQ(rows[0]["text"], "n01 goldfish");
  EXPECT_EQ(rows[2]["label"], 1);
  EXPECT_EQ(load_all(d.file("train.jsonl"), false), 3);
  fs::create_directories(d.file("train/empty"));
  EXPECT_NE(error_of([&] { import_dataset("imagefolder", d.file("train"), d.file("t.jsonl")); }).find("empty: a class folder with no image"),
            std::string::npos);
  EXPECT_NE(error_of([&] { import_dataset("laion", d.file("train"), d.file("t.jsonl")); }).find("unknown format 'laion'"),
            std::string::npos);
}

}  // namespace

namespace {
// A miniature AudioSet: three classes, a balanced and an eval segment list (with the comment
// header the distributed files have), clips named as two download scripts name them.
void audioset_copy(const TempDir& d) {
  write_file(d.file("as/class_labels_indices.csv"),
             "index,mid,display_name\n0,/m/09x0r,Speech\n1,/m/04rlf,Music\n2,/m/0jbk,\"Animal, pets\"\n");
  write_file(d.file("as/balanced_train_segments.csv"),
             "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=3, num_segs=3, num_unique_labels=3\n"
             "# YTID, start_seconds, end_seconds, positive_labels\n"
             "--PJHxphWEs, 30.000, 40.000, \"/m/09x0r,/m/04rlf\"\n"
             "-0RWZT-miFs, 420.000, 430.000, \"/m/0jbk\"\n"
             "-0oZEsl6JXc, 5.500, 15.500, \"/m/04rlf,/m/0jbk,/m/04rlf\"\n");
  write_file(d.file("as/eval_segments.csv"), "# YTID, start_seconds, end_seconds, positive_labels\n"
                                             "zz1, 0.000, 10.000, \"/m/09x0r\"\n");
  tone(d.file("as/audio/bal/Y--PJHxphWEs_30_40.wav"));
  tone(d.file("as/audio/bal/-0RWZT-miFs_420.flac"));
  tone(d.file("as/audio/bal/Y-0oZEsl6JXc_5.500_15.500.wav"));
  tone(d.file("as/audio/eval/zz1.wav"));
}
}  // namespace

TEST(Import, AudioSetSegmentsAreMultiLabel) {
  TempDir d;
  audioset_copy(d);
  ImportReport r = import_dataset("audioset", d.file("as"), d.file("m/audioset.jsonl"), {"balanced_train", false});
  EXPECT_EQ(r.rows, 3);
  EXPECT_EQ(r.classes_file, d.file("m/audioset.classes.txt"));
  std::ifstream cf(r.classes_file);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(cf)), std::istreambuf_iterator<char>()), "Speech\nMusic\nAnimal, pets\n");
  auto rows = lines(d.file("m/audioset.jsonl"));
  EXPECT_EQ(rows[0]["labels"], nlohmann::json({0, 1}));
  EXPECT_EQ(rows[0]["text"], "Speech, Music");
  EXPECT_EQ(rows[1]["labels"], nlohmann::json({2}));
  EXPECT_EQ(rows[2]["labels"], nlohmann::json({1, 2})) << "a label listed twice counts once";
  EXPECT_EQ(rows[2]["audio"], "../as/audio/bal/Y-0oZEsl6JXc_5.500_15.500.wav");
  const Manifest m = Manifest::load(d.file("m/audioset.jsonl"));
  EXPECT_EQ(m.rows[0].labels, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(load_all(d.file("m/audioset.jsonl"), true), 3);
  EXPECT_EQ(import_dataset("audioset", d.file("as"), d.file("m/all.jsonl")).rows, 4) << "every split present";
  // Malformed: an unknown mid, a missing clip, a bad class index, a short record.
  write_file(d.file("as/eval_segments.csv"), "zz1, 0.000, 10.000, \"/m/nope\"\n");
  EXPECT_NE(error_of([&] { import_dataset("audioset", d.file("as"), d.file("m/x.jsonl"), {"eval", false}); })
                .find("eval_segments.csv:1: label /m/nope is not in"),
            std::string::npos);
  write_file(d.file("as/eval_segments.csv"), "# c\nzz2, 0.000, 10.000, \"/m/09x0r\"\n");
  EXPECT_NE(error_of([&] { import_dataset("audioset", d.file("as"), d.file("m/x.jsonl"), {"eval", false}); })
                .find("eval_segments.csv:2: no audio file for YTID zz2"),
            std::string::npos);
  EXPECT_THROW(import_dataset("audioset", d.file("as"), d.file("m/x.jsonl"), {"eval", false}), loom::Error);
  EXPECT_EQ(import_dataset("audioset", d.file("as"), d.file("m/kept.jsonl"), {"", true}).missing, 1) << "--skip-missing";
  write_file(d.file("as/eval_segments.csv"), "zz1, 0.000, 10.000\n");
  EXPECT_NE(error_of([&] { import_dataset("audioset", d.file("as"), d.file("m/x.jsonl"), {"eval", false}); })
                .find("eval_segments.csv:1: 3 fields, expected YTID"),
            std::string::npos);
  write_file(d.file("as/class_labels_indices.csv"), "index,mid,display_name\n0,/m/09x0r,Speech\n2,/m/04rlf,Music\n");
  EXPECT_NE(error_of([&] { import_dataset("audioset", d.file("as"), d.file("m/x.jsonl")); })
                .find("class_labels_indices.csv:3: index '2', expected 1"),
            std::string::npos);
}
