// Crash safety, with the real `loom` binary in child processes: killed with SIGKILL at random
// moments (many of them inside checkpoint writes, one per step here), a run's latest checkpoint
// always loads, a torn directory is never latest, and resuming to the end gives bitwise the weights
// of a run never interrupted. A checkpoint write that fails (the file-size limit, as a full disk
// does) stops the run with an error naming the file, and the previous checkpoint stays whole.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include "core/safetensors.h"
#include "trainers/checkpoint.h"
#include "tests/trainers/tiny_data.h"

namespace {
using namespace loom;
namespace fs = std::filesystem;

struct Child {
  pid_t pid = -1;
  int status = 0;
};

// Starts `loom args...` with stdout/stderr into `log`; with fsize_limit > 0, under that RLIMIT_FSIZE
// (writes past it fail with EFBIG, SIGXFSZ ignored), standing in for a full disk.
Child spawn(const std::vector<std::string>& args, const fs::path& log, rlim_t fsize_limit = 0) {
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
    if (fsize_limit > 0) {
      signal(SIGXFSZ, SIG_IGN);
      rlimit lim{fsize_limit, fsize_limit};
      setrlimit(RLIMIT_FSIZE, &lim);
    }
    std::vector<char*> argv{const_cast<char*>(LOOM_BINARY)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(LOOM_BINARY, argv.data());
    _exit(127);
  }
  return c;
}

int wait_for(Child& c) {
  waitpid(c.pid, &c.status, 0);
  return WIFEXITED(c.status) ? WEXITSTATUS(c.status) : -WTERMSIG(c.status);
}

std::string recipe(const fs::path& data, int64_t steps) {
  const std::string d = data.string();
  return "name: crash\nseed: 4\nmodel:\n  embed_dim: 16\n"
         "  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 1, heads: 2, drop_path: 0.1}\n"
         "  text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n"
         "tokenizer: {type: bpe, vocab_size: 64}\ntask: {type: contrastive, temperature_init: 0.1}\n"
         "data:\n  train: {manifest: " + d + "/train.jsonl, batch_size: 32, workers: 2,\n"
         "          transform: {random_resized_crop: true, hflip: true}}\n"
         "optim: {type: adamw, lr: 3.0e-3}\nschedule: {type: cosine, warmup_steps: 5}\n"
         "train: {steps: " + std::to_string(steps) + ", checkpoint_every: 1, keep: 3, log_every: 1, threads: 1}\n";
}

TensorMap weights(const fs::path& run) {
  return load_safetensors((run / "checkpoints/latest/model.safetensors").string()).tensors;
}

// The latest checkpoint of a run is whole: every file loads, trainer.json parses.
void expect_latest_whole(const fs::path& run, int trial) {
  const fs::path latest = run / "checkpoints/latest";
  ASSERT_TRUE(fs::is_directory(latest)) << "trial " << trial;
  EXPECT_GE(step_of_dir(fs::canonical(latest).string()), 1) << "trial " << trial << ": latest is " << fs::canonical(latest);
  EXPECT_NO_THROW(load_safetensors((latest / "model.safetensors").string())) << "trial " << trial;
  EXPECT_NO_THROW(load_safetensors((latest / "optimizer.safetensors").string())) << "trial " << trial;
  std::ifstream f(latest / "trainer.json");
  nlohmann::json st;
  EXPECT_NO_THROW(st = nlohmann::json::parse(f)) << "trial " << trial;
}

TEST(Crash, KilledAnywhereResumesBitwise) {
  const fs::path data = loom::testing::make_dataset("sigkill");
  const fs::path yaml = data / "crash.yaml";
  std::ofstream(yaml) << recipe(data, 300);
  const fs::path log = data / "children.log";
  Child straight = spawn({"train", yaml.string(), "--run-dir", (data / "straight").string()}, log);
  ASSERT_EQ(wait_for(straight), 0) << "see " << log;

  const fs::path run = data / "killed";
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> delay_ms(30, 300);
  int kills = 0, torn = 0, trial = 0;
  for (bool finished = false; !finished && trial < 40; ++trial) {
    const bool resume = fs::exists(run / "checkpoints/latest");
    if (!resume) fs::remove_all(run);  // killed before its first checkpoint: start again
    std::vector<std::string> args = resume ? std::vector<std::string>{"train", yaml.string(), "--resume", run.string()}
                                           : std::vector<std::string>{"train", yaml.string(), "--run-dir", run.string()};
    Child c = spawn(args, log);
    const bool kill_it = trial < 8;  // eight kills, then let it finish
    if (kill_it) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
      kill(c.pid, SIGKILL);
    }
    const int rc = wait_for(c);
    if (rc == -SIGKILL) {
      ++kills;
      if (fs::is_directory(run / "checkpoints"))
        for (auto& e : fs::directory_iterator(run / "checkpoints"))
          if (e.path().filename().string().rfind(".tmp-", 0) == 0) ++torn;  // killed inside a checkpoint write
      if (fs::exists(run / "checkpoints/latest")) expect_latest_whole(run, trial);
      continue;
    }
    ASSERT_EQ(rc, 0) << "trial " << trial << ": see " << log;
    finished = true;
  }
  EXPECT_GE(kills, 4);
  std::cerr << "[ crash ] " << kills << " kills, " << torn << " of them inside a checkpoint write; resumed to the end bitwise\n";
  const TensorMap a = weights(data / "straight"), b = weights(run);
  ASSERT_EQ(a.size(), b.size());
  for (auto& [k, t] : a) EXPECT_EQ(t.to_vector<float>(), b.at(k).to_vector<float>()) << k;
  fs::remove_all(data);
}

TEST(Crash, AFailedCheckpointWriteStopsTheRunAndKeepsThePreviousOne) {
  const fs::path data = loom::testing::make_dataset("diskfull");
  const fs::path yaml = data / "r.yaml", log = data / "children.log", run = data / "run";
  std::ofstream(yaml) << recipe(data, 10);
  Child first = spawn({"train", yaml.string(), "--run-dir", run.string(), "train.steps=5"}, log);
  ASSERT_EQ(wait_for(first), 0) << "see " << log;
  const auto optimizer_bytes = fs::file_size(run / "checkpoints/latest/optimizer.safetensors");
  // The limit lets everything but the optimizer state through: the step-6 checkpoint cannot be written.
  fs::remove(log);
  Child full = spawn({"train", yaml.string(), "--resume", run.string()}, log, rlim_t(optimizer_bytes / 2));
  EXPECT_NE(wait_for(full), 0);
  std::ifstream lf(log);
  const std::string out((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
  EXPECT_NE(out.find("optimizer.safetensors"), std::string::npos) << out;
  EXPECT_NE(out.find("File too large"), std::string::npos) << out;
  EXPECT_EQ(step_of_dir(fs::canonical(run / "checkpoints/latest").string()), 5);
  expect_latest_whole(run, 0);
  EXPECT_FALSE(fs::exists(checkpoint_dir(run.string(), 6)));
  // With room again it resumes from step 5 and ends as a run never interrupted.
  Child again = spawn({"train", yaml.string(), "--resume", run.string()}, log);
  ASSERT_EQ(wait_for(again), 0) << "see " << log;
  Child straight = spawn({"train", yaml.string(), "--run-dir", (data / "straight").string()}, log);
  ASSERT_EQ(wait_for(straight), 0) << "see " << log;
  const TensorMap a = weights(data / "straight"), b = weights(run);
  for (auto& [k, t] : a) EXPECT_EQ(t.to_vector<float>(), b.at(k).to_vector<float>()) << k;
  fs::remove_all(data);
}

}  // namespace
