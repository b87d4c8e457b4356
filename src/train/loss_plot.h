#pragma once
// Loss curves as a self-contained SVG (no scripts, fonts or external files),
// so a run folder's loss.svg opens in any browser or image viewer.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace sparta {

// Round axis ticks covering [lo, hi] (Heckbert's "nice numbers"): the step is
// 1, 2 or 5 times a power of ten, giving about `target` ticks; lo/hi are
// widened to multiples of the step. A degenerate or non-finite range is first
// widened so there is always at least one interval.
struct AxisTicks {
  double lo = 0, hi = 1, step = 1;
  std::vector<double> values;  // lo, lo + step, ..., hi
};
AxisTicks nice_ticks(double lo, double hi, int target = 6);

// Tick label with just the decimals `step` needs: (2.5, 0.5) -> "2.5",
// (3, 0.5) -> "3.0", (1500, 500) -> "1500". Steps of 1000 or more use a
// k / M / G suffix without trailing zeros: (20000, 5000) -> "20k",
// (27500, 2500) -> "27.5k".
std::string format_tick(double value, double step);

// The chart as SVG text. train / val: (step, loss) points; points with a
// NaN or infinite coordinate are skipped. Train is a thin line, validation a
// line with markers; axes with round tick labels, titles "step" and "loss",
// a light grid and a legend naming the series that have points. Any input is
// accepted: empty series, a single point, constant values.
std::string loss_plot_svg(const std::vector<std::pair<double, double>>& train,
                          const std::vector<std::pair<double, double>>& val, const std::string& title);

// loss_plot_svg written to `svg` atomically (tmp file + rename).
void write_loss_plot_svg(const std::filesystem::path& svg,
                         const std::vector<std::pair<double, double>>& train,
                         const std::vector<std::pair<double, double>>& val, const std::string& title);

// Text for SVG/XML content and attributes: & < > " ' escaped, control
// characters other than tab and newline (not allowed in XML 1.0) as spaces.
// Shared by every SVG sparta writes (loss plot, line charts, sweep plot).
std::string xml_escape(const std::string& s);

}  // namespace sparta
