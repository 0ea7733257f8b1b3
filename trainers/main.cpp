// The loom command line: train, eval, bench.
#include <unistd.h>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>
#include "data/webdataset.h"
#include "core/stream.h"
#include "trainers/check.h"
#include "trainers/data_stats.h"
#include "trainers/embed.h"
#include "trainers/pretrained.h"
#include "trainers/trainer.h"

using namespace loom;

namespace {

const char* kUsage = R"(usage: loom <command> [options]

commands:
  train RECIPE [key.path=value ...] [--resume RUN_DIR] [--run-dir DIR] [--check]
        Train from a YAML recipe. Overrides change any recipe key. The run directory (default
        runs/<name>) receives recipe.yaml, tokenizer.json, metrics.jsonl and checkpoints/.
        --resume RUN_DIR continues that run from checkpoints/latest, bitwise as if uninterrupted.
        --check validates the recipe, builds the model and each stage's task, runs one forward pass
        of each on a random batch of the data's shapes, and prints a summary; no step, nothing
        written. Data files not on this machine are listed rather than fatal.
  eval RECIPE (--checkpoint DIR | --random-init) [key.path=value ...]
        The evaluation of the recipe's last stage (zero-shot and retrieval for contrastive, loss for
        mae) and the linear probe / k-NN of eval.probe, of a checkpoint or, with --random-init, of the
        model as initialised from the seed (a baseline); e.g. eval.probe.features=pixels probes raw pixels,
        eval.zeroshot.templates='["a picture of a {}."]' tries other prompts.
  bench RECIPE [--steps N] [--profile] [--in-memory] [key.path=value ...]
        Training throughput (samples/s) of the recipe's model on its data, after 3 warm-up steps.
        --in-memory trains every timed step on one batch held in memory (as the PyTorch scripts in
        scripts/bench/ do) instead of loading and decoding each batch on the same cores.
        --profile adds a table of the time per step of each op (forward, and backward per gradient
        rule) and each kernel, calls, bytes allocated and share of the step.
  embed RECIPE --checkpoint DIR --input MANIFEST --out FILE [--kind image|audio|text]
        Embeds every row of a manifest with a trained CLIP/CLAP: its images or audio clips (the
        default when it has them) or its texts, into a safetensors file of L2-normalised
        "embeddings" [N, E] and manifest "rows" [N] (FAISS or numpy read it as it is).
  retrieve RECIPE --checkpoint DIR --index FILE (--text TEXT | --image PATH | --audio PATH) [--k 10]
        The index rows most similar to the query (embedded with the other tower), best first:
        rank, score, manifest row, label and the row's text or file.
  export --format hf-clip|hf-bert CHECKPOINT OUT_DIR [--recipe RECIPE]
        Writes a checkpoint's model in Hugging Face's layout: OUT_DIR/model.safetensors and
        config.json (and its tokenizer.json when it is a Hugging Face one), loadable with transformers'
        CLIPModel / BertModel. hf-bert exports the text tower (model.text.type: bert). The recipe is
        the run's recipe.yaml (CHECKPOINT/../../recipe.yaml) unless --recipe names one.
  data pack MANIFEST OUT_PATTERN [--per-shard N]
        Writes a JSONL manifest's rows as WebDataset tar shards of N samples (default 10000), e.g.
        OUT_PATTERN data/shards/train-%06d.tar; a recipe reads them with data.NAME.shards:
        "data/shards/train-{000000..000005}.tar" (printed), giving the same batches as the manifest.
  stats RECIPE [--data NAME] [--samples N] [key.path=value ...]
        Mean and standard deviation of data.NAME's (default train) audio fbank or image channels as
        training sees them before normalisation, over its first N rows (default all): the values for
        data.NAME.audio.mean/std and data.NAME.transform.mean/std.

Run 'loom <command> --help' for a command's options.
)";

struct Args {
  std::string command, recipe, resume, run_dir, checkpoint, data = "train";
  std::string input, out, kind, index, query_kind, query, format, recipe_file;
  std::vector<std::string> positional;  // after RECIPE (loom export's OUT_DIR)
  std::vector<std::string> overrides;
  int64_t steps = 20, samples = 0, k = 10, per_shard = 10000;
  bool help = false, random_init = false, check = false, profile = false, in_memory = false;
};

int64_t int_value(const char* flag, const std::string& v) {
  size_t used = 0;
  int64_t n = -1;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
  }
  if (used != v.size() || n < 0) throw Error(str_cat(flag, " needs a whole number >= 0, got '", v, "'"));
  return n;
}

Args parse(int argc, char** argv) {
  Args a;
  a.command = argv[1];
  if (a.command == "--help" || a.command == "-h" || a.command == "help") { a.help = true; a.command.clear(); return a; }
  for (int i = 2; i < argc; ++i) {
    std::string s = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) throw Error(str_cat(flag, " needs a value"));
      return argv[++i];
    };
    if (s == "--help" || s == "-h") a.help = true;
    else if (s == "--resume") a.resume = value("--resume");
    else if (s == "--run-dir") a.run_dir = value("--run-dir");
    else if (s == "--checkpoint") a.checkpoint = value("--checkpoint");
    else if (s == "--random-init") a.random_init = true;
    else if (s == "--steps") a.steps = int_value("--steps", value("--steps"));
    else if (s == "--per-shard") a.per_shard = int_value("--per-shard", value("--per-shard"));
    else if (s == "--check") a.check = true;
    else if (s == "--profile") a.profile = true;
    else if (s == "--in-memory") a.in_memory = true;
    else if (s == "--input") a.input = value("--input");
    else if (s == "--out") a.out = value("--out");
    else if (s == "--kind") a.kind = value("--kind");
    else if (s == "--index") a.index = value("--index");
    else if (s == "--k") a.k = int_value("--k", value("--k"));
    else if (s == "--text" || s == "--image" || s == "--audio") {
      if (!a.query_kind.empty()) throw Error("loom retrieve: give one query (--text, --image or --audio)");
      a.query_kind = s.substr(2);
      a.query = value(s.c_str());
    }
    else if (s == "--data") a.data = value("--data");
    else if (s == "--format") a.format = value("--format");
    else if (s == "--recipe") a.recipe_file = value("--recipe");
    else if (s == "--samples") a.samples = int_value("--samples", value("--samples"));
    else if (s.rfind("--", 0) == 0) throw Error(str_cat("unknown option ", s, " (see loom ", a.command, " --help)"));
    else if (s.find('=') != std::string::npos) a.overrides.push_back(s);
    else if (a.recipe.empty()) a.recipe = s;
    else if ((a.command == "export" && a.positional.empty()) || (a.command == "data" && a.positional.size() < 2))
      a.positional.push_back(s);
    else throw Error(str_cat("unexpected argument '", s, "' (overrides look like key.path=value)"));
  }
  return a;
}

Config load_recipe(const Args& a) {
  if (a.recipe.empty()) throw Error(str_cat("loom ", a.command, ": missing RECIPE (see loom ", a.command, " --help)"));
  Config c = Config::load(a.recipe);
  for (const auto& o : a.overrides) c.apply_override(o);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  std::shared_ptr<loom::distributed::Communicator> comm;
  try {
    if (argc < 2) {  // no command: a usage error
      std::cerr << kUsage;
      return 2;
    }
    a = parse(argc, argv);
    if (a.help || a.command.empty()) {
      std::cout << kUsage;
      return 0;
    }
    if (a.command != "train" && a.command != "eval" && a.command != "bench" && a.command != "stats" &&
        a.command != "embed" && a.command != "retrieve" && a.command != "export" && a.command != "data")
      throw Error(str_cat("unknown command '", a.command, "'\n", kUsage));
    if ((a.in_memory || a.profile) && a.command != "bench")
      throw Error(str_cat(a.in_memory ? "--in-memory" : "--profile", " is an option of loom bench, not of loom ", a.command));
    if (a.command == "data") {
      if (a.recipe != "pack" || a.positional.size() != 2)
        throw Error("usage: loom data pack MANIFEST OUT_PATTERN [--per-shard N]");
      const data::Manifest m = data::Manifest::load(a.positional[0]);
      const data::PackReport rep = data::pack_webdataset(m, a.positional[1], a.per_shard);
      // The brace pattern naming exactly these shards, for data.NAME.shards.
      const std::string& p = a.positional[1];
      const size_t pct = p.find('%'), d = p.find('d', pct);
      const std::string head = p.substr(0, pct), tail = p.substr(d + 1);
      const std::string first = rep.shards.front().substr(head.size(), rep.shards.front().size() - head.size() - tail.size());
      const std::string last = rep.shards.back().substr(head.size(), rep.shards.back().size() - head.size() - tail.size());
      std::cout << "loom data pack: " << rep.samples << " samples of " << a.positional[0] << " in " << rep.shards.size()
                << " shards; read them with\n  shards: \"" << head
                << (rep.shards.size() == 1 ? first : str_cat("{", first, "..", last, "}")) << tail << "\"\n";
      return 0;
    }
    if (a.command == "export") {
      if (a.format.empty() || a.recipe.empty() || a.positional.size() != 1)
        throw Error("usage: loom export --format hf-clip|hf-bert CHECKPOINT OUT_DIR [--recipe RECIPE]");
      if (a.format != "hf-clip" && a.format != "hf-bert")
        throw Error(str_cat("loom export: unknown --format '", a.format, "' (hf-clip or hf-bert)"));
      export_checkpoint(a.recipe, a.recipe_file, a.format, a.positional[0]);
      const bool tokenizer = std::filesystem::exists(std::filesystem::path(a.positional[0]) / "tokenizer.json");
      std::cout << "loom export: " << a.format << " -> " << a.positional[0] << "/model.safetensors, config.json"
                << (tokenizer ? ", tokenizer.json" : "") << "\n";
      return 0;
    }
    if (a.check && a.command != "train") throw Error("--check belongs to loom train");
    Config c = load_recipe(a);
    if (a.check) c.allow_missing_files();
    Recipe r = Recipe::from(c);  // validates everything before any work

    if (a.command == "embed" || a.command == "retrieve") {
      if (a.checkpoint.empty()) throw Error(str_cat("loom ", a.command, ": give --checkpoint DIR"));
      const Embedder embedder(r, a.checkpoint);
      if (a.command == "embed") {
        if (a.input.empty() || a.out.empty()) throw Error("loom embed: give --input MANIFEST and --out FILE");
        const Embeddings e = embedder.embed_manifest(a.input, a.kind, true);
        save_embeddings(a.out, e);
        std::cout << "loom embed: " << e.rows.size() << " " << e.kind << " embeddings of " << e.vectors.size(1)
                  << " dims -> " << a.out << "\n";
      } else {
        if (a.index.empty() || a.query_kind.empty())
          throw Error("loom retrieve: give --index FILE and a query (--text, --image or --audio)");
        const Embeddings e = load_embeddings(a.index);
        const data::Manifest m = e.manifest.empty() || !std::filesystem::exists(e.manifest)
                                     ? data::Manifest{}
                                     : data::Manifest::load(e.manifest);
        int rank = 0;
        for (const Hit& h : top_k(e, embedder.embed_query(a.query_kind, a.query), a.k)) {
          std::cout << ++rank << "\t" << h.score << "\trow " << h.row;
          if (h.row < int64_t(m.rows.size())) {
            const data::Example& x = m.rows[size_t(h.row)];
            std::cout << "\tlabel " << x.label << "\t" << (e.kind == "text" ? x.text : (x.image.empty() ? x.audio : x.image));
          }
          std::cout << "\n";
        }
      }
    } else if (a.check) {
      std::cout << check_recipe(r, c);
    } else if (a.command == "stats") {
      for (const InputStats& s : input_stats(r, a.data, a.samples)) {
        auto list = [](const std::vector<double>& v) {
          std::string out;
          for (double x : v) out += (out.empty() ? "" : ", ") + str_cat(x);
          return v.size() == 1 ? out : "[" + out + "]";
        };
        const std::string at = s.key == "audio" ? "audio" : "transform";
        std::cout << "data." << a.data << "." << s.key << ": " << s.examples << " examples, " << s.values << " values"
                  << (s.skipped ? str_cat(", ", s.skipped, " unreadable skipped") : std::string()) << "\n"
                  << "  data." << a.data << "." << at << ".mean: " << list(s.mean) << "\n"
                  << "  data." << a.data << "." << at << ".std: " << list(s.std) << "\n";
      }
    } else if (a.command == "train") {
      const bool resume = !a.resume.empty();
      std::string dir = resume ? a.resume : (a.run_dir.empty() ? (std::filesystem::path("runs") / r.name).string() : a.run_dir);
      comm = distributed::from_launcher();  // several processes when started by mpirun or srun
      Trainer t(r, c, dir, resume, comm);
      t.train();
      if (comm->rank() == 0)
        std::cout << "loom: done. checkpoint: " << dir << "/checkpoints/latest  metrics: " << dir << "/metrics.jsonl\n";
    } else if (a.command == "eval") {
      if (a.checkpoint.empty() == !a.random_init) throw Error("loom eval: give --checkpoint DIR or --random-init");
      Metrics m = evaluate_recipe(r, a.checkpoint);
      if (m.empty()) throw Error(str_cat(a.recipe, ": nothing to evaluate (set eval.zeroshot, eval.retrieval or eval.probe, and data.eval)"));
      for (auto& [k, v] : m) std::cout << k << " = " << v << "\n";
    } else {
      comm = distributed::from_launcher();
      Tensor id = Tensor::from(std::vector<int64_t>{int64_t(::getpid())}, {1});
      comm->broadcast(id, 0);  // one scratch directory for all ranks: rank 0's
      const std::string dir = (std::filesystem::temp_directory_path() / ("loom-bench-" + std::to_string(id.to_vector<int64_t>()[0]))).string();
      double sps;
      std::string profile;
      Trainer::BenchTimes times;
      {
        Trainer t(r, c, dir, false, comm);
        sps = t.bench(a.steps, 3, a.profile ? &profile : nullptr, &times, a.in_memory);
      }
      comm->barrier();
      if (comm->rank() != 0) return 0;
      std::filesystem::remove_all(dir);
      std::cout << "loom bench " << r.name << ": " << sps << " samples/s (batch " << r.data.at(r.stages[0].data).batch_size << ", "
                << a.steps << " steps; " << (a.in_memory ? "one batch in memory" : "batches from the loader") << "; "
                << (r.device == "cuda" ? str_cat("cuda ", r.precision, ", attention ", r.attention_kernel, ", gemm ",
                                                 r.gemm_kernel)
                                       : str_cat("CPU f32 GEMM: ", cpu_gemm_library()))
                << ")\n";
      std::cout << "  per step: " << times.step_ms << " ms, backward " << times.backward_ms << " ms";
      if (comm->world() > 1)
        std::cout << " (with the gradient all-reduce over " << comm->world() << " processes: " << times.comm_bytes
                  << " bytes in " << times.buckets << " buckets, " << times.comm_wait_ms << " ms waited for after backward"
                  << (r.overlap_comm ? "" : "; train.overlap_comm false") << ")";
      if (times.peak_allocated > 0)
        std::cout << "; GPU memory peak " << double(times.peak_allocated) / double(1 << 30) << " GiB allocated, "
                  << double(times.peak_reserved) / double(1 << 30) << " GiB reserved";
      std::cout << "\n";
      if (a.profile) std::cout << "\n" << profile;
    }
    return 0;
  } catch (const std::exception& e) {
    if (comm && comm->world() > 1) {
      // The other ranks may be waiting in a collective for this one: end them all.
      std::cerr << "loom: error (rank " << comm->rank() << " of " << comm->world() << "): " << e.what() << std::endl;
      comm->abort(1);
    }
    std::cerr << "loom: error: " << e.what() << "\n";
    return 1;
  }
}
