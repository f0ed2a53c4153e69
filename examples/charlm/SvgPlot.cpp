#include "SvgPlot.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace charlm {
namespace {

std::string escape(const std::string &text) {
  std::string out;
  for (char c : text) {
    switch (c) {
    case '<': out += "&lt;"; break;
    case '>': out += "&gt;"; break;
    case '&': out += "&amp;"; break;
    case '"': out += "&quot;"; break;
    default: out += c;
    }
  }
  return out;
}

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", value);
  return text;
}

std::string tickLabel(double value, double step) {
  int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  char text[32];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

} // namespace

std::vector<double> niceTicks(double low, double high, int target) {
  if (!(high > low))
    high = low + 1;
  double raw = (high - low) / std::max(1, target);
  double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power * (raw / power < 1.5 ? 1 : raw / power < 3.5 ? 2 : raw / power < 7.5 ? 5 : 10);
  std::vector<double> ticks;
  for (double t = std::ceil(low / step - 1e-9) * step; t <= high + step * 1e-9; t += step)
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

std::string renderSvg(const Plot &plot) {
  const double width = 820, height = 520, left = 80, right = 200, top = 50, bottom = 70;
  const double plotW = width - left - right, plotH = height - top - bottom;

  double xMin = std::numeric_limits<double>::infinity(), xMax = -xMin, yMin = xMin, yMax = -xMin;
  for (const auto &series : plot.series)
    for (auto [x, y] : series.points)
      if (std::isfinite(x) && std::isfinite(y)) {
        xMin = std::min(xMin, x), xMax = std::max(xMax, x);
        yMin = std::min(yMin, y), yMax = std::max(yMax, y);
      }
  for (const auto &line : plot.references)
    yMin = std::min(yMin, line.y), yMax = std::max(yMax, line.y);
  if (!std::isfinite(xMin))
    xMin = 0, xMax = 1;
  if (!std::isfinite(yMin))
    yMin = 0, yMax = 1;
  std::vector<double> xTicks = niceTicks(xMin, xMax, 8), yTicks = niceTicks(yMin, yMax, 8);
  // Extend the axes to whole ticks so that every curve lies inside.
  double xStep = xTicks.size() > 1 ? xTicks[1] - xTicks[0] : 1, yStep = yTicks.size() > 1 ? yTicks[1] - yTicks[0] : 1;
  xMin = std::min(xMin, std::floor(xMin / xStep + 1e-9) * xStep);
  xMax = std::max(xMax, std::ceil(xMax / xStep - 1e-9) * xStep);
  yMin = std::floor(yMin / yStep + 1e-9) * yStep;
  yMax = std::ceil(yMax / yStep - 1e-9) * yStep;
  if (xMax <= xMin) xMax = xMin + 1;
  if (yMax <= yMin) yMax = yMin + 1;
  xTicks = niceTicks(xMin, xMax, 8);
  yTicks = niceTicks(yMin, yMax, 8);
  auto sx = [&](double x) { return left + (x - xMin) / (xMax - xMin) * plotW; };
  auto sy = [&](double y) { return top + (yMax - y) / (yMax - yMin) * plotH; };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height << "\" font-family=\"sans-serif\" font-size=\"13\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << left + plotW / 2 << "\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">"
      << escape(plot.title) << "</text>\n";
  // Grid and ticks.
  for (double x : xTicks) {
    std::string px = number(sx(x));
    svg << "<line x1=\"" << px << "\" y1=\"" << top << "\" x2=\"" << px << "\" y2=\"" << top + plotH
        << "\" stroke=\"#e6e6e6\"/>\n<text x=\"" << px << "\" y=\"" << top + plotH + 20
        << "\" text-anchor=\"middle\">" << tickLabel(x, xStep) << "</text>\n";
  }
  for (double y : yTicks) {
    std::string py = number(sy(y));
    svg << "<line x1=\"" << left << "\" y1=\"" << py << "\" x2=\"" << left + plotW << "\" y2=\"" << py
        << "\" stroke=\"#e6e6e6\"/>\n<text x=\"" << left - 8 << "\" y=\"" << py
        << "\" text-anchor=\"end\" dominant-baseline=\"middle\">" << tickLabel(y, yStep) << "</text>\n";
  }
  svg << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plotW << "\" height=\"" << plotH
      << "\" fill=\"none\" stroke=\"black\"/>\n";
  // Axis labels.
  svg << "<text x=\"" << left + plotW / 2 << "\" y=\"" << height - 22 << "\" text-anchor=\"middle\">"
      << escape(plot.xLabel) << "</text>\n"
      << "<text transform=\"translate(24 " << top + plotH / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
      << escape(plot.yLabel) << "</text>\n";
  // Reference lines.
  for (const auto &line : plot.references) {
    std::string py = number(sy(line.y));
    svg << "<line x1=\"" << left << "\" y1=\"" << py << "\" x2=\"" << left + plotW << "\" y2=\"" << py
        << "\" stroke=\"#888\" stroke-dasharray=\"2 3\"/>\n<text x=\"" << left + plotW - 6 << "\" y=\""
        << number(sy(line.y) - 6) << "\" text-anchor=\"end\" fill=\"#555\">" << escape(line.label) << "</text>\n";
  }
  // Curves.
  for (const auto &series : plot.series) {
    svg << "<polyline fill=\"none\" stroke=\"" << escape(series.color) << "\" stroke-width=\"2\""
        << (series.dashed ? " stroke-dasharray=\"6 4\"" : "") << " points=\"";
    for (auto [x, y] : series.points)
      if (std::isfinite(x) && std::isfinite(y))
        svg << number(sx(x)) << "," << number(sy(y)) << " ";
    svg << "\"/>\n";
  }
  // Legend, right of the plot.
  double ly = top + 10;
  for (const auto &series : plot.series) {
    svg << "<line x1=\"" << left + plotW + 16 << "\" y1=\"" << ly << "\" x2=\"" << left + plotW + 46 << "\" y2=\""
        << ly << "\" stroke=\"" << escape(series.color) << "\" stroke-width=\"2\""
        << (series.dashed ? " stroke-dasharray=\"6 4\"" : "") << "/>\n<text x=\"" << left + plotW + 52
        << "\" y=\"" << ly << "\" dominant-baseline=\"middle\">" << escape(series.label) << "</text>\n";
    ly += 22;
  }
  svg << "</svg>\n";
  return svg.str();
}

void writeSvg(const Plot &plot, const std::string &path) {
  std::ofstream out(path);
  if (!out)
    throw std::runtime_error("cannot write the plot '" + path + "': " + std::strerror(errno));
  out << renderSvg(plot);
  out.close();
  if (!out)
    throw std::runtime_error("cannot write the plot '" + path + "': write error");
}

} // namespace charlm
