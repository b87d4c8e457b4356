#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"
#include "plot/loss_plot.h"
#include "report/progress_bar.h"

using namespace sparta;
namespace fs = std::filesystem;

namespace {

// Captures what a ProgressBar writes, through a real FILE*.
class MemStream {
 public:
  MemStream() : f_(open_memstream(&buf_, &len_)) {}
  ~MemStream() {
    std::fclose(f_);
    std::free(buf_);
  }
  std::FILE* file() { return f_; }
  std::string text() {
    std::fflush(f_);
    return std::string(buf_, len_);
  }

 private:
  char* buf_ = nullptr;
  size_t len_ = 0;
  std::FILE* f_;
};

size_t count(const std::string& s, char c) { return static_cast<size_t>(std::count(s.begin(), s.end(), c)); }

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  size_t a = 0;
  for (size_t b; (b = s.find('\n', a)) != std::string::npos; a = b + 1) v.push_back(s.substr(a, b - a));
  return v;
}

}  // namespace

TEST(ProgressFormat, Durations) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(12.4), "12s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(59.6), "1m00s");
  EXPECT_EQ(format_duration(83), "1m23s");
  EXPECT_EQ(format_duration(3599.6), "1h00m");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_duration(100 * 3600 + 5 * 60), "100h05m");
  EXPECT_EQ(format_duration(-1), "--");
  EXPECT_EQ(format_duration(std::nan("")), "--");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "--");
}

TEST(ProgressFormat, CountsBarsAndLines) {
  EXPECT_EQ(format_count(950), "950");
  EXPECT_EQ(format_count(3.21), "3.21");
  EXPECT_EQ(format_count(41234), "41.2k");
  EXPECT_EQ(format_count(999960), "1.00M");
  EXPECT_EQ(format_count(3.5e6), "3.50M");
  EXPECT_EQ(format_count(2e9), "2.00G");

  EXPECT_EQ(format_bar(0, 10, 10), "[..........]");
  EXPECT_EQ(format_bar(5, 10, 10), "[#####.....]");
  EXPECT_EQ(format_bar(99, 100, 10), "[#########.]");
  EXPECT_EQ(format_bar(999, 1000, 4), "[###.]");  // full only when done
  EXPECT_EQ(format_bar(100, 100, 4), "[####]");
  EXPECT_EQ(format_bar(150, 100, 4), "[####]");
  EXPECT_EQ(format_bar(-5, 100, 4), "[....]");
  EXPECT_EQ(format_bar(0, 0, 3), "[###]");

  EXPECT_EQ(format_progress_line("train", 120, 1000, "loss 3.21 | 41.2k tok/s", "ETA 1m23s", 10),
            "train [#.........] 120/1000 12% | loss 3.21 | 41.2k tok/s | ETA 1m23s");
  EXPECT_EQ(format_progress_line("", 999, 1000, "", "ETA 1s", 4), "[###.] 999/1000 99% | ETA 1s");
  EXPECT_EQ(format_progress_line("eval", 7, 7, "", "", 2), "eval [##] 7/7 100%");
}

TEST(ProgressBar, PlainOutputPrintsAtDecilesOnly) {
  MemStream ms;
  double t = 0;
  ProgressOptions o;
  o.tty = false;
  o.width = 10;
  o.clock = [&] { return t; };
  {
    ProgressBar bar(100, "train", ms.file(), o);
    for (int i = 1; i <= 100; ++i) {
      t += 0.125;  // exact in binary, so the ETA below is exact
      bar.update(i, cat("loss ", 5.0 - i * 0.01));
    }
    bar.finish();
    bar.finish();  // idempotent
  }
  const std::string out = ms.text();
  EXPECT_EQ(count(out, '\r'), 0u);
  const auto ls = lines(out);
  ASSERT_EQ(ls.size(), 12u) << out;  // 0%, 10%, ..., 100% and the final line
  EXPECT_EQ(ls[0], "train [..........] 1/100 1% | loss 4.99 | ETA --");
  EXPECT_EQ(ls[1], "train [#.........] 10/100 10% | loss 4.9 | ETA 11s");  // 9 units in 1.125 s, 90 left
  EXPECT_EQ(ls[5], "train [#####.....] 50/100 50% | loss 4.5 | ETA 6s");
  EXPECT_EQ(ls[11], "train [##########] 100/100 100% | loss 4 | done in 13s");  // 12.5 s
}

TEST(ProgressBar, PlainOutputFallsBackToTimeWhenProgressIsSlow) {
  MemStream ms;
  double t = 0;
  ProgressOptions o;
  o.tty = false;
  o.clock = [&] { return t; };
  ProgressBar bar(1000, "prep", ms.file(), o);
  for (int i = 1; i <= 10; ++i) {
    t += 10;  // 10 s per unit: every update stays inside the first 10%
    bar.update(i);
  }
  // Lines at t = 10 (first), 30, 50, 70, 90: at least 15 s apart.
  EXPECT_EQ(lines(ms.text()).size(), 5u) << ms.text();
  EXPECT_NEAR(bar.eta_seconds(), 990 * 10.0, 1e-6);
}

TEST(ProgressBar, TerminalRedrawsInPlaceAtMostTenTimesASecond) {
  MemStream ms;
  double t = 0;
  ProgressOptions o;
  o.tty = true;
  o.width = 10;
  o.clock = [&] { return t; };
  ProgressBar bar(1000, "train", ms.file(), o);
  for (int i = 1; i <= 1000; ++i) {
    t += 0.001;  // 1000 updates in 1 s
    bar.update(i, i < 500 ? "a much longer status text" : "short");
  }
  const std::string during = ms.text();
  EXPECT_EQ(count(during, '\n'), 0u);
  EXPECT_LE(count(during, '\r'), 11u);
  EXPECT_GE(count(during, '\r'), 9u);
  // The first short line is padded with spaces over the remains of the
  // longer one before it; later short lines need no padding.
  std::vector<std::string> segs;
  for (size_t a = during.find('\r'); a != std::string::npos;) {
    const size_t b = during.find('\r', a + 1);
    segs.push_back(during.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1));
    a = b;
  }
  size_t first_short = 0;
  while (first_short < segs.size() && segs[first_short].find("| short |") == std::string::npos) ++first_short;
  ASSERT_TRUE(first_short > 0 && first_short + 1 < segs.size());
  EXPECT_EQ(segs[first_short].size(), segs[first_short - 1].size());
  EXPECT_EQ(segs[first_short].back(), ' ');
  EXPECT_NE(segs[first_short + 1].back(), ' ');
  bar.finish();
  const std::string out = ms.text();
  EXPECT_EQ(out.back(), '\n');
  EXPECT_NE(out.find("\rtrain [##########] 1000/1000 100% | short | done in 1s"), std::string::npos);
}

TEST(ProgressBar, EtaUsesRateSinceFirstUpdate) {
  MemStream ms;
  double t = 100;
  ProgressOptions o;
  o.tty = false;
  o.clock = [&] { return t; };
  ProgressBar bar(100, "x", ms.file(), o);
  EXPECT_LT(bar.eta_seconds(), 0);
  t = 101;
  bar.update(10);  // resumed at 10: the rate counts from here
  EXPECT_LT(bar.eta_seconds(), 0);
  t = 103;
  bar.update(20);
  EXPECT_DOUBLE_EQ(bar.eta_seconds(), 16.0);  // 10 units in 2 s, 80 left
}

// ---------------------------------------------------------------- loss plot

namespace {

// Minimal XML well-formedness check: tags nest and close, quotes balance,
// no stray '<' or '&' outside tags/entities.
bool xml_balanced(const std::string& s, std::string* why) {
  std::vector<std::string> stack;
  size_t i = 0;
  if (s.rfind("<?xml", 0) == 0) i = s.find("?>") + 2;
  while (i < s.size()) {
    if (s[i] == '&') {
      const size_t semi = s.find(';', i);
      const std::string ent = s.substr(i, semi == std::string::npos ? 8 : semi - i + 1);
      if (ent != "&amp;" && ent != "&lt;" && ent != "&gt;" && ent != "&quot;" && ent != "&apos;") {
        *why = "bad entity " + ent;
        return false;
      }
      i = semi + 1;
      continue;
    }
    if (s[i] != '<') {
      ++i;
      continue;
    }
    const size_t end = s.find('>', i);
    if (end == std::string::npos) return *why = "unclosed tag", false;
    const std::string tag = s.substr(i + 1, end - i - 1);
    if (count(tag, '"') % 2) return *why = "unbalanced quotes in <" + tag + ">", false;
    if (tag.find('<') != std::string::npos) return *why = "'<' inside tag", false;
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1))
        return *why = "mismatched </" + tag.substr(1) + ">", false;
      stack.pop_back();
    } else if (tag.back() != '/') {
      stack.push_back(tag.substr(0, tag.find_first_of(" \n")));
    }
    i = end + 1;
  }
  if (!stack.empty()) return *why = "unclosed <" + stack.back() + ">", false;
  return true;
}

std::vector<std::string> polylines(const std::string& svg) {
  std::vector<std::string> v;
  for (size_t p = 0; (p = svg.find("<polyline", p)) != std::string::npos; ++p)
    v.push_back(svg.substr(p, svg.find("/>", p) - p));
  return v;
}

std::vector<std::pair<double, double>> points_of(const std::string& polyline) {
  std::vector<std::pair<double, double>> pts;
  const size_t a = polyline.find("points=\"") + 8;
  std::string s = polyline.substr(a, polyline.find('"', a) - a);
  std::replace(s.begin(), s.end(), ',', ' ');
  std::istringstream is(s);
  double x, y;
  while (is >> x >> y) pts.emplace_back(x, y);
  return pts;
}

}  // namespace

TEST(LossPlot, NiceTicksAndLabels) {
  AxisTicks t = nice_ticks(0, 1000, 6);
  EXPECT_EQ(t.step, 200);
  EXPECT_EQ(t.values, (std::vector<double>{0, 200, 400, 600, 800, 1000}));
  t = nice_ticks(2.13, 10.9, 6);
  EXPECT_EQ(t.lo, 2);
  EXPECT_EQ(t.hi, 12);
  EXPECT_EQ(t.step, 2);
  t = nice_ticks(3, 3);  // constant: widened around the value
  EXPECT_LT(t.lo, 3);
  EXPECT_GT(t.hi, 3);
  EXPECT_GE(t.values.size(), 3u);
  t = nice_ticks(0, 0);
  EXPECT_LT(t.lo, 0);
  EXPECT_GT(t.hi, 0);
  t = nice_ticks(std::nan(""), 5);
  EXPECT_EQ(t.lo, 0);
  EXPECT_EQ(t.hi, 1);
  t = nice_ticks(5, 1);  // reversed
  EXPECT_LE(t.lo, 1);
  EXPECT_GE(t.hi, 5);

  EXPECT_EQ(format_tick(2.5, 0.5), "2.5");
  EXPECT_EQ(format_tick(3, 0.5), "3.0");
  EXPECT_EQ(format_tick(1500, 500), "1500");
  EXPECT_EQ(format_tick(20000, 5000), "20k");
  EXPECT_EQ(format_tick(27500, 2500), "27.5k");
  EXPECT_EQ(format_tick(0, 2500), "0");
  EXPECT_EQ(format_tick(3000000, 1000000), "3M");
  EXPECT_EQ(format_tick(0.0025, 0.0005), "0.0025");
  EXPECT_EQ(format_tick(-1e-17, 0.1), "0.0");  // no "-0.0"
  EXPECT_EQ(format_tick(0.30000000000000004, 0.1), "0.3");
}

TEST(LossPlot, DrawsBothSeriesWithAxesAndLegend) {
  std::vector<std::pair<double, double>> train, val;
  for (int s = 0; s <= 2000; s += 10)
    train.emplace_back(s, 2.0 + 8.0 * std::exp(-s / 300.0) + 0.05 * std::sin(s));
  train[5].second = std::nan("");
  train[6].second = std::numeric_limits<double>::infinity();
  for (int s = 0; s <= 2000; s += 250) val.emplace_back(s, 2.2 + 8.0 * std::exp(-s / 300.0));
  const std::string svg = loss_plot_svg(train, val, "gpt-tiny <shakespeare> & co");
  std::string why;
  EXPECT_TRUE(xml_balanced(svg, &why)) << why;
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_NE(svg.find(">gpt-tiny &lt;shakespeare&gt; &amp; co</text>"), std::string::npos);
  // The y axis stops below the first steps' loss of 10 (loss_axis_range).
  for (const char* label : {">step</text>", ">loss</text>", ">train</text>", ">validation</text>",
                            ">2000</text>", ">0</text>", ">7</text>"})
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  const auto pl = polylines(svg);
  ASSERT_EQ(pl.size(), 2u);
  const auto tp = points_of(pl[0]), vp = points_of(pl[1]);
  EXPECT_EQ(tp.size(), train.size() - 2);  // NaN and inf skipped
  EXPECT_EQ(vp.size(), val.size());
  // All vertices inside the plot frame; x increases with step; lower loss is lower on screen (larger y).
  for (const auto& p : tp) {
    EXPECT_GE(p.first, 72 - 1e-9);
    EXPECT_LE(p.first, 776 + 1e-9);
    EXPECT_GE(p.second, 44 - 1e-9);
    EXPECT_LE(p.second, 424 + 1e-9);
  }
  EXPECT_LT(tp.front().first, tp.back().first);
  EXPECT_LT(tp.front().second, tp.back().second);
  // Validation markers: one circle per point plus the legend's, except the
  // first evaluation (10.2), which is clipped and marked as such.
  size_t circles = 0;
  for (size_t p = 0; (p = svg.find("<circle", p)) != std::string::npos; ++p) ++circles;
  EXPECT_EQ(circles, val.size() - 1 + 1);
  EXPECT_NE(svg.find("<polygon class=\"clipped\""), std::string::npos);
}

TEST(LossPlot, DegenerateInputsStillMakeAChart) {
  using P = std::vector<std::pair<double, double>>;
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  const std::vector<std::pair<P, P>> inputs = {
      {{}, {}},
      {{{5, 3.0}}, {}},
      {{}, {{100, 2.0}}},
      {{{0, 4.0}, {10, 4.0}, {20, 4.0}}, {{10, 4.0}}},    // constant
      {{{nan, 1.0}, {1, nan}, {inf, inf}}, {{-inf, 2}}},  // nothing usable
      {{{0, 1e308}, {1, 2.0}, {2, -1e305}}, {}},          // huge magnitudes
      {{{7, 0.0}, {7, 0.0}}, {{7, 0.0}}},                 // one spot
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string svg = loss_plot_svg(inputs[i].first, inputs[i].second, "t");
    std::string why;
    EXPECT_TRUE(xml_balanced(svg, &why)) << "input " << i << ": " << why;
    EXPECT_EQ(svg.find("nan"), std::string::npos) << "input " << i;
    EXPECT_EQ(svg.find("inf"), std::string::npos) << "input " << i;
    for (const auto& pl : polylines(svg))
      for (const auto& p : points_of(pl)) {
        EXPECT_TRUE(p.first >= 72 - 1e-9 && p.first <= 776 + 1e-9) << "input " << i;
        EXPECT_TRUE(p.second >= 44 - 1e-9 && p.second <= 424 + 1e-9) << "input " << i;
      }
  }
  EXPECT_NE(loss_plot_svg({}, {}, "t").find("no data yet"), std::string::npos);
  EXPECT_TRUE(polylines(loss_plot_svg({}, {}, "t")).empty());
  EXPECT_EQ(polylines(loss_plot_svg({}, {{100, 2.0}}, "t")).size(), 1u);
  EXPECT_EQ(loss_plot_svg({}, {{100, 2.0}}, "t").find(">train</text>"),
            std::string::npos);  // legend only names drawn series
}

TEST(LossPlot, LongRunsAreThinnedAndFileIsWrittenAtomically) {
  std::vector<std::pair<double, double>> train;
  for (int s = 0; s < 200000; ++s) train.emplace_back(s, 3.0 + std::sin(s * 0.37));
  const std::string svg = loss_plot_svg(train, {}, "long");
  const auto pts = points_of(polylines(svg).at(0));
  EXPECT_LE(pts.size(), 2u * 705);
  EXPECT_GE(pts.size(), 700u);
  // The envelope survives thinning: the extremes of the data are still drawn.
  double ymin = 1e9, ymax = -1e9;
  for (const auto& p : pts) ymin = std::min(ymin, p.second), ymax = std::max(ymax, p.second);
  const AxisTicks yt = nice_ticks(2.0, 4.0, 6);
  const double top = 44 + 380 * (1 - (4.0 - yt.lo) / (yt.hi - yt.lo));
  EXPECT_NEAR(ymin, top, 1.0);

  const fs::path dir = fs::temp_directory_path() / cat("sparta_plot_", ::getpid());
  fs::create_directories(dir);
  write_loss_plot_svg(dir / "loss.svg", {{0, 5.0}, {10, 4.0}}, {{10, 4.5}}, "run");
  EXPECT_EQ(read_file(dir / "loss.svg"), loss_plot_svg({{0, 5.0}, {10, 4.0}}, {{10, 4.5}}, "run"));
  EXPECT_FALSE(fs::exists(dir / "loss.svg.tmp"));
  fs::remove_all(dir);
}

TEST(ProgressBar, SmoothedRateFollowsTheTrendNotEachStep) {
  SmoothedRate r(0.1);
  EXPECT_EQ(r.rate(), 0.0);
  EXPECT_DOUBLE_EQ(r.add(1000, 1.0), 1000.0);  // the first sample as is
  // One slow step (4x the time) moves the shown rate a little, not to 250.
  const double after_slow = r.add(1000, 4.0);
  EXPECT_GT(after_slow, 750.0);
  EXPECT_LT(after_slow, 1000.0);
  for (int i = 0; i < 200; ++i) r.add(1000, 0.5);  // a lasting change is followed
  EXPECT_NEAR(r.rate(), 2000.0, 1.0);
  const double before = r.rate();
  EXPECT_EQ(r.add(1000, 0.0), before);  // unusable samples are ignored
  EXPECT_THROW(SmoothedRate(0.0), Error);
}

TEST(ProgressBar, SetStatusRedrawsAtOnceOnATerminalOnly) {
  double t = 0;
  ProgressOptions o;
  o.tty = true;
  o.clock = [&] { return t; };
  MemStream tty;
  ProgressBar bar(10, "train", tty.file(), o);
  bar.update(3, "loss 2.0000 | 1.0k tok/s");
  t = 0.01;  // well inside the redraw limit: a status change still shows
  bar.set_status("loss 2.0000 | validating…");
  EXPECT_NE(tty.text().rfind("validating…"), std::string::npos) << tty.text();
  EXPECT_NE(tty.text().find("3/10"), std::string::npos);
  t = 5;
  bar.update(4, "loss 1.9000 | 1.1k tok/s");  // the next update restores the usual text
  const std::string last = tty.text().substr(tty.text().rfind('\r'));
  EXPECT_EQ(last.find("validating"), std::string::npos) << last;
  EXPECT_NE(last.find("1.1k tok/s"), std::string::npos) << last;

  o.tty = false;
  MemStream log;
  ProgressBar plain(10, "train", log.file(), o);
  plain.update(3, "x");
  const std::string before = log.text();
  plain.set_status("validating…");
  EXPECT_EQ(log.text(), before);  // a log gets no extra line
}

TEST(LossPlot, AxisShowsTheLossesAfterTheFirstSteps) {
  // A typical run: ~5.6 at the start, 2.0-2.5 after a few dozen steps.
  std::vector<std::pair<double, double>> train, val;
  for (int s = 1; s <= 300; ++s) train.emplace_back(s, 2.0 + 3.6 * std::exp(-s / 8.0) + 0.2 * std::sin(s));
  for (int s = 50; s <= 300; s += 50) val.emplace_back(s, 2.3);
  const LossAxisRange r = loss_axis_range(train, val);
  EXPECT_TRUE(r.clipped);
  EXPECT_NEAR(r.lo, 1.8, 0.01);
  EXPECT_GT(r.hi, 2.3);  // every later point fits ...
  EXPECT_LT(r.hi, 2.6);  // ... and the first steps' 5.6 does not set the scale
  const std::string svg = loss_plot_svg(train, val, "run");
  std::string why;
  EXPECT_TRUE(xml_balanced(svg, &why)) << why;
  EXPECT_EQ(svg.find(">5</text>"), std::string::npos);  // no tick up at the first loss
  EXPECT_NE(svg.find("<polygon class=\"clipped\""), std::string::npos);
  EXPECT_NE(svg.find("points above"), std::string::npos);
  EXPECT_NE(svg.find("clipped (highest 5.3"), std::string::npos) << svg;
  for (const auto& pl : polylines(svg))
    for (const auto& p : points_of(pl)) EXPECT_GE(p.second, 44 - 1e-9);  // clipped points stay in the frame

  // A curve without an early spike, and short runs, keep their whole range.
  std::vector<std::pair<double, double>> flat;
  for (int s = 1; s <= 300; ++s) flat.emplace_back(s, 2.5 - 0.001 * s);
  const LossAxisRange f = loss_axis_range(flat, {});
  EXPECT_FALSE(f.clipped);
  EXPECT_DOUBLE_EQ(f.hi, 2.499);
  EXPECT_FALSE(loss_axis_range({{1, 5.6}, {2, 3.0}, {3, 2.5}}, {}).clipped);
  EXPECT_EQ(loss_plot_svg(flat, {}, "t").find("clipped"), std::string::npos);
  const LossAxisRange none = loss_axis_range({}, {});
  EXPECT_EQ(none.lo, 0);
  EXPECT_EQ(none.hi, 1);
}
