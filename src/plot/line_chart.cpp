#include "plot/line_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/error.h"
#include "io/atomic_file.h"
#include "plot/loss_plot.h"
#include "plot/svg_frame.h"

namespace sparta {
namespace {

using Points = std::vector<std::pair<double, double>>;
using namespace svg;
// matplotlib's "tab10": distinguishable, and readable on white.
constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
// Larger magnitudes would overflow the axis arithmetic.
constexpr double kMaxMagnitude = 1e300;

bool usable(double v) { return std::isfinite(v) && std::fabs(v) <= kMaxMagnitude; }


// Every m·10^e (m from `mantissas`, e a multiple of decade_step) with
// log10 in [a - decade_step - 1, b + decade_step + 1], ascending.
std::vector<double> log_candidates(double a, double b, const std::vector<double>& mantissas, int decade_step) {
  std::vector<double> v;
  const long e0 = static_cast<long>(std::floor(a)) - decade_step - 1;
  const long e1 = static_cast<long>(std::ceil(b)) + decade_step + 1;
  for (long e = e0; e <= e1; ++e) {
    if (e % decade_step != 0) continue;
    for (double m : mantissas) v.push_back(m * std::pow(10.0, static_cast<double>(e)));
  }
  return v;
}

// Axis range covering [lo, hi] in log10 units, padded by 5% of the span.
std::pair<double, double> padded_log_range(double lo, double hi) {
  const double l0 = std::log10(lo), l1 = std::log10(hi);
  const double pad = std::max(0.05, 0.05 * (l1 - l0));
  return {l0 - pad, l1 + pad};
}

ChartTicks log_ticks_in(double lo, double hi, double a, double b, int max_ticks) {
  const double span = b - a;
  std::vector<double> mantissas = {1};
  int decade_step = 1;
  if (span <= 3) {
    mantissas = {1, 2, 5};
  } else {
    const int decades = static_cast<int>(std::floor(b) - std::ceil(a)) + 1;
    decade_step = std::max(1, (decades + max_ticks - 1) / max_ticks);
  }
  const std::vector<double> cand = log_candidates(a, b, mantissas, decade_step);
  constexpr double eps = 1e-9;  // log10 units
  auto inside = [&](double a_, double b_) {
    std::vector<double> v;
    for (double c : cand)
      if (std::log10(c) >= a_ - eps && std::log10(c) <= b_ + eps) v.push_back(c);
    return v;
  };
  std::vector<double> vals = inside(a, b);
  if (vals.size() < 2) {
    // Widen to the candidates strictly around the data: there are always two.
    double below = cand.front(), above = cand.back();
    for (double c : cand)
      if (std::log10(c) < std::log10(lo) - eps) below = c;
    for (auto it = cand.rbegin(); it != cand.rend(); ++it)
      if (std::log10(*it) > std::log10(hi) + eps) above = *it;
    a = std::min(a, std::log10(below));
    b = std::max(b, std::log10(above));
    vals = inside(a, b);
  }
  ChartTicks t;
  t.lo = std::pow(10.0, a);
  t.hi = std::pow(10.0, b);
  for (double v : vals) {
    t.values.push_back(v);
    t.labels.push_back(format_tick(v, v));
  }
  return t;
}

}  // namespace


ChartTicks log_ticks(double lo, double hi, int max_ticks) {
  if (!usable(lo) || !usable(hi) || lo <= 0 || hi <= 0) lo = 1, hi = 10;
  if (lo > hi) std::swap(lo, hi);
  max_ticks = std::max(max_ticks, 2);
  const auto [a, b] = padded_log_range(lo, hi);
  return log_ticks_in(lo, hi, a, b, max_ticks);
}

ChartTicks linear_ticks(double lo, double hi, int target) {
  const AxisTicks n = nice_ticks(lo, hi, target);
  ChartTicks t;
  t.lo = n.lo;
  t.hi = n.hi;
  t.values = n.values;
  for (double v : n.values) t.labels.push_back(format_tick(v, n.step));
  return t;
}

std::string line_chart_svg(const std::vector<ChartSeries>& series_in, const LineChartOptions& opt) {
  // Drop unplottable points; sort each series by x so it draws left to right.
  std::vector<Points> series;
  for (const ChartSeries& s : series_in) {
    Points p;
    for (const auto& [x, y] : s.points)
      if (usable(x) && usable(y) && (!opt.log_x || x > 0) && (!opt.log_y || y > 0)) p.emplace_back(x, y);
    std::stable_sort(p.begin(), p.end(), [](const auto& u, const auto& v) { return u.first < v.first; });
    series.push_back(std::move(p));
  }
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const Points& p : series)
    for (const auto& [x, y] : p) {
      xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y);
    }
  const bool empty = !(xmin <= xmax);
  if (empty) xmin = ymin = 1, xmax = ymax = 10;

  ChartTicks xt;
  std::vector<std::pair<double, std::string>> fixed;
  for (const auto& t : opt.x_ticks)
    if (usable(t.first) && (!opt.log_x || t.first > 0)) fixed.push_back(t);
  if (!fixed.empty()) {
    std::sort(fixed.begin(), fixed.end(), [](const auto& u, const auto& v) { return u.first < v.first; });
    double lo = empty ? fixed.front().first : std::min(xmin, fixed.front().first);
    double hi = empty ? fixed.back().first : std::max(xmax, fixed.back().first);
    if (opt.log_x) {
      const auto [a, b] = padded_log_range(lo, hi);
      xt.lo = std::pow(10.0, a), xt.hi = std::pow(10.0, b);
    } else {
      const double pad = hi > lo ? 0.05 * (hi - lo) : std::max(1.0, 0.1 * std::fabs(lo));
      xt.lo = lo - pad, xt.hi = hi + pad;
    }
    for (const auto& [v, label] : fixed) xt.values.push_back(v), xt.labels.push_back(label);
  } else {
    xt = opt.log_x ? log_ticks(xmin, xmax) : linear_ticks(xmin, xmax, 8);
  }
  const ChartTicks yt = opt.log_y ? log_ticks(ymin, ymax) : linear_ticks(ymin, ymax, 6);

  auto axis_pos = [](double v, const ChartTicks& t, bool log) {
    return log ? (std::log10(v) - std::log10(t.lo)) / (std::log10(t.hi) - std::log10(t.lo))
               : (v - t.lo) / (t.hi - t.lo);
  };
  auto px = [&](double x) { return kLeft + axis_pos(x, xt, opt.log_x) * kPlotW; };
  auto py = [&](double y) { return kTop + kPlotH - axis_pos(y, yt, opt.log_y) * kPlotH; };

  std::string s = document_head(opt.title);

  // Grid and tick labels.
  std::vector<double> grid_x, grid_y;
  for (double v : xt.values) grid_x.push_back(px(v));
  for (double v : yt.values) grid_y.push_back(py(v));
  s += grid(grid_x, grid_y);
  s += "<g fill=\"#444\">\n";
  for (size_t i = 0; i < xt.values.size(); ++i)
    s += cat("<text x=\"", num(px(xt.values[i])), "\" y=\"", num(kTop + kPlotH + 18),
             "\" text-anchor=\"middle\">", xml_escape(xt.labels[i]), "</text>\n");
  for (size_t i = 0; i < yt.values.size(); ++i)
    s += cat("<text x=\"", num(kLeft - 8), "\" y=\"", num(py(yt.values[i]) + 4), "\" text-anchor=\"end\">",
             xml_escape(yt.labels[i]), "</text>\n");
  s += "</g>\n";
  s += cat("<rect x=\"", num(kLeft), "\" y=\"", num(kTop), "\" width=\"", num(kPlotW), "\" height=\"",
           num(kPlotH), "\" fill=\"none\" stroke=\"#555\" stroke-width=\"1\"/>\n");
  s += cat("<text x=\"", num(kLeft + kPlotW / 2), "\" y=\"", num(kHeight - 14),
           "\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222\">", xml_escape(opt.x_title), "</text>\n");
  s += cat("<text transform=\"translate(18,", num(kTop + kPlotH / 2),
           ") rotate(-90)\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222\">", xml_escape(opt.y_title),
           "</text>\n");
  if (empty)
    s += cat("<text x=\"", num(kLeft + kPlotW / 2), "\" y=\"", num(kTop + kPlotH / 2),
             "\" text-anchor=\"middle\" font-size=\"14\" fill=\"#888\">no data</text>\n");

  // Series: colors are assigned in order, counting only series without an
  // explicit color, so adding a colored series does not shift the others.
  std::vector<std::pair<size_t, std::string>> drawn;  // (series index, color)
  size_t next_color = 0;
  for (size_t i = 0; i < series.size(); ++i) {
    std::string color = series_in[i].color;
    if (color.empty()) color = kPalette[next_color++ % (sizeof kPalette / sizeof kPalette[0])];
    if (series[i].empty()) continue;
    drawn.emplace_back(i, color);
    s += cat("<g>\n<polyline fill=\"none\" stroke=\"", xml_escape(color),
             "\" stroke-width=\"2\" stroke-linejoin=\"round\" stroke-linecap=\"round\" points=\"");
    for (size_t k = 0; k < series[i].size(); ++k)
      s += cat(k ? " " : "", num(px(series[i][k].first)), ",", num(py(series[i][k].second)));
    s += cat("\"/>\n<g fill=\"", xml_escape(color), "\" stroke=\"#ffffff\" stroke-width=\"1\">\n");
    for (const auto& [x, y] : series[i])
      s += cat("<circle cx=\"", num(px(x)), "\" cy=\"", num(py(y)), "\" r=\"4\"/>\n");
    s += "</g>\n</g>\n";
  }

  // Legend in the plot corner the lines cross least (top-left on ties:
  // timing curves rise to the right), judged by points sampled along every
  // segment.
  if (!drawn.empty()) {
    size_t longest = 0;
    for (const auto& d : drawn) longest = std::max(longest, series_in[d.first].name.size());
    const double w = 56 + 7.0 * static_cast<double>(longest), h = 10 + 20.0 * static_cast<double>(drawn.size());
    const std::pair<double, double> corners[] = {{kLeft + 10, kTop + 10},
                                                 {kLeft + kPlotW - 10 - w, kTop + 10},
                                                 {kLeft + kPlotW - 10 - w, kTop + kPlotH - 10 - h},
                                                 {kLeft + 10, kTop + kPlotH - 10 - h}};
    double lx = corners[0].first, ly = corners[0].second;
    long best = -1;
    for (const auto& [cx, cy] : corners) {
      long hits = 0;
      for (const auto& d : drawn) {
        const Points& p = series[d.first];
        for (size_t k = 0; k < p.size(); ++k) {
          const double x1 = px(p[k].first), y1 = py(p[k].second);
          const double x0 = k ? px(p[k - 1].first) : x1, y0 = k ? py(p[k - 1].second) : y1;
          for (int t = 0; t <= 32; ++t) {
            const double x = x0 + (x1 - x0) * t / 32.0, y = y0 + (y1 - y0) * t / 32.0;
            hits += x >= cx - 6 && x <= cx + w + 6 && y >= cy - 6 && y <= cy + h + 6;
          }
        }
      }
      if (best < 0 || hits < best) best = hits, lx = cx, ly = cy;
    }
    s += cat("<g>\n<rect x=\"", num(lx), "\" y=\"", num(ly), "\" width=\"", num(w), "\" height=\"", num(h),
             "\" rx=\"3\" fill=\"#ffffff\" fill-opacity=\"0.9\" stroke=\"#bbb\"/>\n");
    for (size_t k = 0; k < drawn.size(); ++k) {
      const double cy = ly + 15 + 20.0 * static_cast<double>(k);
      const std::string color = xml_escape(drawn[k].second);
      s += cat("<line x1=\"", num(lx + 10), "\" y1=\"", num(cy), "\" x2=\"", num(lx + 38), "\" y2=\"", num(cy),
               "\" stroke=\"", color, "\" stroke-width=\"2\"/>\n");
      s += cat("<circle cx=\"", num(lx + 24), "\" cy=\"", num(cy), "\" r=\"4\" fill=\"", color,
               "\" stroke=\"#ffffff\" stroke-width=\"1\"/>\n");
      s += cat("<text x=\"", num(lx + 46), "\" y=\"", num(cy + 4), "\" fill=\"#222\">",
               xml_escape(series_in[drawn[k].first].name), "</text>\n");
    }
    s += "</g>\n";
  }
  s += "</svg>\n";
  return s;
}

void write_line_chart_svg(const std::filesystem::path& svg, const std::vector<ChartSeries>& series,
                          const LineChartOptions& opt) {
  write_file_atomic(svg, line_chart_svg(series, opt));
}

}  // namespace sparta
