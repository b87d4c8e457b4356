#include "plot/loss_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/error.h"
#include "core/plural.h"
#include "io/atomic_file.h"
#include "plot/svg_frame.h"

namespace sparta {
namespace {

using Points = std::vector<std::pair<double, double>>;

// Larger magnitudes are treated like inf: the axis arithmetic below would
// overflow on them, and a loss that large is a diverged run anyway.
constexpr double kMaxMagnitude = 1e300;

using namespace svg;
constexpr const char* kTrainColor = "#1f77b4";
constexpr const char* kValColor = "#e8710a";

bool usable(double v) { return std::isfinite(v) && std::fabs(v) <= kMaxMagnitude; }

Points finite_points(const Points& in) {
  Points out;
  out.reserve(in.size());
  for (const auto& p : in)
    if (usable(p.first) && usable(p.second)) out.push_back(p);
  return out;
}

// 1, 2, 5 or 10 times a power of ten near x (x > 0): the closest one when
// `round`, else the smallest one >= x.
double nice_number(double x, bool round) {
  const double e = std::floor(std::log10(x));
  const double f = x / std::pow(10.0, e);
  double nf;
  if (round)
    nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  else
    nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return nf * std::pow(10.0, e);
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}



// Pixel coordinates for a series. Long series are thinned to the lowest and
// highest point of each pixel column: the drawn envelope is unchanged while
// the file stays small (100k training steps would otherwise be 100k vertices).
Points to_pixels(const Points& pts, const AxisTicks& xt, const AxisTicks& yt) {
  Points px;
  px.reserve(pts.size());
  for (const auto& [x, y] : pts)
    px.emplace_back(kLeft + (x - xt.lo) / (xt.hi - xt.lo) * kPlotW,
                    kTop + kPlotH - (y - yt.lo) / (yt.hi - yt.lo) * kPlotH);
  if (px.size() <= static_cast<size_t>(4 * kPlotW)) return px;
  Points thin;
  size_t i = 0;
  while (i < px.size()) {
    const double col = std::floor(px[i].first);
    size_t j = i, lo = i, hi = i;
    for (; j < px.size() && std::floor(px[j].first) == col; ++j) {
      if (px[j].second > px[lo].second) lo = j;  // larger pixel y = lower value
      if (px[j].second < px[hi].second) hi = j;
    }
    thin.push_back(px[std::min(lo, hi)]);
    if (lo != hi) thin.push_back(px[std::max(lo, hi)]);
    i = j;
  }
  return thin;
}

std::string polyline(const Points& px, const char* color, double width) {
  std::string s = cat("<polyline fill=\"none\" stroke=\"", color, "\" stroke-width=\"", width,
                      "\" stroke-linejoin=\"round\" stroke-linecap=\"round\" points=\"");
  for (size_t i = 0; i < px.size(); ++i) s += cat(i ? " " : "", num(px[i].first), ",", num(px[i].second));
  return s + "\"/>\n";
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n')
          out += ' ';
        else
          out += c;
    }
  }
  return out;
}

AxisTicks nice_ticks(double lo, double hi, int target) {
  if (!usable(lo) || !usable(hi)) lo = 0, hi = 1;
  if (lo > hi) std::swap(lo, hi);
  target = std::max(target, 2);
  if (hi - lo <= 1e-9 * std::max(std::fabs(lo), std::fabs(hi))) {
    const double pad = lo != 0 ? 0.1 * std::fabs(lo) : 1.0;
    lo -= pad;
    hi += pad;
  }
  AxisTicks t;
  const double range = nice_number(hi - lo, false);
  t.step = nice_number(range / (target - 1), true);
  t.lo = std::floor(lo / t.step) * t.step;
  t.hi = std::ceil(hi / t.step) * t.step;
  const long n = std::lround((t.hi - t.lo) / t.step);
  for (long k = 0; k <= n; ++k) t.values.push_back(t.lo + static_cast<double>(k) * t.step);
  return t;
}

std::string format_tick(double value, double step) {
  step = std::fabs(step);
  if (!(step > 0) || !std::isfinite(step)) return fmt("%g", value);
  if (std::fabs(value) < step * 1e-9) value = 0;  // no "-0.0" from rounding noise
  double div = 1;
  const char* suffix = "";
  if (step >= 1e9)
    div = 1e9, suffix = "G";
  else if (step >= 1e6)
    div = 1e6, suffix = "M";
  else if (step >= 1e3)
    div = 1e3, suffix = "k";
  const double s = step / div;
  int decimals = 0;
  for (double p = 1; decimals < 12; ++decimals, p *= 10)
    if (std::fabs(s * p - std::round(s * p)) < 1e-6 * std::max(1.0, s * p)) break;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value / div);
  std::string out = buf;
  if (*suffix) {
    if (out.find('.') != std::string::npos) {
      while (out.back() == '0') out.pop_back();
      if (out.back() == '.') out.pop_back();
    }
    if (out != "0") out += suffix;
  }
  return out;
}

LossAxisRange loss_axis_range(const Points& train_in, const Points& val_in) {
  const Points train = finite_points(train_in), val = finite_points(val_in);
  LossAxisRange r;
  if (train.empty() && val.empty()) return r;
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin;
  r.lo = xmin, r.hi = -xmin;
  for (const Points* s : {&train, &val})
    for (const auto& [x, y] : *s) {
      xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      r.lo = std::min(r.lo, y), r.hi = std::max(r.hi, y);
    }
  const double later_from = xmin + 0.1 * (xmax - xmin);
  std::vector<double> later;
  for (const auto& [x, y] : train)
    if (x >= later_from) later.push_back(y);
  if (later.size() < 10) return r;
  std::sort(later.begin(), later.end());
  double cap = later[static_cast<size_t>(0.99 * static_cast<double>(later.size() - 1))];
  for (const auto& [x, y] : val)
    if (x >= later_from) cap = std::max(cap, y);
  const double top = cap + 0.05 * (cap - r.lo);
  if (r.hi > r.lo + 1.25 * (top - r.lo) && top > r.lo) {
    r.hi = top;
    r.clipped = true;
  }
  return r;
}

std::string loss_plot_svg(const Points& train_in, const Points& val_in, const std::string& title) {
  const Points train = finite_points(train_in), val = finite_points(val_in);
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin;
  for (const Points* s : {&train, &val})
    for (const auto& [x, y] : *s) xmin = std::min(xmin, x), xmax = std::max(xmax, x);
  const bool empty = train.empty() && val.empty();
  const LossAxisRange range = loss_axis_range(train, val);
  const AxisTicks xt = empty ? nice_ticks(0, 1) : nice_ticks(xmin, xmax, 8);
  const AxisTicks yt = empty ? nice_ticks(0, 1) : nice_ticks(range.lo, range.hi, 6);
  // Points above the axis sit on its top edge (and get a marker below).
  auto clamp_top = [&](const Points& pts) {
    Points out = pts;
    for (auto& p : out) p.second = std::min(p.second, yt.hi);
    return out;
  };
  auto px = [&](double x) { return kLeft + (x - xt.lo) / (xt.hi - xt.lo) * kPlotW; };
  auto py = [&](double y) { return kTop + kPlotH - (y - yt.lo) / (yt.hi - yt.lo) * kPlotH; };

  std::string s = document_head(title);

  // Grid and tick labels.
  std::vector<double> grid_x, grid_y;
  for (double v : xt.values) grid_x.push_back(px(v));
  for (double v : yt.values) grid_y.push_back(py(v));
  s += grid(grid_x, grid_y);
  s += "<g fill=\"#444\">\n";
  for (double v : xt.values)
    s += cat("<text x=\"", num(px(v)), "\" y=\"", num(kTop + kPlotH + 18), "\" text-anchor=\"middle\">",
             format_tick(v, xt.step), "</text>\n");
  for (double v : yt.values)
    s += cat("<text x=\"", num(kLeft - 8), "\" y=\"", num(py(v) + 4), "\" text-anchor=\"end\">",
             format_tick(v, yt.step), "</text>\n");
  s += "</g>\n";
  s += cat("<rect x=\"", num(kLeft), "\" y=\"", num(kTop), "\" width=\"", num(kPlotW), "\" height=\"",
           num(kPlotH), "\" fill=\"none\" stroke=\"#555\" stroke-width=\"1\"/>\n");
  s += cat("<text x=\"", num(kLeft + kPlotW / 2), "\" y=\"", num(kHeight - 14),
           "\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222\">step</text>\n");
  s += cat("<text transform=\"translate(18,", num(kTop + kPlotH / 2),
           ") rotate(-90)\" text-anchor=\"middle\" font-size=\"13\" fill=\"#222\">loss</text>\n");

  if (empty)
    s += cat("<text x=\"", num(kLeft + kPlotW / 2), "\" y=\"", num(kTop + kPlotH / 2),
             "\" text-anchor=\"middle\" font-size=\"14\" fill=\"#888\">no data yet</text>\n");
  if (!train.empty()) {
    const Points p = to_pixels(clamp_top(train), xt, yt);
    s += polyline(p, kTrainColor, 1.5);
    if (p.size() == 1)  // a single point draws no line; show it
      s += cat("<circle cx=\"", num(p[0].first), "\" cy=\"", num(p[0].second), "\" r=\"2.5\" fill=\"",
               kTrainColor, "\"/>\n");
  }
  if (!val.empty()) {
    const Points p = to_pixels(clamp_top(val), xt, yt);
    s += polyline(p, kValColor, 2);
    // Markers show where evaluations happened; past a few hundred they only
    // thicken the line. Clipped evaluations get the clipped marker instead.
    if (p.size() <= 300) {
      s += cat("<g fill=\"", kValColor, "\" stroke=\"#ffffff\" stroke-width=\"1\">\n");
      for (size_t i = 0; i < p.size(); ++i)
        if (val[i].second <= yt.hi)
          s += cat("<circle cx=\"", num(p[i].first), "\" cy=\"", num(p[i].second), "\" r=\"3.5\"/>\n");
      s += "</g>\n";
    }
  }
  if (range.clipped) {
    // One triangle per pixel column holding clipped points, pointing up:
    // "this goes higher than the axis".
    int64_t clipped = 0;
    double highest = yt.hi;
    std::vector<long> columns;
    for (const Points* series : {&train, &val})
      for (const auto& [x, y] : *series)
        if (y > yt.hi) {
          ++clipped;
          highest = std::max(highest, y);
          columns.push_back(std::lround(px(x)));
        }
    std::sort(columns.begin(), columns.end());
    columns.erase(std::unique(columns.begin(), columns.end()), columns.end());
    s += "<g class=\"clipped\" fill=\"#555\">\n";
    for (long c : columns)
      s += cat("<polygon class=\"clipped\" points=\"", c - 3, ",", num(kTop + 6), " ", c + 3, ",", num(kTop + 6), " ",
               c, ",", num(kTop), "\"/>\n");
    s += cat("</g>\n<text x=\"", num(kLeft + 8), "\" y=\"", num(kTop + 20), "\" font-size=\"11\" fill=\"#555\">",
             "\u25B2 ", count_noun(clipped, "point"), " above ", format_tick(yt.hi, yt.step),
             " clipped (highest ", fmt("%.2f", highest), ")</text>\n");
  }

  // Legend in the top-right corner of the plot (loss curves fall, so this
  // corner is usually empty).
  std::vector<std::pair<std::string, const char*>> items;
  if (!train.empty()) items.emplace_back("train", kTrainColor);
  if (!val.empty()) items.emplace_back("validation", kValColor);
  if (!items.empty()) {
    const double w = 118, h = 10 + 20.0 * static_cast<double>(items.size());
    const double lx = kLeft + kPlotW - w - 10, ly = kTop + 10;
    s += cat("<g>\n<rect x=\"", num(lx), "\" y=\"", num(ly), "\" width=\"", num(w), "\" height=\"", num(h),
             "\" rx=\"3\" fill=\"#ffffff\" fill-opacity=\"0.9\" stroke=\"#bbb\"/>\n");
    for (size_t i = 0; i < items.size(); ++i) {
      const double cy = ly + 15 + 20.0 * static_cast<double>(i);
      const bool is_val = items[i].first == "validation";
      s += cat("<line x1=\"", num(lx + 10), "\" y1=\"", num(cy), "\" x2=\"", num(lx + 38), "\" y2=\"",
               num(cy), "\" stroke=\"", items[i].second, "\" stroke-width=\"", is_val ? 2 : 1.5, "\"/>\n");
      if (is_val)
        s += cat("<circle cx=\"", num(lx + 24), "\" cy=\"", num(cy), "\" r=\"3.5\" fill=\"", items[i].second,
                 "\" stroke=\"#ffffff\" stroke-width=\"1\"/>\n");
      s += cat("<text x=\"", num(lx + 46), "\" y=\"", num(cy + 4), "\" fill=\"#222\">", items[i].first,
               "</text>\n");
    }
    s += "</g>\n";
  }
  s += "</svg>\n";
  return s;
}

void write_loss_plot_svg(const std::filesystem::path& svg, const Points& train, const Points& val,
                         const std::string& title) {
  write_file_atomic(svg, loss_plot_svg(train, val, title));
}

}  // namespace sparta
