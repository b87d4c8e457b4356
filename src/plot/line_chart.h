#pragma once
// Layer plot: self-contained SVG charts (loss curves, benchmark lines).
// A generic line chart as a self-contained SVG (no scripts, fonts or external
// files): several named series, each a line with point markers, on linear or
// logarithmic axes. Same look as the loss plot (plot/loss_plot.h), whose
// nice_ticks / format_tick it uses for linear axes.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace sparta {

// Tick positions and their labels for one axis; the axis spans [lo, hi]
// (lo < hi). values are ascending and lie inside [lo, hi].
struct ChartTicks {
  double lo = 0, hi = 1;
  std::vector<double> values;
  std::vector<std::string> labels;  // one per value
};

// Ticks for a logarithmic axis showing data in [lo, hi] (0 < lo <= hi after
// the fix-ups below). The axis is the data range widened by 5% of its span
// in log10 units on each side (at least 0.05 decades), so the extreme points
// do not sit on the frame. Tick values are m·10^e with the mantissa m from
// {1, 2, 5} when the axis spans at most 3 decades, else {1} (whole decades),
// keeping every k-th decade when there would be more than max_ticks. When
// fewer than two ticks fall inside, the axis is widened to the nearest tick
// values below lo and above hi. Labels: format_tick(v, v), e.g. "2k", "50",
// "0.05". Non-finite or non-positive input is replaced by [1, 10]; lo > hi
// is swapped. max_ticks < 2 counts as 2.
ChartTicks log_ticks(double lo, double hi, int max_ticks = 10);

// Linear-axis ticks: nice_ticks(lo, hi, target) labelled with format_tick.
ChartTicks linear_ticks(double lo, double hi, int target = 6);

struct ChartSeries {
  std::string name;                              // legend text
  std::vector<std::pair<double, double>> points;  // (x, y); drawn in increasing x
  std::string color;                             // CSS color; "" = next of a 10-color palette
};

struct LineChartOptions {
  std::string title, x_title, y_title;
  bool log_x = false, log_y = false;
  // Optional fixed x ticks (value, label), e.g. sequence lengths labelled
  // "1K", "4K". Empty = automatic ticks. With fixed ticks the x axis covers
  // the data and every tick (widened as for automatic log ticks).
  std::vector<std::pair<double, std::string>> x_ticks;
};

// The chart as SVG text. Points with a NaN or infinite coordinate, or with a
// coordinate <= 0 on a log axis, are skipped. Each series is a polyline with
// a circle marker per point; the legend names the series that have points,
// in the given order, in the plot corner the lines cross least (top-left,
// top-right, bottom-right, bottom-left: the first of the least crossed). Any input is accepted:
// no series, empty series, a single point, constant values ("no data" is
// written in the plot when nothing remains to draw).
std::string line_chart_svg(const std::vector<ChartSeries>& series, const LineChartOptions& opt);

// line_chart_svg written to `svg` atomically (tmp file + rename).
void write_line_chart_svg(const std::filesystem::path& svg, const std::vector<ChartSeries>& series,
                          const LineChartOptions& opt);

}  // namespace sparta
