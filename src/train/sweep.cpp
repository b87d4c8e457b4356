#include "train/sweep.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <new>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/memory.h"
#include "io/atomic_file.h"
#include "train/loss_plot.h"
#include "train/progress_bar.h"
#include "train/trainer.h"

namespace sparta {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(ws);
  return s.substr(a, b - a + 1);
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// The last part of a key: "model.dsa.top_k" -> "top_k". Today's key names
// are unique without their section; should two ever clash, only labels
// become ambiguous (folder names keep their index, tooltips the full key).
std::string short_key(const std::string& key) {
  size_t dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

std::string short_label(const std::vector<SweepSetting>& settings) {
  std::string s;
  for (const auto& [k, v] : settings) {
    if (!s.empty()) s += ' ';
    s += short_key(k);
    s += '=';
    s += v;
  }
  return s;
}

bool is_config_key(const std::string& key) {
  for (const std::string& k : config_keys())
    if (k == key) return true;
  return false;
}

// "(known in [model.dsa]: block, window, ...)" or the list of sections.
std::string known_keys_hint(const std::string& key) {
  size_t dot = key.rfind('.');
  std::string section = dot == std::string::npos ? "" : key.substr(0, dot);
  std::string names;
  for (const std::string& k : config_keys()) {
    size_t d = k.rfind('.');
    if (k.substr(0, d) != section) continue;
    if (!names.empty()) names += ", ";
    names += k.substr(d + 1);
  }
  if (names.empty()) return "(sections: model, model.dsa, tokenizer, data, train; docs/config.md lists every key)";
  return "(known in [" + section + "]: " + names + ")";
}

bool finite(double v) { return std::isfinite(v); }

ojson num_or_null(double v) { return finite(v) ? ojson(v) : ojson(nullptr); }

double num_from(const ojson& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return kSweepNaN;
  return j[key].get<double>();
}

ojson grid_json(const std::vector<GridAxis>& axes) {
  ojson g = ojson::array();
  for (const GridAxis& a : axes) g.push_back({{"key", a.key}, {"values", a.values}});
  return g;
}

ojson settings_json(const std::vector<SweepSetting>& settings) {
  ojson s = ojson::object();
  for (const auto& [k, v] : settings) s[k] = v;
  return s;
}

std::string md_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|')
      out += "\\|";
    else if (c == '\n' || c == '\r')
      out += ' ';
    else
      out += c;
  }
  return out;
}


// Sweep runs are often seconds long, so short times keep their decimals.
std::string format_wall(double s) {
  if (!finite(s)) return "-";
  if (s < 10) return fmt("%.2fs", s);
  if (s < 60) return fmt("%.1fs", s);
  return format_duration(s);
}

std::string metric_title(SweepMetric m) {
  switch (m) {
    case SweepMetric::ValAccuracy: return "validation accuracy (higher is better)";
    case SweepMetric::ValLoss: return "validation loss (lower is better)";
    case SweepMetric::TrainLoss: return "final training loss (lower is better)";
  }
  return "";
}

std::string metric_text(const SweepRecord& r, SweepMetric m) {
  double v = metric_value(r, m);
  return cat(metric_name(m), " ", m == SweepMetric::ValAccuracy ? fmt("%.3f", v) : fmt("%.4f", v));
}

}  // namespace

// ---------------------------------------------------------------- grid

GridAxis parse_grid_spec(const std::string& spec) {
  const std::string where = "[sweep] --grid '" + spec + "': ";
  size_t eq = spec.find('=');
  SPARTA_CHECK(eq != std::string::npos, where, "expected KEY=V1,V2,... (e.g. model.dsa.top_k=16,64,256)");
  GridAxis axis;
  axis.key = trim(spec.substr(0, eq));
  SPARTA_CHECK(!axis.key.empty(), where, "no config key before '='");
  SPARTA_CHECK(axis.key != "train.out", where,
               "train.out cannot be swept: each run trains into OUT/<run folder> (choose OUT with --out)");
  SPARTA_CHECK(is_config_key(axis.key), where, "unknown config key '", axis.key, "' ", known_keys_hint(axis.key));
  const std::string list = spec.substr(eq + 1);
  SPARTA_CHECK(!trim(list).empty(), where, "no values after '='");
  size_t start = 0;
  for (int pos = 1;; ++pos) {
    size_t comma = list.find(',', start);
    std::string v = trim(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    SPARTA_CHECK(!v.empty(), where, "value ", pos, " is empty");
    SPARTA_CHECK(std::find(axis.values.begin(), axis.values.end(), v) == axis.values.end(), where, "value '", v,
                 "' is listed twice");
    axis.values.push_back(v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return axis;
}

std::vector<GridAxis> parse_grid(const std::vector<std::string>& specs) {
  SPARTA_CHECK(!specs.empty(), "[sweep] give at least one --grid KEY=V1,V2,... (e.g. --grid model.dsa.top_k=16,64)");
  std::vector<GridAxis> axes;
  for (size_t i = 0; i < specs.size(); ++i) {
    GridAxis a = parse_grid_spec(specs[i]);
    for (size_t j = 0; j < axes.size(); ++j)
      SPARTA_CHECK(axes[j].key != a.key, "[sweep] --grid '", specs[i], "': ", a.key, " is already swept by --grid '",
                   specs[j], "' (give each key once, with all its values)");
    axes.push_back(std::move(a));
  }
  return axes;
}

std::vector<SweepRun> expand_grid(const std::vector<GridAxis>& axes, int64_t max_runs) {
  SPARTA_CHECK(max_runs >= 1, "[sweep] max_runs must be >= 1, got ", max_runs);
  // The count saturates instead of overflowing; past max_runs only "how many" matters.
  int64_t count = 1;
  bool huge = false;
  std::string sizes;
  for (const GridAxis& a : axes) {
    SPARTA_CHECK(!a.values.empty(), "[sweep] grid key ", a.key, " has no values");
    const int64_t n = static_cast<int64_t>(a.values.size());
    if (count > std::numeric_limits<int64_t>::max() / n)
      huge = true;
    else
      count *= n;
    if (!sizes.empty()) sizes += " x ";
    sizes += std::to_string(n);
  }
  SPARTA_CHECK(!huge && count <= max_runs, "[sweep] the grid has ",
               huge ? std::string("more than 9e18") : std::to_string(count), " combinations (", sizes, "); at most ",
               max_runs, " per sweep");
  std::vector<SweepRun> runs(static_cast<size_t>(count));
  for (int64_t c = 0; c < count; ++c) {
    SweepRun& r = runs[static_cast<size_t>(c)];
    r.index = c + 1;
    r.settings.resize(axes.size());
    // Mixed-radix digits of c with the last axis least significant.
    int64_t rest = c;
    for (size_t a = axes.size(); a-- > 0;) {
      const int64_t n = static_cast<int64_t>(axes[a].values.size());
      r.settings[a] = {axes[a].key, axes[a].values[static_cast<size_t>(rest % n)]};
      rest /= n;
    }
    r.folder = run_folder_name(r.index, count, r.settings);
  }
  return runs;
}

std::string sweep_slug(const std::vector<SweepSetting>& settings) {
  auto safe = [](const std::string& s) {
    std::string o;
    for (char c : s) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-';
      o += ok ? c : '_';
    }
    return o;
  };
  std::string slug;
  for (const auto& [k, v] : settings) {
    if (!slug.empty()) slug += '+';
    slug += safe(short_key(k));
    slug += '-';
    slug += safe(v);
  }
  if (slug.empty()) return "base";
  if (slug.size() > 96) slug.resize(96);  // the index prefix keeps truncated names unique
  return slug;
}

std::string run_folder_name(int64_t index, int64_t total, const std::vector<SweepSetting>& settings) {
  int width = 2;
  for (int64_t t = total; t >= 100; t /= 10) ++width;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*lld", width, static_cast<long long>(index));
  return std::string(buf) + "-" + sweep_slug(settings);
}

std::string sweep_label(const std::vector<SweepSetting>& settings) {
  std::string s;
  for (const auto& [k, v] : settings) {
    if (!s.empty()) s += ' ';
    s += k;
    s += '=';
    s += v;
  }
  return s;
}

std::vector<std::string> sweep_overrides(const std::vector<SweepSetting>& settings) {
  std::vector<std::string> o;
  for (const auto& [k, v] : settings) o.push_back(k + "=" + v);
  return o;
}

// ---------------------------------------------------------------- plan

SweepPlan plan_sweep(const fs::path& config_file, const std::vector<std::string>& grid_specs,
                     const std::vector<std::string>& sets, const fs::path& out) {
  SweepPlan plan;
  plan.config_file = config_file;
  plan.sets = sets;
  plan.axes = parse_grid(grid_specs);
  for (const std::string& s : sets) {
    const std::string key = trim(s.substr(0, s.find('=')));
    for (const GridAxis& a : plan.axes)
      SPARTA_CHECK(a.key != key, "[sweep] ", key, " is set by both --set '", s,
                   "' and --grid (sweep it with --grid only)");
  }
  SPARTA_CHECK(fs::is_regular_file(config_file), "[config] config file '", config_file.string(), "' does not exist");
  const std::string text = read_file(config_file);
  const Config base = parse_config(text, config_file.string(), sets);
  plan.base_config = config_to_toml(base);
  plan.runs = expand_grid(plan.axes);
  if (out.empty()) {
    std::string o = base.train.out;
    while (o.size() > 1 && o.back() == '/') o.pop_back();
    plan.out = o + "-sweep";
  } else {
    plan.out = out;
  }
  const int64_t n = static_cast<int64_t>(plan.runs.size());
  for (const SweepRun& r : plan.runs) {
    const std::string where = cat("[sweep] run ", r.index, "/", n, " (", sweep_label(r.settings), "): ");
    std::vector<std::string> overrides = sets;
    for (const std::string& o : sweep_overrides(r.settings)) overrides.push_back(o);
    Config cfg;
    try {
      cfg = parse_config(text, config_file.string(), overrides);
    } catch (const Error& e) {
      throw Error(where + e.what());
    }
    // Checked here, not when the run starts, so a typo in a swept path
    // fails the sweep before hours of other runs.
    const bool is_task = !cfg.data.task.empty();
    const bool needs_text = !is_task || (cfg.tokenizer.kind == "wordpiece" && cfg.tokenizer.vocab_file.empty());
    if (needs_text) {
      SPARTA_CHECK(!cfg.data.train.empty(), where, "data.train is not set (a UTF-8 text file or folder)");
      SPARTA_CHECK(fs::exists(cfg.data.train), where, "data.train '", cfg.data.train, "' does not exist");
    }
    if (cfg.tokenizer.kind == "wordpiece" && !cfg.tokenizer.vocab_file.empty())
      SPARTA_CHECK(fs::is_regular_file(cfg.tokenizer.vocab_file), where, "tokenizer.vocab_file '",
                   cfg.tokenizer.vocab_file, "' does not exist");
    cfg.train.out = (plan.out / r.folder).string();
    plan.configs.push_back(std::move(cfg));
  }
  return plan;
}

// ---------------------------------------------------------------- records

std::string sweep_record_json(const SweepRecord& r) {
  ojson j;
  j["index"] = r.index;
  j["run"] = r.folder;
  j["settings"] = settings_json(r.settings);
  j["status"] = r.ok ? "ok" : "failed";
  if (!r.ok) j["error"] = r.error;
  if (!r.task.empty()) j["task"] = r.task;
  j["steps"] = r.steps;
  j["final_loss"] = num_or_null(r.final_loss);
  j["val_loss"] = num_or_null(r.val_loss);
  if (!r.task.empty()) j["val_accuracy"] = num_or_null(r.val_accuracy);
  j["tokens_per_s"] = num_or_null(r.tokens_per_s);
  j["wall_s"] = num_or_null(r.wall_s);
  j["peak_tracked_bytes"] = r.peak_tracked_bytes;
  return j.dump();
}

SweepRecord sweep_record_from_json(const std::string& line, const std::string& source) {
  try {
    const ojson j = ojson::parse(line);
    SPARTA_CHECK(j.is_object(), "[sweep] ", source, ": a record must be a JSON object");
    for (const char* k : {"index", "run", "settings", "status"})
      SPARTA_CHECK(j.contains(k), "[sweep] ", source, ": record has no '", k, "'");
    SweepRecord r;
    r.index = j["index"].get<int64_t>();
    r.folder = j["run"].get<std::string>();
    for (const auto& [k, v] : j["settings"].items()) r.settings.emplace_back(k, v.get<std::string>());
    const std::string status = j["status"].get<std::string>();
    SPARTA_CHECK(status == "ok" || status == "failed", "[sweep] ", source, ": status must be \"ok\" or \"failed\", got '",
                 status, "'");
    r.ok = status == "ok";
    if (j.contains("error")) r.error = j["error"].get<std::string>();
    if (j.contains("task")) r.task = j["task"].get<std::string>();
    if (j.contains("steps")) r.steps = j["steps"].get<int64_t>();
    r.final_loss = num_from(j, "final_loss");
    r.val_loss = num_from(j, "val_loss");
    r.val_accuracy = num_from(j, "val_accuracy");
    r.tokens_per_s = num_from(j, "tokens_per_s");
    r.wall_s = num_from(j, "wall_s");
    if (j.contains("peak_tracked_bytes")) r.peak_tracked_bytes = j["peak_tracked_bytes"].get<int64_t>();
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat("[sweep] ", source, ": malformed record: ", e.what()));
  }
}

SweepMetric sweep_metric(const std::vector<SweepRecord>& records) {
  bool any_ok = false, all_val = true;
  for (const SweepRecord& r : records) {
    if (!r.task.empty()) return SweepMetric::ValAccuracy;
    if (!r.ok) continue;
    any_ok = true;
    all_val = all_val && finite(r.val_loss);
  }
  return !any_ok || all_val ? SweepMetric::ValLoss : SweepMetric::TrainLoss;
}

double metric_value(const SweepRecord& r, SweepMetric metric) {
  switch (metric) {
    case SweepMetric::ValAccuracy: return r.val_accuracy;
    case SweepMetric::ValLoss: return r.val_loss;
    case SweepMetric::TrainLoss: return r.final_loss;
  }
  return kSweepNaN;
}

const char* metric_name(SweepMetric metric) {
  switch (metric) {
    case SweepMetric::ValAccuracy: return "val_accuracy";
    case SweepMetric::ValLoss: return "val_loss";
    case SweepMetric::TrainLoss: return "final_loss";
  }
  return "";
}

int64_t best_record(const std::vector<SweepRecord>& records, SweepMetric metric) {
  const bool higher = metric == SweepMetric::ValAccuracy;
  // a strictly better than b; equal candidates keep the earlier one.
  auto better = [&](const SweepRecord& a, const SweepRecord& b) {
    const double ma = metric_value(a, metric), mb = metric_value(b, metric);
    if (ma != mb) return higher ? ma > mb : ma < mb;
    if (finite(a.val_loss) && finite(b.val_loss) && a.val_loss != b.val_loss) return a.val_loss < b.val_loss;
    if (finite(a.tokens_per_s) && finite(b.tokens_per_s)) return a.tokens_per_s > b.tokens_per_s;
    return false;
  };
  int64_t best = -1;
  for (size_t i = 0; i < records.size(); ++i) {
    const SweepRecord& r = records[i];
    if (!r.ok || !finite(metric_value(r, metric))) continue;
    if (best < 0 || better(r, records[static_cast<size_t>(best)])) best = static_cast<int64_t>(i);
  }
  return best;
}

std::vector<bool> pareto_front(const std::vector<SweepRecord>& records, SweepMetric metric) {
  const bool higher = metric == SweepMetric::ValAccuracy;
  auto usable = [&](const SweepRecord& r) { return r.ok && finite(r.tokens_per_s) && finite(metric_value(r, metric)); };
  // q: quality with "larger is better" for both metrics.
  auto q = [&](const SweepRecord& r) { return higher ? metric_value(r, metric) : -metric_value(r, metric); };
  std::vector<bool> front(records.size(), false);
  for (size_t i = 0; i < records.size(); ++i) {
    if (!usable(records[i])) continue;
    bool dominated = false;
    for (size_t j = 0; j < records.size() && !dominated; ++j) {
      if (j == i || !usable(records[j])) continue;
      const SweepRecord &a = records[j], &b = records[i];
      dominated = a.tokens_per_s >= b.tokens_per_s && q(a) >= q(b) && (a.tokens_per_s > b.tokens_per_s || q(a) > q(b));
    }
    front[i] = !dominated;
  }
  return front;
}

std::string sweep_table_markdown(const std::vector<SweepRecord>& records, SweepMetric metric) {
  // Grid keys in order of first appearance (every record of a sweep has the same ones).
  std::vector<std::string> keys;
  for (const SweepRecord& r : records)
    for (const auto& kv : r.settings)
      if (std::find(keys.begin(), keys.end(), kv.first) == keys.end()) keys.push_back(kv.first);
  const bool task = metric == SweepMetric::ValAccuracy;
  std::vector<std::string> head = {"#"};
  std::vector<bool> right = {true};
  for (const std::string& k : keys) head.push_back(k), right.push_back(false);
  for (const char* h : {"steps", "loss", task ? "val_loss (answer)" : "val_loss"}) head.push_back(h), right.push_back(true);
  if (task) head.push_back("val_acc"), right.push_back(true);
  for (const char* h : {"tok/s", "wall", "peak MiB"}) head.push_back(h), right.push_back(true);
  head.push_back("note"), right.push_back(false);

  const int64_t best = best_record(records, metric);
  const std::vector<bool> front = pareto_front(records, metric);
  auto num = [](double v, const char* f) { return finite(v) ? fmt(f, v) : std::string("-"); };
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < records.size(); ++i) {
    const SweepRecord& r = records[i];
    std::vector<std::string> row = {std::to_string(r.index)};
    for (const std::string& k : keys) {
      std::string v = "-";
      for (const auto& kv : r.settings)
        if (kv.first == k) v = kv.second;
      row.push_back(md_escape(v));
    }
    row.push_back(r.ok ? std::to_string(r.steps) : "-");
    row.push_back(num(r.final_loss, "%.4f"));
    row.push_back(num(r.val_loss, "%.4f"));
    if (task) row.push_back(num(r.val_accuracy, "%.3f"));
    row.push_back(finite(r.tokens_per_s) ? format_count(r.tokens_per_s) : "-");
    row.push_back(format_wall(r.wall_s));
    row.push_back(r.ok ? fmt("%.1f", static_cast<double>(r.peak_tracked_bytes) / (1 << 20)) : "-");
    row.push_back(!r.ok                             ? md_escape("failed: " + r.error)
                  : static_cast<int64_t>(i) == best ? "**best**"
                  : front[i]                        ? "pareto"
                                                    : "");
    rows.push_back(std::move(row));
  }
  std::vector<size_t> width(head.size(), 3);
  for (size_t c = 0; c < head.size(); ++c) {
    width[c] = std::max(width[c], head[c].size());
    for (const auto& row : rows) width[c] = std::max(width[c], row[c].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s = "|";
    for (size_t c = 0; c < cells.size(); ++c) {
      const std::string pad(width[c] - cells[c].size(), ' ');
      s += ' ';
      s += right[c] ? pad + cells[c] : cells[c] + pad;
      s += " |";
    }
    return s + "\n";
  };
  std::string s = line(head);
  s += "|";
  for (size_t c = 0; c < head.size(); ++c) {
    s += ' ';
    s += right[c] ? std::string(width[c] - 1, '-') + ':' : std::string(width[c], '-');
    s += " |";
  }
  s += "\n";
  for (const auto& row : rows) s += line(row);
  return s;
}

// ---------------------------------------------------------------- plot

namespace {

// Chart geometry (SVG user units = px), like loss.svg but with room for labels.
constexpr double kW = 860, kH = 540;
constexpr double kL = 80, kR = 30, kT = 50, kB = 60;
constexpr double kPW = kW - kL - kR, kPH = kH - kT - kB;
constexpr const char* kPointColor = "#1f77b4";
constexpr const char* kBestColor = "#e8710a";
// Label boxes are estimated, not measured (no font metrics in a plain SVG
// writer): 11 px DejaVu Sans averages under 6.6 px per character.
constexpr double kCharW = 6.6, kLabelH = 13, kLabelGap = 8;

std::string num(double v) { return fmt("%.1f", v); }

struct Box {
  double x0, y0, x1, y1;
  bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
};

}  // namespace

std::string sweep_plot_svg(const std::vector<SweepRecord>& records, SweepMetric metric, const std::string& title) {
  struct Point {
    double x, y;
    std::string label, tooltip;
    bool best, front;
  };
  const int64_t best = best_record(records, metric);
  const std::vector<bool> front = pareto_front(records, metric);
  std::vector<Point> pts;
  for (size_t i = 0; i < records.size(); ++i) {
    const SweepRecord& r = records[i];
    const double y = metric_value(r, metric);
    if (!r.ok || !finite(r.tokens_per_s) || !finite(y)) continue;
    std::string tip = cat("#", r.index, " ", sweep_label(r.settings), ": ", metric_text(r, metric), ", ",
                          format_count(r.tokens_per_s), " tok/s");
    pts.push_back({r.tokens_per_s, y, short_label(r.settings), tip, static_cast<int64_t>(i) == best, front[i]});
  }

  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const Point& p : pts) {
    xmin = std::min(xmin, p.x), xmax = std::max(xmax, p.x);
    ymin = std::min(ymin, p.y), ymax = std::max(ymax, p.y);
  }
  // Pad the data range so no point sits on the frame; speeds stay >= 0.
  auto padded = [](double lo, double hi, bool nonneg) {
    const double pad = 0.08 * (hi - lo);
    lo -= pad, hi += pad;
    if (nonneg && lo < 0) lo = 0;
    return std::make_pair(lo, hi);
  };
  AxisTicks xt = nice_ticks(0, 1), yt = nice_ticks(0, 1);
  if (!pts.empty()) {
    auto [xl, xh] = padded(xmin, xmax, xmin >= 0);
    xt = nice_ticks(xl, xh, 7);
    if (metric != SweepMetric::ValAccuracy) {  // accuracy keeps the honest 0..1 axis
      auto [yl, yh] = padded(ymin, ymax, ymin >= 0);
      yt = nice_ticks(yl, yh, 6);
    }
  }
  auto px = [&](double x) { return kL + (x - xt.lo) / (xt.hi - xt.lo) * kPW; };
  auto py = [&](double y) { return kT + kPH - (y - yt.lo) / (yt.hi - yt.lo) * kPH; };

  std::string s;
  s += cat("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", kW,
           "\" height=\"", kH, "\" viewBox=\"0 0 ", kW, " ", kH,
           "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n");
  s += cat("<rect width=\"", kW, "\" height=\"", kH, "\" fill=\"#ffffff\"/>\n");
  s += cat("<text x=\"", num(kL), "\" y=\"28\" font-size=\"16\" font-weight=\"bold\" fill=\"#222\">", xml_escape(title),
           "</text>\n");
  // Legend in the title band (the plot area is for labels).
  {
    const double x = kW - kR - 330;
    s += cat("<g font-size=\"12\" fill=\"#222\">\n<circle cx=\"", num(x), "\" cy=\"24\" r=\"4.5\" fill=\"", kPointColor,
             "\"/>\n<text x=\"", num(x + 10), "\" y=\"28\">run</text>\n<circle cx=\"", num(x + 60),
             "\" cy=\"24\" r=\"6\" fill=\"", kBestColor, "\"/>\n<text x=\"", num(x + 71), "\" y=\"28\">best ",
             metric_name(metric), "</text>\n<line x1=\"", num(x + 200), "\" y1=\"24\" x2=\"", num(x + 226),
             "\" y2=\"24\" stroke=\"#8c8c8c\" stroke-width=\"1.2\" stroke-dasharray=\"5,4\"/>\n<text x=\"",
             num(x + 232), "\" y=\"28\">Pareto front</text>\n</g>\n");
  }

  s += "<g stroke=\"#e6e6e6\" stroke-width=\"1\">\n";
  for (double v : xt.values)
    s += cat("<line x1=\"", num(px(v)), "\" y1=\"", num(kT), "\" x2=\"", num(px(v)), "\" y2=\"", num(kT + kPH), "\"/>\n");
  for (double v : yt.values)
    s += cat("<line x1=\"", num(kL), "\" y1=\"", num(py(v)), "\" x2=\"", num(kL + kPW), "\" y2=\"", num(py(v)), "\"/>\n");
  s += "</g>\n<g fill=\"#444\">\n";
  for (double v : xt.values)
    s += cat("<text x=\"", num(px(v)), "\" y=\"", num(kT + kPH + 18), "\" text-anchor=\"middle\">",
             format_tick(v, xt.step), "</text>\n");
  for (double v : yt.values)
    s += cat("<text x=\"", num(kL - 8), "\" y=\"", num(py(v) + 4), "\" text-anchor=\"end\">", format_tick(v, yt.step),
             "</text>\n");
  s += "</g>\n";
  s += cat("<rect x=\"", num(kL), "\" y=\"", num(kT), "\" width=\"", num(kPW), "\" height=\"", num(kPH),
           "\" fill=\"none\" stroke=\"#555\" stroke-width=\"1\"/>\n");
  s += cat("<text x=\"", num(kL + kPW / 2), "\" y=\"", num(kH - 16),
           "\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222\">training tokens/s (median per run)</text>\n");
  s += cat("<text transform=\"translate(20,", num(kT + kPH / 2),
           ") rotate(-90)\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222\">", metric_title(metric), "</text>\n");
  if (pts.empty())
    s += cat("<text x=\"", num(kL + kPW / 2), "\" y=\"", num(kT + kPH / 2),
             "\" text-anchor=\"middle\" font-size=\"14\" fill=\"#888\">no finished runs yet</text>\n");

  // Labels: the best point first, then the rest in run order; each takes the
  // first candidate spot (right or left of its point, then further up/down)
  // that stays on the canvas and clears every point and earlier label.
  std::vector<size_t> order(pts.size());
  for (size_t i = 0; i < pts.size(); ++i) order[i] = i;
  std::stable_partition(order.begin(), order.end(), [&](size_t i) { return pts[i].best; });
  std::vector<Box> taken;
  for (const Point& p : pts) taken.push_back({px(p.x) - 6, py(p.y) - 6, px(p.x) + 6, py(p.y) + 6});
  const Box canvas{kL + 2, kT + 2, kW - 4, kT + kPH - 2};
  struct Placed {
    double x, y;
    bool anchor_end;
    bool leader;    // label moved away from its point: draw a line to it
    double lx, ly;  // where that line ends
  };
  std::vector<Placed> placed(pts.size());
  for (size_t i : order) {
    const Point& p = pts[i];
    const double cx = px(p.x), cy = py(p.y);
    const double w = kCharW * static_cast<double>(p.label.size());
    bool done = false;
    for (int step = 0; step <= 16 && !done; ++step) {
      const double dy = (step % 2 ? -1.0 : 1.0) * ((step + 1) / 2) * (kLabelH + 1);
      for (int side = 0; side < 2 && !done; ++side) {
        const bool left = side == 1;
        const double x0 = left ? cx - kLabelGap - w : cx + kLabelGap;
        const Box b{x0, cy + dy - 9, x0 + w, cy + dy + 4};
        if (b.x0 < canvas.x0 || b.x1 > canvas.x1 || b.y0 < canvas.y0 || b.y1 > canvas.y1) continue;
        bool free = true;
        for (const Box& t : taken) free = free && !b.overlaps(t);
        if (!free) continue;
        taken.push_back(b);
        placed[i] = {left ? b.x1 : b.x0, cy + dy, left, dy != 0, left ? b.x1 + 1 : b.x0 - 1, cy + dy - 3};
        done = true;
      }
    }
    // No free spot (very crowded chart): beside the point, on whichever side fits.
    if (!done) {
      const bool left = cx + kLabelGap + w > canvas.x1;
      placed[i] = {left ? cx - kLabelGap : cx + kLabelGap, cy + 4, left, false, cx, cy};
    }
  }

  // The Pareto front, fastest-last: the trade-off curve a setting is chosen from.
  std::vector<std::pair<double, double>> fr;
  for (const Point& p : pts)
    if (p.front) fr.emplace_back(px(p.x), py(p.y));
  std::sort(fr.begin(), fr.end());
  if (fr.size() >= 2) {
    s += "<polyline fill=\"none\" stroke=\"#8c8c8c\" stroke-width=\"1.2\" stroke-dasharray=\"5,4\" points=\"";
    for (size_t i = 0; i < fr.size(); ++i) s += cat(i ? " " : "", num(fr[i].first), ",", num(fr[i].second));
    s += "\"/>\n";
  }
  s += "<g stroke=\"#999\" stroke-width=\"0.8\">\n";
  for (size_t i = 0; i < pts.size(); ++i) {
    const double cx = px(pts[i].x), cy = py(pts[i].y);
    if (placed[i].leader)
      s += cat("<line x1=\"", num(cx), "\" y1=\"", num(cy), "\" x2=\"", num(placed[i].lx), "\" y2=\"",
               num(placed[i].ly), "\"/>\n");
  }
  s += "</g>\n";
  for (size_t i = 0; i < pts.size(); ++i) {
    const Point& p = pts[i];
    s += cat("<g>\n<title>", xml_escape(p.tooltip), "</title>\n<circle cx=\"", num(px(p.x)), "\" cy=\"", num(py(p.y)),
             "\" r=\"", p.best ? 6 : 4.5, "\" fill=\"", p.best ? kBestColor : kPointColor,
             "\" stroke=\"#ffffff\" stroke-width=\"1\"/>\n<text x=\"", num(placed[i].x), "\" y=\"", num(placed[i].y),
             "\" font-size=\"11\" fill=\"#222\"", placed[i].anchor_end ? " text-anchor=\"end\"" : "",
             p.best ? " font-weight=\"bold\"" : "", ">", xml_escape(p.label), "</text>\n</g>\n");
  }
  s += "</svg>\n";
  return s;
}

// ---------------------------------------------------------------- driver

namespace {

// The task accuracy of a finished run: the trainer evaluates at the last
// step and writes val_accuracy into that metrics.jsonl line.
double final_val_accuracy(const fs::path& metrics_file) {
  std::ifstream in(metrics_file);
  std::string line;
  double acc = kSweepNaN;
  while (std::getline(in, line)) {
    ojson j = ojson::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("val_accuracy")) acc = j["val_accuracy"].get<double>();
  }
  return acc;
}

ojson manifest_json(const SweepPlan& plan) {
  ojson runs = ojson::array();
  for (const SweepRun& r : plan.runs)
    runs.push_back({{"index", r.index}, {"run", r.folder}, {"settings", settings_json(r.settings)}});
  return {{"version", 1},
          {"config", plan.config_file.string()},
          {"sets", plan.sets},
          {"grid", grid_json(plan.axes)},
          {"base_config", plan.base_config},
          {"runs", runs}};
}

std::string report_markdown(const SweepPlan& plan, const std::vector<SweepRecord>& records, SweepMetric metric) {
  std::string s = cat("# sparta sweep: ", plan.out.filename().string(), "\n\n");
  s += cat("Config `", plan.config_file.string(), "`");
  for (const std::string& o : plan.sets) s += cat(" `--set ", o, "`");
  s += ".  \nGrid:";
  for (size_t i = 0; i < plan.axes.size(); ++i) {
    std::string vals;
    for (const std::string& v : plan.axes[i].values) {
      if (!vals.empty()) vals += ", ";
      vals += v;
    }
    s += cat(i ? ";" : "", " `", plan.axes[i].key, "` = ", vals);
  }
  s += cat(" (", plan.runs.size(), " runs, ", records.size(), " done).  \n");
  s += cat("Quality: ", metric_title(metric), ".\n\n");
  s += sweep_table_markdown(records, metric);
  const int64_t b = best_record(records, metric);
  if (b >= 0) {
    const SweepRecord& r = records[static_cast<size_t>(b)];
    s += cat("\nBest: #", r.index, " `", sweep_label(r.settings), "` (", metric_text(r, metric), ", ",
             format_count(r.tokens_per_s), " tok/s).\n");
  }
  s += "\n![quality versus training speed](sweep.svg)\n";
  return s;
}

void write_outputs(const SweepPlan& plan, const std::vector<SweepRecord>& records) {
  std::string jsonl;
  for (const SweepRecord& r : records) jsonl += sweep_record_json(r) + "\n";
  write_file_atomic(plan.out / "sweep.jsonl", jsonl);
  const SweepMetric metric = sweep_metric(records);
  write_file_atomic(plan.out / "sweep.md", report_markdown(plan, records, metric));
  write_file_atomic(plan.out / "sweep.svg",
                    sweep_plot_svg(records, metric, "sparta sweep: " + plan.out.filename().string()));
}

// "val_loss 2.3107 | loss 2.4012 | 41.2k tok/s | 12s" (task runs lead with val_accuracy).
std::string run_summary(const SweepRecord& r) {
  std::string s;
  if (!r.task.empty() && finite(r.val_accuracy)) s += "val_accuracy " + fmt("%.3f", r.val_accuracy) + " | ";
  if (finite(r.val_loss)) s += "val_loss " + fmt("%.4f", r.val_loss) + " | ";
  return s + cat("loss ", fmt("%.4f", r.final_loss), " | ", format_count(r.tokens_per_s), " tok/s | ",
                 format_wall(r.wall_s));
}

// A grid from sweep.json as the --grid options that made it:
// "--grid model.dsa.top_k=16,64 --grid model.attention=dense,dsa".
std::string grid_text(const ojson& grid) {
  std::string s;
  if (!grid.is_array()) return "unreadable";
  for (const auto& a : grid) {
    if (!a.is_object() || !a.contains("key") || !a.contains("values") || !a["values"].is_array()) return "unreadable";
    if (!s.empty()) s += ' ';
    s += "--grid ";
    s += a["key"].is_string() ? a["key"].get<std::string>() : a["key"].dump();
    s += '=';
    bool first = true;
    for (const auto& v : a["values"]) {
      if (!first) s += ',';
      first = false;
      s += v.is_string() ? v.get<std::string>() : v.dump();
    }
  }
  return s;
}

void remove_tree(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  SPARTA_CHECK(!ec, "[sweep] cannot remove '", p.string(), "': ", ec.message());
}

bool non_empty_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec) && !fs::is_empty(p, ec);
}

// A run folder name from sweep.json is only trusted as a plain child name.
bool plain_name(const std::string& n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos;
}

}  // namespace

SweepResult run_sweep(const SweepPlan& plan, const SweepOptions& opt) {
  using clock = std::chrono::steady_clock;
  SPARTA_CHECK(!(opt.resume && opt.force), "[sweep] --resume keeps finished runs and --force deletes them; give one");
  SPARTA_CHECK(plan.runs.size() == plan.configs.size(), "[sweep] plan has ", plan.runs.size(), " runs but ",
               plan.configs.size(), " configs");
  const fs::path out = plan.out;
  const fs::path manifest_file = out / "sweep.json", jsonl_file = out / "sweep.jsonl";
  const ojson manifest = manifest_json(plan);
  const bool has_results = fs::exists(manifest_file) || fs::exists(jsonl_file);

  // Everything that can refuse the sweep is decided before the first run.
  std::vector<std::string> old_folders;
  std::map<int64_t, SweepRecord> previous;
  if (has_results) {
    SPARTA_CHECK(opt.resume || opt.force, "[sweep] '", out.string(),
                 "' already holds sweep results (sweep.json); pass --resume to continue that sweep, --force to "
                 "delete it and start over, or choose another --out");
    ojson old;
    if (fs::exists(manifest_file)) {
      old = ojson::parse(read_file(manifest_file), nullptr, false);
      const bool usable = !old.is_discarded() && old.is_object() && old.contains("runs") && old["runs"].is_array();
      // --force only needs the run folders, and may start over from a damaged plan.
      SPARTA_CHECK(usable || opt.force, "[sweep] ", manifest_file.string(),
                   " is not a sweep plan; pass --force to start over");
      if (usable) {
        for (const auto& r : old["runs"])
          if (r.is_object() && r.contains("run") && r["run"].is_string() && plain_name(r["run"].get<std::string>()))
            old_folders.push_back(r["run"].get<std::string>());
      } else {
        old = ojson();
      }
    }
    if (opt.resume) {
      SPARTA_CHECK(!old.is_null(), "[sweep] cannot resume '", out.string(),
                   "': it has sweep.jsonl but no sweep.json; pass --force to start over");
      SPARTA_CHECK(old.value("grid", ojson()) == manifest["grid"], "[sweep] cannot resume '", out.string(),
                   "': it holds a sweep of another grid (", grid_text(old.value("grid", ojson())),
                   "); pass --force to start over or choose another --out");
      SPARTA_CHECK(old.value("base_config", ojson()) == manifest["base_config"], "[sweep] cannot resume '",
                   out.string(),
                   "': its runs used another base config (the config file or a --set changed); pass --force to "
                   "start over or choose another --out");
      if (fs::exists(jsonl_file)) {
        std::ifstream in(jsonl_file);
        std::string line;
        for (int64_t n = 1; std::getline(in, line); ++n) {
          if (trim(line).empty()) continue;
          SweepRecord r = sweep_record_from_json(line, cat(jsonl_file.string(), ":", n));
          previous[r.index] = std::move(r);
        }
      }
    }
  }
  for (const SweepRun& r : plan.runs) {
    const bool ours = std::find(old_folders.begin(), old_folders.end(), r.folder) != old_folders.end();
    SPARTA_CHECK(opt.force || ours || !non_empty_dir(out / r.folder), "[sweep] run folder '", (out / r.folder).string(),
                 "' already exists and no sweep in '", out.string(),
                 "' made it; pass --force to replace it or choose another --out");
  }

  if (opt.force) {
    for (const std::string& f : old_folders) remove_tree(out / f);
    for (const SweepRun& r : plan.runs) remove_tree(out / r.folder);
    for (const char* f : {"sweep.json", "sweep.jsonl", "sweep.md", "sweep.svg"}) remove_tree(out / f);
  }
  std::error_code ec;
  fs::create_directories(out, ec);
  SPARTA_CHECK(!ec, "[sweep] cannot create output folder '", out.string(), "': ", ec.message());
  write_file_atomic(manifest_file, manifest.dump(2) + "\n");

  // A run counts as finished when its record says so and its summary exists.
  std::vector<std::optional<SweepRecord>> finished(plan.runs.size());
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    const SweepRun& run = plan.runs[i];
    auto prev = previous.find(run.index);
    if (prev != previous.end() && prev->second.ok && prev->second.folder == run.folder &&
        prev->second.settings == run.settings && fs::exists(out / run.folder / "summary.json"))
      finished[i] = prev->second;
  }
  // The files always list every run known to be done: those of this
  // invocation so far plus finished ones still ahead, so a sweep killed
  // again while resuming loses nothing.
  SweepResult result;
  auto save = [&] {
    std::vector<SweepRecord> all = result.records;
    for (size_t j = result.records.size(); j < finished.size(); ++j)
      if (finished[j]) all.push_back(*finished[j]);
    write_outputs(plan, all);
  };
  const int64_t n = static_cast<int64_t>(plan.runs.size());
  const auto sweep_t0 = clock::now();
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    const SweepRun& run = plan.runs[i];
    const Config& cfg = plan.configs[i];
    const fs::path dir = out / run.folder;
    const std::string prefix = cat("[", run.index, "/", n, "] ", sweep_label(run.settings));

    if (finished[i]) {
      result.records.push_back(*finished[i]);
      ++result.skipped;
      if (opt.log) std::fprintf(opt.log, "%s: finished earlier, skipped\n", prefix.c_str());
      continue;
    }
    // A half-trained or failed run starts over, so its speed and wall time
    // describe one whole run.
    remove_tree(dir);

    const bool verbose = opt.log && opt.train_progress;
    if (opt.log) {
      // Quiet runs get one line, finished when the run ends; verbose ones
      // a line before the trainer's own output and a result line after it.
      std::fprintf(opt.log, verbose ? "%s\n" : "%s ...", prefix.c_str());
      std::fflush(opt.log);
    }
    SweepRecord rec;
    rec.index = run.index;
    rec.folder = run.folder;
    rec.settings = run.settings;
    rec.task = cfg.data.task;
    reset_memory_peak();
    const auto t0 = clock::now();
    try {
      TrainOptions topt;
      topt.progress = verbose;
      const TrainResult tr = run_training(cfg, topt);
      rec.steps = tr.steps;
      rec.final_loss = tr.final_loss;
      if (tr.final_val_loss >= 0) rec.val_loss = tr.final_val_loss;
      rec.tokens_per_s = tr.median_tokens_per_s;
      rec.peak_tracked_bytes = static_cast<int64_t>(tr.peak_tracked_bytes);
      if (!rec.task.empty()) rec.val_accuracy = final_val_accuracy(dir / "metrics.jsonl");
    } catch (const Error& e) {
      rec.ok = false;
      rec.error = e.what();
    } catch (const std::bad_alloc&) {
      rec.ok = false;
      rec.error = "out of memory";
    }
    rec.wall_s = std::chrono::duration<double>(clock::now() - t0).count();
    if (rec.ok) {
      ++result.trained;
    } else {
      ++result.failed;
    }
    if (opt.log) {
      const std::string what = rec.ok ? run_summary(rec) : "failed: " + rec.error;
      if (verbose)
        std::fprintf(opt.log, "%s: %s\n", prefix.c_str(), what.c_str());
      else
        std::fprintf(opt.log, " %s\n", what.c_str());
    }
    result.records.push_back(std::move(rec));
    save();
  }
  save();
  result.metric = sweep_metric(result.records);
  result.table = sweep_table_markdown(result.records, result.metric);
  if (opt.log)
    std::fprintf(opt.log, "sweep: %lld runs (%lld trained, %lld skipped, %lld failed) in %s; results in %s\n",
                 static_cast<long long>(n), static_cast<long long>(result.trained),
                 static_cast<long long>(result.skipped), static_cast<long long>(result.failed),
                 format_duration(std::chrono::duration<double>(clock::now() - sweep_t0).count()).c_str(),
                 (out / "sweep.md").string().c_str());
  return result;
}

}  // namespace sparta
