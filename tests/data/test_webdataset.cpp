// WebDataset tar shards: brace expansion, the tar index (against GNU tar's own files in ustar, pax
// and GNU formats), pack → load round trips, the same batches as the JSONL manifest, and every
// broken shard named.
#include <gtest/gtest.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include "data/loader.h"
#include "core/error.h"
#include "data/webdataset.h"
#include "helpers.h"

namespace {
using namespace loom::data;
using loom::str_cat;
using loom::data::testing::error_of;
using loom::data::testing::TempDir;
using loom::data::testing::write_file;
using loom::data::testing::write_pgm;
namespace fs = std::filesystem;

TEST(WebDataset, BraceExpansion) {
  EXPECT_EQ(expand_braces("a.tar"), (std::vector<std::string>{"a.tar"}));
  EXPECT_EQ(expand_braces("s-{000..002}.tar"), (std::vector<std::string>{"s-000.tar", "s-001.tar", "s-002.tar"}));
  EXPECT_EQ(expand_braces("{a,b}-{8..10}"), (std::vector<std::string>{"a-8", "a-9", "a-10", "b-8", "b-9", "b-10"}));
  EXPECT_EQ(expand_braces("d/{0098..0100}.tar").back(), "d/0100.tar");
  EXPECT_EQ(expand_braces("train-{000000..000127}.tar").size(), 128u);
  for (const char* bad : {"a{1..2", "a}1", "a{2..1}", "a{x..3}", "a{{1..2}}", "a{0..99999999999}"})
    EXPECT_NE(error_of([&] { expand_braces(bad); }).find(bad), std::string::npos) << bad;
}

// GNU tar writes the shards here, in each of its formats, with a long name and a non-ASCII one.
TEST(WebDataset, IndexFindsEveryMembersBytesInEachTarFormat) {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> files = {
      {"s/000001.txt", "hello"}, {"s/000001.cls", "3"}, {std::string(120, 'x') + "/000002.txt", "a long path"},
      {"s/\xc3\xbc\xc3\xb1\xc3\xad.txt", "unicode name"}, {"s/000003.bin", std::string(1500, 'z')}};
  for (const auto& [name, bytes] : files) write_file(dir.file("src/" + name), bytes);
  for (const std::string format : {"ustar", "pax", "gnu"}) {
    const bool ustar = format == "ustar";  // ustar cannot hold the 120-character directory name
    const std::string tar = dir.file(format + ".tar");
    const std::string cmd = "cd '" + dir.file("src") + "' && tar --format=" + format + " -cf '" + tar + "' s" +
                            (ustar ? std::string() : " " + std::string(120, 'x'));
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const std::vector<TarMember> members = index_tar(tar);
    ASSERT_EQ(members.size(), files.size() - (ustar ? 1 : 0)) << format;
    for (const TarMember& m : members) {
      auto it = std::find_if(files.begin(), files.end(), [&](const auto& f) { return f.first == m.name; });
      ASSERT_NE(it, files.end()) << format << ": " << m.name;
      EXPECT_EQ(m.size, int64_t(it->second.size()));
      const std::vector<unsigned char> got = read_blob({tar, m.offset, m.size}, m.name);
      EXPECT_EQ(std::string(got.begin(), got.end()), it->second) << format << ": " << m.name;
    }
  }
}

// n 6x6 PGM images with captions and labels; row 3 has no label, row 5 no text.
struct Set {
  TempDir dir;
  Manifest manifest;
  explicit Set(int n) {
    std::string jsonl;
    for (int i = 0; i < n; ++i) {
      std::vector<uint8_t> px;
      for (int k = 0; k < 36; ++k) px.push_back(uint8_t((17 * i + 5 * k) % 256));
      const std::string rel = "img/" + std::to_string(i) + ".pgm";
      write_pgm(dir.file(rel), 6, 6, px);
      jsonl += "{\"image\": \"" + rel + "\"";
      if (i != 5) jsonl += ", \"text\": \"picture number " + std::to_string(i) + "\"";
      if (i != 3) jsonl += ", \"label\": " + std::to_string(i % 4);
      jsonl += "}\n";
    }
    write_file(dir.file("m.jsonl"), jsonl);
    manifest = Manifest::load(dir.file("m.jsonl"));
  }
};

std::vector<Batch> batches(const Manifest& m, const TextTokenizer* tok, LoaderConfig c, int n) {
  Loader l(std::make_shared<const Manifest>(m), tok, c);
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) out.push_back(*l.next());
  return out;
}

TEST(WebDataset, PackThenLoadGivesTheManifestsBatches) {
  Set s(23);
  const PackReport rep = pack_webdataset(s.manifest, s.dir.file("shards/part-%03d.tar"), 7);
  ASSERT_EQ(rep.shards.size(), 4u);
  EXPECT_EQ(rep.samples, 23);
  const Manifest w = load_webdataset(s.dir.file("shards/part-{000..003}.tar"));
  ASSERT_EQ(w.rows.size(), s.manifest.rows.size());
  for (size_t i = 0; i < w.rows.size(); ++i) {
    EXPECT_EQ(w.rows[i].text, s.manifest.rows[i].text) << i;
    EXPECT_EQ(w.rows[i].label, s.manifest.rows[i].label) << i;
    EXPECT_TRUE(w.rows[i].image_blob.present());
    EXPECT_NE(w.rows[i].image.find(".tar:"), std::string::npos) << w.rows[i].image;
  }
  std::vector<std::string> texts;
  for (const Example& e : s.manifest.rows) if (!e.text.empty()) texts.push_back(e.text);
  auto tok = train_bpe_tokenizer(texts, 80);
  LoaderConfig c;
  c.batch_size = 4;
  c.workers = 2;
  c.seed = 9;
  c.context = 8;
  c.transform.size = 5;
  c.transform.random_resized_crop = true;
  c.transform.hflip = true;
  for (int64_t shards : {1, 2}) {
    c.shards = shards;
    for (int64_t r = 0; r < shards; ++r) {
      c.shard = r;
      const std::vector<Batch> a = batches(s.manifest, tok.get(), c, 13), b = batches(w, tok.get(), c, 13);  // 2+ epochs
      for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].indices, b[i].indices) << i;
        EXPECT_EQ(a[i]["image"].to_vector<float>(), b[i]["image"].to_vector<float>()) << i;
        EXPECT_EQ(a[i]["text"].to_vector<int64_t>(), b[i]["text"].to_vector<int64_t>()) << i;
        EXPECT_EQ(a[i]["label"].to_vector<int64_t>(), b[i]["label"].to_vector<int64_t>()) << i;
      }
    }
  }
  // Packing the same manifest again writes the same bytes.
  pack_webdataset(s.manifest, s.dir.file("again/part-%03d.tar"), 7);
  auto bytes = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(bytes(s.dir.file("shards/part-001.tar")), bytes(s.dir.file("again/part-001.tar")));
}

// A 300-sample shard cut short keeps every sample before the cut (as WebDataset's reader does):
// cut inside a member's data, the sample of that member goes, and so does everything after; cut
// inside a header, the samples before it stay whole; the sample in progress is kept only when it has
// every kind of member the one before it has. Under on_error fail the damage stops the load.
TEST(WebDataset, AShardCutShortKeepsTheSamplesBeforeTheCut) {
  Set s(300);
  pack_webdataset(s.manifest, s.dir.file("one-%d.tar"), 300);
  const std::string whole = s.dir.file("one-0.tar");
  const std::vector<TarMember> members = index_tar(whole);
  ASSERT_EQ(members.size(), 300u * 3 - 2);  // row 3 has no label, row 5 no text
  std::string bytes;
  {
    std::ifstream in(whole, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto member = [&](const std::string& name) {
    auto it = std::find_if(members.begin(), members.end(), [&](const TarMember& m) { return m.name == name; });
    EXPECT_NE(it, members.end()) << name;
    return *it;
  };
  struct Cut { const char* what; int64_t at; size_t kept; bool dropped; };
  const TarMember pgm150 = member("000000150.pgm"), txt150 = member("000000150.txt");
  const std::vector<Cut> cuts = {
      {"inside 150.pgm's data", pgm150.offset + 20, 150, false},
      {"inside 150.pgm's header", pgm150.offset - 512 + 100, 150, false},
      {"inside 150.txt's data", txt150.offset + 5, 150, true},  // 150 has its image but not its text
      {"inside 150.txt's header", txt150.offset - 512 + 300, 150, true},
  };
  for (const Cut& c : cuts) {
    const std::string path = s.dir.file("cut.tar");
    write_file(path, bytes.substr(0, size_t(c.at)));
    WebDatasetReport rep;
    const Manifest m = load_webdataset(path, "skip", &rep);
    ASSERT_EQ(m.rows.size(), c.kept) << c.what << ": " << (rep.cut.empty() ? "" : rep.cut[0]);
    for (size_t i = 0; i < m.rows.size(); ++i) {
      EXPECT_EQ(m.rows[i].text, s.manifest.rows[i].text) << c.what << " " << i;
      EXPECT_EQ(m.rows[i].label, s.manifest.rows[i].label) << c.what << " " << i;
    }
    EXPECT_TRUE(rep.skipped.empty()) << c.what;
    ASSERT_EQ(rep.cut.size(), 1u) << c.what;
    EXPECT_NE(rep.cut[0].find("cut.tar: "), std::string::npos) << rep.cut[0];
    EXPECT_NE(rep.cut[0].find(str_cat("kept the ", c.kept, " samples")), std::string::npos) << rep.cut[0];
    EXPECT_EQ(rep.cut[0].find("dropped the one in progress") != std::string::npos, c.dropped) << rep.cut[0];
    EXPECT_NE(rep.cut[0].find(str_cat("of ", c.at, ";")), std::string::npos) << rep.cut[0];
    // The kept samples decode: their bytes lie before the cut.
    LoaderConfig lc;
    lc.batch_size = int64_t(c.kept);
    lc.workers = 0;
    lc.shuffle = false;
    lc.on_error = "fail";
    Loader l(std::make_shared<const Manifest>(m), nullptr, lc);
    EXPECT_EQ(l.next()->size(), int64_t(c.kept)) << c.what;
    EXPECT_NE(error_of([&] { load_webdataset(path, "fail"); }).find("cut.tar"), std::string::npos) << c.what;
  }
  // Cut at a header boundary (no end-of-archive marker): every sample before it, nothing reported lost.
  write_file(s.dir.file("cut.tar"), bytes.substr(0, size_t(pgm150.offset - 512)));
  WebDatasetReport rep;
  EXPECT_EQ(load_webdataset(s.dir.file("cut.tar"), "skip", &rep).rows.size(), 150u);
}

TEST(WebDataset, BrokenShardsAndMembersAreNamed) {
  Set s(9);
  pack_webdataset(s.manifest, s.dir.file("ok/p-%d.tar"), 3);
  const std::string p0 = s.dir.file("ok/p-0.tar"), p1 = s.dir.file("ok/p-1.tar"), p2 = s.dir.file("ok/p-2.tar");

  // A missing shard; a compressed one; a truncated one; not a tar at all.
  EXPECT_NE(error_of([&] { load_webdataset(s.dir.file("ok/p-{0..3}.tar")); }).find("p-3.tar: no such shard"), std::string::npos);
  ASSERT_EQ(std::system(("gzip -k -c '" + p1 + "' > '" + s.dir.file("gz.tar") + "'").c_str()), 0);
  EXPECT_NE(error_of([&] { index_tar(s.dir.file("gz.tar")); }).find("gzip-compressed shard"), std::string::npos);
  {
    std::ifstream in(p2, std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    write_file(s.dir.file("cut.tar"), all.substr(0, 1800));
    write_file(s.dir.file("junk.tar"), std::string(3000, 'q'));
  }
  const std::string cut = error_of([&] { index_tar(s.dir.file("cut.tar")); });
  EXPECT_NE(cut.find("cut.tar"), std::string::npos) << cut;
  const std::string junk = error_of([&] { index_tar(s.dir.file("junk.tar")); });
  EXPECT_NE(junk.find("junk.tar"), std::string::npos) << junk;

  // on_error skip leaves a broken shard out and lists it; fail stops there.
  fs::copy_file(s.dir.file("cut.tar"), s.dir.file("ok/p-2.tar"), fs::copy_options::overwrite_existing);
  WebDatasetReport rep;
  const Manifest m = load_webdataset(s.dir.file("ok/p-{0..2}.tar"), "skip", &rep);
  EXPECT_EQ(m.rows.size(), 6u);
  ASSERT_EQ(rep.skipped.size(), 1u);
  EXPECT_NE(rep.skipped[0].find("p-2.tar"), std::string::npos) << rep.skipped[0];
  EXPECT_NE(error_of([&] { load_webdataset(s.dir.file("ok/p-{0..2}.tar"), "fail"); }).find("p-2.tar"), std::string::npos);

  // A member whose image bytes are garbage: the loader names shard and member (fail) or skips it.
  const std::vector<TarMember> members = index_tar(p0);
  {
    std::fstream f(p0, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(members[0].offset);
    f << "not an image at all";
  }
  const Manifest bad = load_webdataset(p0);
  LoaderConfig c;
  c.batch_size = 3;
  c.workers = 0;
  c.shuffle = false;
  c.on_error = "fail";
  Loader fail(std::make_shared<const Manifest>(bad), nullptr, c);
  const std::string e = error_of([&] { fail.next(); });
  EXPECT_NE(e.find("p-0.tar:" + members[0].name), std::string::npos) << e;
  c.on_error = "skip";
  Loader skip(std::make_shared<const Manifest>(bad), nullptr, c);
  EXPECT_EQ(skip.next()->size(), 2);
  EXPECT_EQ(skip.skipped(), 1);

  // Two texts under one key, and a label that is not a number.
  TempDir d2;
  write_file(d2.file("src/k/1.txt"), "one");
  write_file(d2.file("src/k/1.json"), "{\"text\": \"two\"}");
  write_file(d2.file("src/k/2.cls"), "seven");
  ASSERT_EQ(std::system(("cd '" + d2.file("src") + "' && tar -cf ../dup.tar k/1.txt k/1.json && tar -cf ../cls.tar k/2.cls").c_str()), 0);
  EXPECT_NE(error_of([&] { load_webdataset(d2.file("dup.tar")); }).find("sample k/1 has two text members"), std::string::npos);
  EXPECT_NE(error_of([&] { load_webdataset(d2.file("cls.tar")); }).find("cls.tar:k/2.cls: a label must be"), std::string::npos);

  // An output pattern without exactly one number field.
  for (const char* pat : {"out.tar", "out-%s.tar", "out-%d-%d.tar"})
    EXPECT_NE(error_of([&] { pack_webdataset(s.manifest, s.dir.file(pat), 3); }).find("shard-number field"), std::string::npos) << pat;
}

}  // namespace
