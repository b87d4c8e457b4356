#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "io/atomic_file.h"
#include "plot/line_chart.h"

using namespace sparta;
namespace fs = std::filesystem;

namespace {

// True when every element opened in the SVG text is closed in order
// (self-closing tags count as both); `why` says where it breaks.
bool xml_balanced(const std::string& s, std::string* why) {
  std::vector<std::string> stack;
  size_t p = 0;
  while ((p = s.find('<', p)) != std::string::npos) {
    const size_t e = s.find('>', p);
    if (e == std::string::npos) return *why = "unterminated tag", false;
    const std::string tag = s.substr(p + 1, e - p - 1);
    p = e + 1;
    if (tag.empty() || tag[0] == '?' || tag[0] == '!') continue;
    if (tag.back() == '/') continue;
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) return *why = "unexpected </" + name + ">", false;
      stack.pop_back();
      continue;
    }
    stack.push_back(tag.substr(0, tag.find_first_of(" \t\n")));
  }
  if (!stack.empty()) return *why = "unclosed <" + stack.back() + ">", false;
  return true;
}

std::vector<std::string> elements(const std::string& svg, const std::string& name) {
  std::vector<std::string> v;
  const std::string open = "<" + name + " ";
  for (size_t p = 0; (p = svg.find(open, p)) != std::string::npos; ++p) v.push_back(svg.substr(p, svg.find('>', p) - p));
  return v;
}

double attr(const std::string& element, const std::string& name) {
  const size_t p = element.find(" " + name + "=\"");
  if (p == std::string::npos) return std::numeric_limits<double>::quiet_NaN();
  return std::stod(element.substr(p + name.size() + 3));
}

std::vector<std::pair<double, double>> points_of(const std::string& polyline) {
  std::vector<std::pair<double, double>> v;
  const size_t p = polyline.find("points=\"") + 8;
  std::string pts = polyline.substr(p, polyline.find('"', p) - p);
  size_t a = 0;
  while (a < pts.size()) {
    size_t b = pts.find(' ', a);
    if (b == std::string::npos) b = pts.size();
    const std::string xy = pts.substr(a, b - a);
    v.emplace_back(std::stod(xy), std::stod(xy.substr(xy.find(',') + 1)));
    a = b + 1;
  }
  return v;
}

}  // namespace

TEST(LineChart, LogTicksSequenceLengths) {
  // 1024..65536 spans 1.8 decades: 1-2-5 ticks inside the 5%-padded range.
  const ChartTicks t = log_ticks(1024, 65536);
  EXPECT_EQ(t.values, (std::vector<double>{1000, 2000, 5000, 10000, 20000, 50000}));
  EXPECT_EQ(t.labels, (std::vector<std::string>{"1k", "2k", "5k", "10k", "20k", "50k"}));
  const double pad = 0.05 * std::log10(64.0);
  EXPECT_NEAR(std::log10(t.lo), std::log10(1024.0) - pad, 1e-12);
  EXPECT_NEAR(std::log10(t.hi), std::log10(65536.0) + pad, 1e-12);
}

TEST(LineChart, LogTicksManyDecadesUseDecadesOnly) {
  const ChartTicks t = log_ticks(0.01, 1e5);  // 7 decades
  EXPECT_EQ(t.labels, (std::vector<std::string>{"0.01", "0.1", "1", "10", "100", "1k", "10k", "100k"}));
  for (size_t i = 1; i < t.values.size(); ++i) EXPECT_NEAR(t.values[i] / t.values[i - 1], 10.0, 1e-9);
  // More decades than max_ticks: every 2nd (even exponents) when 4 are allowed.
  const ChartTicks thin = log_ticks(1, 1e7, 4);
  EXPECT_EQ(thin.labels, (std::vector<std::string>{"1", "100", "10k", "1M"}));
}

TEST(LineChart, LogTicksNarrowRangeWidensToTwoTicks) {
  // Only 2 of {1, 2, 5}·10^e lies within 1.3..1.9 (padded): widen down to 1.
  ChartTicks t = log_ticks(1.3, 1.9);
  EXPECT_EQ(t.values, (std::vector<double>{1, 2}));
  EXPECT_DOUBLE_EQ(t.lo, 1);
  EXPECT_NEAR(std::log10(t.hi), std::log10(1.9) + 0.05, 1e-12);
  // A single value on a tick gets neighbours on both sides.
  t = log_ticks(5, 5);
  EXPECT_EQ(t.values, (std::vector<double>{2, 5, 10}));
  EXPECT_EQ(t.labels, (std::vector<std::string>{"2", "5", "10"}));
  // Swapped and unusable input.
  EXPECT_EQ(log_ticks(65536, 1024).values, log_ticks(1024, 65536).values);
  for (double bad : {0.0, -3.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    t = log_ticks(bad, 100);
    EXPECT_EQ(t.values, (std::vector<double>{1, 2, 5, 10})) << bad;
  }
}

TEST(LineChart, LinearTicksMatchNiceTicks) {
  const ChartTicks t = linear_ticks(0, 4.8, 6);
  EXPECT_EQ(t.labels, (std::vector<std::string>{"0", "1", "2", "3", "4", "5"}));
  EXPECT_DOUBLE_EQ(t.lo, 0);
  EXPECT_DOUBLE_EQ(t.hi, 5);
}

TEST(LineChart, SvgHasEverySeriesLabelAndTick) {
  std::vector<ChartSeries> series = {
      {"dense", {{1024, 40}, {4096, 600}, {16384, 9000}}, ""},
      {"dsa <sparse> & co", {{16384, 900}, {1024, 30}, {4096, 160}}, ""},  // unsorted on purpose
      {"torch", {{1024, 80}, {4096, 1300}}, "#000000"},
  };
  LineChartOptions opt;
  opt.title = "attention \"fwd+bwd\"";
  opt.x_title = "sequence length";
  opt.y_title = "ms";
  opt.log_x = opt.log_y = true;
  opt.x_ticks = {{1024, "1K"}, {4096, "4K"}, {16384, "16K"}};
  const std::string svg = line_chart_svg(series, opt);
  std::string why;
  EXPECT_TRUE(xml_balanced(svg, &why)) << why;
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  for (const char* text : {">attention &quot;fwd+bwd&quot;</text>", ">sequence length</text>", ">ms</text>",
                           ">dense</text>", ">dsa &lt;sparse&gt; &amp; co</text>", ">torch</text>", ">1K</text>",
                           ">4K</text>", ">16K</text>", ">100</text>", ">1k</text>"})
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  EXPECT_EQ(svg.find("nan"), std::string::npos);

  const auto lines = elements(svg, "polyline");
  ASSERT_EQ(lines.size(), 3u);
  // Palette colors for the first two, the given color for the third.
  EXPECT_NE(lines[0].find("stroke=\"#1f77b4\""), std::string::npos);
  EXPECT_NE(lines[1].find("stroke=\"#ff7f0e\""), std::string::npos);
  EXPECT_NE(lines[2].find("stroke=\"#000000\""), std::string::npos);
  // Drawn left to right; on log axes equal ratios give equal pixel steps
  // (1024 -> 4096 -> 16384 are equally spaced).
  const auto dsa = points_of(lines[1]);
  ASSERT_EQ(dsa.size(), 3u);
  EXPECT_LT(dsa[0].first, dsa[1].first);
  EXPECT_NEAR(dsa[1].first - dsa[0].first, dsa[2].first - dsa[1].first, 0.15);
  EXPECT_GT(dsa[0].second, dsa[2].second);  // larger value = higher = smaller pixel y
  // dense's 40 -> 600 -> 9000 is x15 per step: equal vertical steps as well.
  const auto dense = points_of(lines[0]);
  EXPECT_NEAR(dense[0].second - dense[1].second, dense[1].second - dense[2].second, 0.15);
  // Every point inside the plot frame.
  const auto frame = elements(svg, "rect")[1];
  const double fx = attr(frame, "x"), fy = attr(frame, "y"), fw = attr(frame, "width"), fh = attr(frame, "height");
  for (const auto& l : lines)
    for (const auto& [x, y] : points_of(l)) {
      EXPECT_GT(x, fx);
      EXPECT_LT(x, fx + fw);
      EXPECT_GT(y, fy);
      EXPECT_LT(y, fy + fh);
    }
  // One marker per point plus one per legend entry.
  EXPECT_EQ(elements(svg, "circle").size(), 8u + 3u);
}

TEST(LineChart, LegendAvoidsTheLines) {
  // (x, y) of the legend box's top-left corner; the plot spans x 72..776, y 44..424.
  auto legend_at = [](const std::vector<ChartSeries>& s) {
    const std::string svg = line_chart_svg(s, LineChartOptions{});
    for (const auto& r : elements(svg, "rect"))
      if (r.find("rx=\"3\"") != std::string::npos) return std::make_pair(attr(r, "x"), attr(r, "y"));
    return std::make_pair(-1.0, -1.0);
  };
  // Rising line: the top-left corner is free.
  auto [x, y] = legend_at({{"up", {{0, 0}, {10, 10}}, ""}});
  EXPECT_LT(x, 200);
  EXPECT_LT(y, 100);
  // Falling line crosses the top-left (and bottom-right) corner: top-right.
  std::tie(x, y) = legend_at({{"down", {{0, 10}, {10, 0}}, ""}});
  EXPECT_GT(x, 400);
  EXPECT_LT(y, 100);
  // A flat line near the top crosses both top corners: bottom-right comes
  // next in the order of preference, unless a point sits there.
  std::tie(x, y) = legend_at({{"flat", {{0, 9.5}, {10, 9.5}}, ""}, {"dot", {{5, 0}}, ""}});
  EXPECT_GT(x, 400);
  EXPECT_GT(y, 300);
  std::tie(x, y) = legend_at({{"flat", {{0, 9.5}, {10, 9.5}}, ""}, {"dot", {{9.8, 0.2}}, ""}});
  EXPECT_LT(x, 200);
  EXPECT_GT(y, 300);
}

TEST(LineChart, SkipsUnplottablePointsAndHandlesEmptyInput) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  LineChartOptions opt;
  opt.log_x = opt.log_y = true;
  std::vector<ChartSeries> series = {{"a", {{0, 5}, {10, -1}, {nan, 3}, {100, 7}}, ""}, {"b", {{1, 0}}, ""}};
  std::string svg = line_chart_svg(series, opt);
  std::string why;
  EXPECT_TRUE(xml_balanced(svg, &why)) << why;
  ASSERT_EQ(elements(svg, "polyline").size(), 1u);  // b has no positive point on a log axis
  EXPECT_EQ(points_of(elements(svg, "polyline")[0]).size(), 1u);
  EXPECT_EQ(svg.find(">b</text>"), std::string::npos);  // not in the legend
  EXPECT_NE(svg.find(">a</text>"), std::string::npos);

  // The same points on linear axes keep the non-positive ones.
  opt.log_x = opt.log_y = false;
  svg = line_chart_svg(series, opt);
  EXPECT_EQ(points_of(elements(svg, "polyline")[0]).size(), 3u);

  for (const auto& s : {std::vector<ChartSeries>{}, std::vector<ChartSeries>{{"e", {}, ""}}}) {
    svg = line_chart_svg(s, opt);
    EXPECT_TRUE(xml_balanced(svg, &why)) << why;
    EXPECT_NE(svg.find("no data"), std::string::npos);
    EXPECT_TRUE(elements(svg, "polyline").empty());
  }
}

TEST(LineChart, WritesFileAtomically) {
  const fs::path dir = fs::temp_directory_path() / ("sparta_line_chart_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::vector<ChartSeries> s = {{"x", {{1, 2}, {3, 4}}, ""}};
  LineChartOptions opt;
  opt.title = "t";
  write_line_chart_svg(dir / "c.svg", s, opt);
  EXPECT_EQ(read_file(dir / "c.svg"), line_chart_svg(s, opt));
  EXPECT_FALSE(fs::exists(dir / "c.svg.tmp"));
  fs::remove_all(dir);
}
