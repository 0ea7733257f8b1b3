#include "trainers/checkpoint.h"
#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace loom {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
// fsync a file or directory by path (a directory's entry list is what makes a rename durable).
void sync_path(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY);
  LOOM_CHECK(fd >= 0, "cannot open ", p.string(), " to sync it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  LOOM_CHECK(rc == 0, "fsync of ", p.string(), " failed: ", std::strerror(err));
}

}  // namespace

int64_t step_of_dir(const std::string& path) {
  const std::string n = fs::path(path).filename().string();
  if (n.rfind("step_", 0) != 0 || n.size() == 5 || n.find_first_not_of("0123456789", 5) != std::string::npos) return -1;
  return std::stoll(n.substr(5));
}

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
  return (fs::path(run_dir) / "checkpoints" / name).string();
}

void write_checkpoint(const std::string& run_dir, int64_t step, const TensorMap& model, const TensorMap& optimizer,
                      const data::TextTokenizer* tokenizer, const json& state) {
  const fs::path final_dir = checkpoint_dir(run_dir, step);
  const fs::path tmp = final_dir.parent_path() / (".tmp-" + final_dir.filename().string());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  save_safetensors((tmp / "model.safetensors").string(), model, {{"format", "pt"}, {"step", std::to_string(step)}});
  save_safetensors((tmp / "optimizer.safetensors").string(), optimizer, {{"step", std::to_string(step)}});
  if (tokenizer) tokenizer->save((tmp / "tokenizer.json").string());
  {
    std::ofstream f(tmp / "trainer.json");
    f << state.dump(2) << "\n";
    f.close();
    LOOM_CHECK(f, "writing ", (tmp / "trainer.json").string(), " failed");
  }
  // Every file and the directory reach the disk before the rename makes the checkpoint visible, and
  // the rename reaches the disk before `latest` points at it.
  for (auto& e : fs::directory_iterator(tmp)) sync_path(e.path());
  sync_path(tmp);
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);  // the checkpoint appears whole or not at all
  sync_path(final_dir.parent_path());
  const fs::path link = final_dir.parent_path() / "latest", link_tmp = final_dir.parent_path() / ".latest.tmp";
  fs::remove(link_tmp);
  fs::create_directory_symlink(final_dir.filename(), link_tmp);
  fs::rename(link_tmp, link);
  sync_path(final_dir.parent_path());
}

void prune_checkpoints(const std::string& run_dir, int64_t keep) {
  if (keep <= 0) return;
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  const fs::path latest = fs::read_symlink(dir / "latest", ec).filename();
  std::vector<std::pair<int64_t, fs::path>> steps;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && !e.is_symlink() && step_of_dir(e.path()) >= 0) steps.emplace_back(step_of_dir(e.path()), e.path());
  std::sort(steps.begin(), steps.end());  // by step number, not by name
  for (size_t i = 0; i + size_t(keep) < steps.size(); ++i)
    if (steps[i].second.filename() != latest) fs::remove_all(steps[i].second);
}

void remove_checkpoints_after(const std::string& run_dir, int64_t step) {
  for (auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints"))
    if (e.is_directory() && !e.is_symlink() && step_of_dir(e.path()) > step) fs::remove_all(e.path());
}

LoadReport load_weights(Module& model, const InitFrom& from) {
  const fs::path p = fs::is_directory(from.path) ? fs::path(from.path) / "model.safetensors" : fs::path(from.path);
  SafetensorsFile file = load_safetensors(p.string());
  TensorMap state;
  std::vector<std::pair<std::string, std::string>> rules(from.remap.begin(), from.remap.end());
  std::sort(rules.begin(), rules.end(), [](auto& a, auto& b) { return a.first.size() > b.first.size(); });
  for (auto& [key, t] : file.tensors) {
    std::string k = key;
    for (auto& [old_prefix, new_prefix] : rules)
      if (k.rfind(old_prefix, 0) == 0) { k = new_prefix + k.substr(old_prefix.size()); break; }
    state[k] = t;
  }
  LoadReport rep = model.load_state_dict(state, from.strict);
  std::cerr << "loom: loaded " << state.size() - rep.unexpected.size() << " tensors from " << p.string() << "\n";
  for (auto& k : rep.missing) std::cerr << "loom:   missing (kept its initial value): " << k << "\n";
  for (auto& k : rep.unexpected) std::cerr << "loom:   unexpected (ignored): " << k << "\n";
  return rep;
}

}  // namespace loom
