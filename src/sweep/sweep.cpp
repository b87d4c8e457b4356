#include "sweep/sweep.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <new>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/interrupt.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "core/plural.h"
#include "io/atomic_file.h"
#include "io/run_lock.h"
#include "report/progress_bar.h"
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

ojson grid_json(const std::vector<GridAxis>& axes) {
  ojson g = ojson::array();
  for (const GridAxis& a : axes) g.push_back({{"key", a.key}, {"values", a.values}});
  return g;
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
    slug += safe(sweep_short_key(k));
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
  const std::string text = read_config_text(config_file);
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
  plan.equivalence = find_equivalent_runs(plan.configs);
  return plan;
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
    runs.push_back({{"index", r.index}, {"run", r.folder}, {"settings", sweep_settings_json(r.settings)}});
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
  s += cat(" (", count_noun(static_cast<int64_t>(plan.runs.size()), "run"), ", ", records.size(), " done).  \n");
  s += cat("Quality: ", metric_title(metric), ".\n\n");
  if (!plan.equivalence.notes.empty()) {
    // Equivalent runs differ only by rounding and timing noise; they are
    // marked "= #N" and never picked as best.
    for (const std::string& note : plan.equivalence.notes) s += cat("Note: ", note, ".  \n");
    s += "\n";
  }
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

namespace {

// What an existing sweep folder holds, once every refusal has been checked.
struct SweepOutState {
  std::vector<std::string> old_folders;     // run folders of the sweep already in OUT
  std::map<int64_t, SweepRecord> previous;  // its records (--resume only)
};

SweepOutState inspect_sweep_out(const SweepPlan& plan, const SweepOptions& opt) {
  SPARTA_CHECK(!(opt.resume && opt.force), "[sweep] --resume keeps finished runs and --force deletes them; give one");
  SPARTA_CHECK(plan.runs.size() == plan.configs.size(), "[sweep] plan has ", plan.runs.size(), " runs but ",
               plan.configs.size(), " configs");
  const fs::path out = plan.out;
  const fs::path manifest_file = out / "sweep.json", jsonl_file = out / "sweep.jsonl";
  const ojson manifest = manifest_json(plan);
  const bool has_results = fs::exists(manifest_file) || fs::exists(jsonl_file);

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
  return {std::move(old_folders), std::move(previous)};
}

constexpr const char* kLockAdvice = "wait for it or use another --out";

}  // namespace

void check_sweep_out(const SweepPlan& plan, const SweepOptions& opt) {
  std::optional<RunLock> lock;  // a sweep running into OUT refuses a real run, so a dry run too
  if (fs::is_directory(plan.out)) lock.emplace(plan.out, "sweep", kLockAdvice);
  (void)inspect_sweep_out(plan, opt);
}

SweepResult run_sweep(const SweepPlan& plan, const SweepOptions& opt) {
  using clock = std::chrono::steady_clock;
  static SweepReporter silent;
  SweepReporter& report = opt.reporter ? *opt.reporter : silent;
  SPARTA_CHECK(!(opt.resume && opt.force), "[sweep] --resume keeps finished runs and --force deletes them; give one");
  const fs::path out = plan.out;
  std::error_code ec;
  fs::create_directories(out, ec);
  SPARTA_CHECK(!ec, "[sweep] cannot create output folder '", out.string(), "': ", ec.message());
  const RunLock lock(out, "sweep", kLockAdvice);  // held until the sweep ends
  // Everything that can refuse the sweep is decided before the first run.
  auto [old_folders, previous] = inspect_sweep_out(plan, opt);
  const fs::path manifest_file = out / "sweep.json";
  const ojson manifest = manifest_json(plan);

  if (opt.force) {
    for (const std::string& f : old_folders) remove_tree(out / f);
    for (const SweepRun& r : plan.runs) remove_tree(out / r.folder);
    for (const char* f : {"sweep.json", "sweep.jsonl", "sweep.md", "sweep.svg"}) remove_tree(out / f);
  }
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
  // On its own line before the runs (each run's line is written in pieces),
  // for the thread count the runs will use.
  if (!plan.configs.empty()) init_compute_threads(static_cast<int>(plan.configs.front().train.threads));
  // Asked only for a caller that shows it: it is given once per process.
  if (opt.reporter)
    if (const std::string w = machine_load_warning_once(); !w.empty()) report.notice("warning: " + w);
  const auto sweep_t0 = clock::now();
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    const SweepRun& run = plan.runs[i];
    const Config& cfg = plan.configs[i];
    const fs::path dir = out / run.folder;

    // Ctrl-C between runs: every finished run is already in sweep.jsonl.
    if (interrupt_requested())
      throw Interrupted(interrupt_signal(), cat("[sweep] ", interrupt_signal_name(), ": stopped before run ", run.index,
                                                "/", n, "; ", result.trained + result.skipped,
                                                " finished runs are kept in ", out.string()));
    if (finished[i]) {
      result.records.push_back(*finished[i]);
      ++result.skipped;
      report.run_skipped(run, n);
      continue;
    }
    // A half-trained or failed run starts over, so its speed and wall time
    // describe one whole run.
    remove_tree(dir);

    report.run_started(run, n);
    SweepRecord rec;
    rec.index = run.index;
    rec.folder = run.folder;
    rec.settings = run.settings;
    rec.task = cfg.data.task;
    rec.same_as = i < plan.equivalence.same_as.size() ? plan.equivalence.same_as[i] : 0;
    reset_memory_peak();
    const auto t0 = clock::now();
    try {
      TrainOptions topt;
      topt.reporter = report.training();
      const TrainResult tr = run_training(cfg, topt);
      rec.steps = tr.steps;
      rec.final_loss = tr.final_loss;
      if (tr.final_val_loss >= 0) rec.val_loss = tr.final_val_loss;
      rec.tokens_per_s = tr.median_tokens_per_s;
      rec.peak_tracked_bytes = static_cast<int64_t>(tr.peak_tracked_bytes);
      if (!rec.task.empty()) rec.val_accuracy = final_val_accuracy(dir / "metrics.jsonl");
    } catch (const Interrupted&) {
      // The run in progress is dropped (a --resume redoes it from scratch);
      // the finished ones are in sweep.jsonl already.
      report.run_interrupted(run, n);
      throw Interrupted(interrupt_signal(), cat("[sweep] ", interrupt_signal_name(), ": stopped during run ",
                                                run.index, "/", n, "; ", result.trained + result.skipped,
                                                " finished runs are kept in ", out.string()));
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
    report.run_finished(run, n, rec);
    result.records.push_back(std::move(rec));
    save();
  }
  save();
  result.metric = sweep_metric(result.records);
  result.table = sweep_table_markdown(result.records, result.metric);
  report.finished(result, std::chrono::duration<double>(clock::now() - sweep_t0).count());
  return result;
}

}  // namespace sparta