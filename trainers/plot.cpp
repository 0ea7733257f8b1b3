#include "trainers/plot.h"
#include <cairo.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include "core/error.h"
#include "layers/module.h"

namespace loom {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Metrics that count things rather than measure the model: left out of the default panels.
bool is_count(const std::string& name) {
  for (const char* end : {"/samples", "_clips", "samples_per_s", "skipped", "skipped_steps"})
    if (name.size() >= std::strlen(end) && name.compare(name.size() - std::strlen(end), std::strlen(end), end) == 0) return true;
  return false;
}

struct Rgb {
  double r, g, b;
};
const Rgb kColours[] = {{0.12, 0.47, 0.71}, {1.0, 0.5, 0.05}, {0.17, 0.63, 0.17}, {0.84, 0.15, 0.16},
                        {0.58, 0.4, 0.74},  {0.55, 0.34, 0.29}, {0.89, 0.47, 0.76}, {0.5, 0.5, 0.5}};

std::string tick(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// Round tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, at least `min_step`.
std::vector<double> ticks(double lo, double hi, double min_step = 0) {
  const double span = hi - lo, raw = span / 4;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
  step = std::max(step, min_step);
  std::vector<double> out;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

void text(cairo_t* cr, double x, double y, const std::string& s, double size, double align) {  // align 0 left, 0.5 centre, 1 right
  cairo_set_font_size(cr, size);
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  cairo_move_to(cr, x - align * e.x_advance, y);
  cairo_show_text(cr, s.c_str());
}

void panel(cairo_t* cr, const std::vector<RunCurves>& runs, const std::string& metric, double x0, double y0, double w, double h) {
  const double left = x0 + 62, right = x0 + w - 14, top = y0 + 30, bottom = y0 + h - 34;
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const RunCurves& r : runs) {
    auto it = r.series.find(metric);
    if (it == r.series.end()) continue;
    for (auto [x, y] : it->second) {
      if (!std::isfinite(y)) continue;
      xmin = std::min(xmin, x), xmax = std::max(xmax, x), ymin = std::min(ymin, y), ymax = std::max(ymax, y);
    }
  }
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  text(cr, x0 + w / 2, y0 + 18, metric, 14, 0.5);
  if (!std::isfinite(xmin)) return;  // no finite value in any run
  if (xmax == xmin) xmin -= 1, xmax += 1;
  if (ymax == ymin) ymin -= std::max(1e-6, std::abs(ymin) * 0.05), ymax += std::max(1e-6, std::abs(ymax) * 0.05);
  const double pad = (ymax - ymin) * 0.05;
  ymin -= pad, ymax += pad;
  auto px = [&](double x) { return left + (x - xmin) / (xmax - xmin) * (right - left); };
  auto py = [&](double y) { return bottom - (y - ymin) / (ymax - ymin) * (bottom - top); };
  cairo_set_line_width(cr, 1);
  for (double t : ticks(ymin, ymax)) {  // grid and labels
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, left, py(t)), cairo_line_to(cr, right, py(t)), cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    text(cr, left - 6, py(t) + 4, tick(t), 11, 1);
  }
  for (double t : ticks(xmin, xmax, 1)) {  // steps are whole numbers
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    text(cr, px(t), bottom + 16, str_cat(int64_t(t)), 11, 0.5);
  }
  text(cr, (left + right) / 2, bottom + 30, "step", 11, 0.5);
  cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
  cairo_rectangle(cr, left, top, right - left, bottom - top);
  cairo_stroke(cr);
  for (size_t i = 0; i < runs.size(); ++i) {
    auto it = runs[i].series.find(metric);
    if (it == runs[i].series.end()) continue;
    const Rgb c = kColours[i % std::size(kColours)];
    cairo_set_source_rgb(cr, c.r, c.g, c.b);
    cairo_set_line_width(cr, 1.8);
    bool open = false;
    for (auto [x, y] : it->second) {
      if (!std::isfinite(y)) { open = false; continue; }  // a gap
      if (open) cairo_line_to(cr, px(x), py(y));
      else cairo_move_to(cr, px(x), py(y));
      open = true;
    }
    cairo_stroke(cr);
    if (it->second.size() <= 30)  // sparse series (evaluations): their points as dots
      for (auto [x, y] : it->second)
        if (std::isfinite(y)) cairo_arc(cr, px(x), py(y), 3, 0, 2 * M_PI), cairo_fill(cr);
  }
}

}  // namespace

RunCurves read_curves(const std::string& run_dir) {
  const fs::path file = fs::is_directory(run_dir) ? fs::path(run_dir) / "metrics.jsonl" : fs::path(run_dir);
  std::ifstream in(file);
  LOOM_CHECK(in, "loom plot: cannot read ", file.string());
  RunCurves r;
  r.name = (fs::is_directory(run_dir) ? fs::path(run_dir) : file.parent_path()).lexically_normal().filename().string();
  if (r.name.empty()) r.name = fs::absolute(run_dir).lexically_normal().parent_path().filename().string();
  std::map<std::string, std::map<double, double>> by_step;  // a resumed run's repeated steps: the last line wins
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const std::exception&) {
      continue;  // a torn last line of a run killed while writing
    }
    LOOM_CHECK(j.is_object() && j.contains("step") && j["step"].is_number(), file.string(), ":", lineno,
               ": a metrics line without a step");
    const double step = j["step"].get<double>();
    for (auto& [k, v] : j.items()) {
      if (k == "step" || k == "stage") continue;
      if (v.is_number()) by_step[k][step] = v.get<double>();
      else if (v.is_null()) by_step[k][step] = std::nan("");
    }
  }
  LOOM_CHECK(!by_step.empty(), file.string(), ": no metrics to plot");
  for (auto& [k, points] : by_step) r.series[k].assign(points.begin(), points.end());
  return r;
}

std::vector<std::string> choose_metrics(const std::vector<RunCurves>& runs, const std::vector<std::string>& wanted, size_t max_panels) {
  std::vector<std::string> all;
  for (const RunCurves& r : runs)
    for (auto& [k, _] : r.series)
      if (std::find(all.begin(), all.end(), k) == all.end()) all.push_back(k);
  std::sort(all.begin(), all.end());
  std::vector<std::string> out;
  auto add = [&](const std::string& k) {
    if (out.size() < max_panels && std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  };
  if (!wanted.empty()) {
    for (const std::string& w : wanted) {
      bool hit = false;
      for (const std::string& k : all)
        if (glob_match(w, k)) add(k), hit = true;
      LOOM_CHECK(hit, "loom plot --metrics: '", w, "' matches no metric of the runs (they have ", all.front(), ", ...)");
    }
    return out;
  }
  for (const std::string& k : all) if (k == "train/loss") add(k);
  for (const std::string& k : all)  // the loss's parts: train/<part>, not the loop's own numbers
    if (k.rfind("train/", 0) == 0 && !is_count(k) && k != "train/lr" && k != "train/grad_norm" && k != "train/logit_scale" &&
        k.rfind("train/logit_scale", 0) != 0)
      add(k);
  for (const std::string& k : all) if (k == "train/lr") add(k);
  for (const std::string& k : all) if (k.rfind("eval/", 0) == 0 && !is_count(k)) add(k);
  return out;
}

void plot_curves(const std::vector<RunCurves>& runs, const std::vector<std::string>& metrics, const std::string& out) {
  LOOM_CHECK(!runs.empty() && !metrics.empty(), "loom plot: nothing to draw");
  const int cols = int(std::min<size_t>(3, metrics.size())), rows = int((metrics.size() + size_t(cols) - 1) / size_t(cols));
  const int pw = 420, ph = 300, legend = 34;
  const int width = cols * pw, height = rows * ph + legend;
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  double x = 16;
  for (size_t i = 0; i < runs.size(); ++i) {  // the legend: one colour per run
    const Rgb c = kColours[i % std::size(kColours)];
    cairo_set_source_rgb(cr, c.r, c.g, c.b);
    cairo_rectangle(cr, x, 12, 22, 4), cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    cairo_set_font_size(cr, 13);
    cairo_text_extents_t e;
    cairo_text_extents(cr, runs[i].name.c_str(), &e);
    text(cr, x + 28, 19, runs[i].name, 13, 0);
    x += 28 + e.x_advance + 24;
  }
  for (size_t i = 0; i < metrics.size(); ++i)
    panel(cr, runs, metrics[i], double(int(i) % cols * pw), double(legend + int(i) / cols * ph), pw, ph);
  cairo_destroy(cr);
  const fs::path target(out), tmp = target.string() + ".tmp";
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const cairo_status_t st = cairo_surface_write_to_png(surface, tmp.c_str());
  cairo_surface_destroy(surface);
  LOOM_CHECK(st == CAIRO_STATUS_SUCCESS, "loom plot: writing ", tmp.string(), " failed: ", cairo_status_to_string(st));
  fs::rename(tmp, target);
}

}  // namespace loom
