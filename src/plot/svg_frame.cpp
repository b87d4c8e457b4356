#include "plot/svg_frame.h"

#include <cstdio>

#include "core/error.h"
#include "plot/loss_plot.h"

namespace sparta::svg {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string document_head(const std::string& title) {
  std::string s = cat("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", kWidth, "\" height=\"", kHeight,
                      "\" viewBox=\"0 0 ", kWidth, " ", kHeight,
                      "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n");
  s += cat("<rect width=\"", kWidth, "\" height=\"", kHeight, "\" fill=\"#ffffff\"/>\n");
  s += cat("<text x=\"", num(kLeft + kPlotW / 2),
           "\" y=\"26\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\" fill=\"#222\">",
           xml_escape(title), "</text>\n");
  return s;
}

std::string grid(const std::vector<double>& xs, const std::vector<double>& ys) {
  std::string s = "<g stroke=\"#e6e6e6\" stroke-width=\"1\">\n";
  for (double x : xs)
    s += cat("<line x1=\"", num(x), "\" y1=\"", num(kTop), "\" x2=\"", num(x), "\" y2=\"", num(kTop + kPlotH),
             "\"/>\n");
  for (double y : ys)
    s += cat("<line x1=\"", num(kLeft), "\" y1=\"", num(y), "\" x2=\"", num(kLeft + kPlotW), "\" y2=\"", num(y),
             "\"/>\n");
  s += "</g>\n";
  return s;
}

}  // namespace sparta::svg
