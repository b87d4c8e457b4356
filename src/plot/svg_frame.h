#pragma once
// What the two SVG charts (plot/loss_plot.h, plot/line_chart.h) share, so
// they look the same: the geometry, the document head with the title, the
// grid, and how coordinates are written.
#include <string>
#include <vector>

namespace sparta::svg {

// Chart geometry (SVG user units = px).
constexpr double kWidth = 800, kHeight = 480;
constexpr double kLeft = 72, kRight = 24, kTop = 44, kBottom = 56;
constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;

// A coordinate, one decimal.
std::string num(double v);

// The XML declaration, the opening <svg> element, a white background and
// the title (escaped) centred above the plot area.
std::string document_head(const std::string& title);

// Light grey grid lines across the plot area: vertical ones at pixel x
// positions xs, horizontal ones at pixel y positions ys; one <g> group.
std::string grid(const std::vector<double>& xs, const std::vector<double>& ys);

}  // namespace sparta::svg
