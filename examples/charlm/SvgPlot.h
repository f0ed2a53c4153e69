// A line plot as a standalone SVG file: axes with round-number ticks, axis
// labels, a legend, any number of curves and optional horizontal reference
// lines. No dependency; any browser shows it.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace charlm {

struct PlotSeries {
  std::string label;
  std::string color; // any SVG color
  bool dashed = false;
  std::vector<std::pair<double, double>> points; // (x, y); non-finite y skipped
};

struct PlotLine {
  std::string label;
  double y;
};

struct Plot {
  std::string title, xLabel, yLabel;
  std::vector<PlotSeries> series;
  std::vector<PlotLine> references; // drawn grey, dotted, labelled at the right
};

/// The SVG text of plot.
std::string renderSvg(const Plot &plot);
/// Writes renderSvg(plot) to path; throws std::runtime_error naming the path
/// when it cannot be written.
void writeSvg(const Plot &plot, const std::string &path);

/// Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of
/// ten, about `target` of them.
std::vector<double> niceTicks(double low, double high, int target);

} // namespace charlm
