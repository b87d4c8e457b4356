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

// The loss range the y axis should show. The first steps' loss (about
// ln(vocab), 5.6 for bytes) is far above the rest of a run, and an axis
// that includes it squeezes the part that matters into a thin band. So when
// there are at least 10 training points after the first 10% of the step
// range ("later" points), the top is the 99th percentile of the later
// training losses (or the highest later validation loss, if higher) plus 5%
// of the range; the earlier points above it are clipped (`clipped` = true).
// Clipping is skipped when it would gain less than a fifth of the height
// (everything above the cap is within 25% of the kept range). lo is the
// lowest loss of all. Non-finite points are ignored; no points gives [0, 1].
struct LossAxisRange {
  double lo = 0, hi = 1;
  bool clipped = false;  // some points lie above hi
};
LossAxisRange loss_axis_range(const std::vector<std::pair<double, double>>& train,
                              const std::vector<std::pair<double, double>>& val);

// The chart as SVG text. train / val: (step, loss) points; points with a
// NaN or infinite coordinate are skipped. Train is a thin line, validation a
// line with markers; axes with round tick labels, titles "step" and "loss",
// a light grid and a legend naming the series that have points. The y axis
// spans loss_axis_range; points above it are drawn on the top edge, marked
// with a triangle (class "clipped"), and a note in the plot says how many
// were clipped and their largest loss. Any input is accepted: empty series,
// a single point, constant values.
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
