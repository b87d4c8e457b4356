#include "sweep/sweep_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/error.h"
#include "plot/loss_plot.h"
#include "report/progress_bar.h"

namespace sparta {

using ojson = nlohmann::ordered_json;

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string short_label(const std::vector<SweepSetting>& settings) {
  std::string s;
  for (const auto& [k, v] : settings) {
    if (!s.empty()) s += ' ';
    s += sweep_short_key(k);
    s += '=';
    s += v;
  }
  return s;
}

bool finite(double v) { return std::isfinite(v); }

ojson num_or_null(double v) { return finite(v) ? ojson(v) : ojson(nullptr); }

double num_from(const ojson& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return kSweepNaN;
  return j[key].get<double>();
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

}  // namespace

// ---------------------------------------------------------------- settings

// The last part of a key: "model.dsa.top_k" -> "top_k". Today's key names
// are unique without their section; should two ever clash, only labels
// become ambiguous (folder names keep their index, tooltips the full key).
std::string sweep_short_key(const std::string& key) {
  size_t dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
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

ojson sweep_settings_json(const std::vector<SweepSetting>& settings) {
  ojson s = ojson::object();
  for (const auto& [k, v] : settings) s[k] = v;
  return s;
}

// ---------------------------------------------------------------- records

std::string sweep_record_json(const SweepRecord& r) {
  ojson j;
  j["index"] = r.index;
  j["run"] = r.folder;
  j["settings"] = sweep_settings_json(r.settings);
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
  if (r.same_as > 0) j["same_as"] = r.same_as;
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
    if (j.contains("same_as")) r.same_as = j["same_as"].get<int64_t>();
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
    if (!r.ok || r.same_as > 0 || !finite(metric_value(r, metric))) continue;
    if (best < 0 || better(r, records[static_cast<size_t>(best)])) best = static_cast<int64_t>(i);
  }
  return best;
}

std::vector<bool> pareto_front(const std::vector<SweepRecord>& records, SweepMetric metric) {
  const bool higher = metric == SweepMetric::ValAccuracy;
  auto usable = [&](const SweepRecord& r) {
    return r.ok && r.same_as == 0 && finite(r.tokens_per_s) && finite(metric_value(r, metric));
  };
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
                  : r.same_as > 0                   ? cat("= #", r.same_as)
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

std::pair<double, double> sweep_quality_range(double lo, double hi) {
  if (lo > hi) std::swap(lo, hi);
  const double pad = 0.08 * (hi - lo);
  lo -= pad, hi += pad;
  const double min_span = 0.02 * std::max(std::fabs(lo), std::fabs(hi));
  if (hi - lo < min_span) {
    const double mid = 0.5 * (lo + hi);
    lo = mid - 0.5 * min_span, hi = mid + 0.5 * min_span;
  }
  return {lo, hi};
}

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
      auto [yl, yh] = sweep_quality_range(ymin, ymax);
      if (ymin >= 0 && yl < 0) yl = 0;
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

// ---------------------------------------------------------------- progress

std::string sweep_run_summary(const SweepRecord& r) {
  std::string s;
  if (!r.task.empty() && finite(r.val_accuracy)) s += "val_accuracy " + fmt("%.3f", r.val_accuracy) + " | ";
  if (finite(r.val_loss)) s += "val_loss " + fmt("%.4f", r.val_loss) + " | ";
  return s + cat("loss ", fmt("%.4f", r.final_loss), " | ", format_count(r.tokens_per_s), " tok/s | ",
                 format_wall(r.wall_s));
}

}  // namespace sparta
