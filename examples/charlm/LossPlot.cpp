#include "LossPlot.h"

#include "Gnuplot.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace charlm {
namespace {

// Colours that stay apart for the colour-blind (Okabe and Ito), one per rule.
const char *const kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"};

/// The index of `value` in `seen`, appended when new: rules and layouts
/// keep the style of their first appearance.
size_t indexOf(std::vector<std::string> &seen, const std::string &value) {
  auto it = std::find(seen.begin(), seen.end(), value);
  if (it != seen.end())
    return it - seen.begin();
  seen.push_back(value);
  return seen.size() - 1;
}

std::string number(double value) {
  if (!std::isfinite(value))
    return "NaN";
  std::ostringstream text;
  text.precision(7);
  text << value;
  return text.str();
}

} // namespace

void drawLossCurves(const std::vector<RunResult> &results, double unigramEntropy, int batch,
                    const std::string &stem) {
  const std::string dataPath = std::filesystem::absolute(stem + ".dat").string();
  {
    std::ofstream data(dataPath);
    if (!data)
      throw std::runtime_error("cannot write '" + dataPath + "': " + std::strerror(errno));
    for (const RunResult &result : results) {
      data << "# " << result.label << "\n# step characters train_loss val_loss\n";
      for (const CurvePoint &point : result.curve)
        data << point.step << " " << static_cast<long long>(point.step) * batch << " " << number(point.trainLoss)
             << " " << number(point.valLoss) << "\n";
      data << "\n\n"; // gnuplot: the next run is the next index
    }
    if (!data.flush())
      throw std::runtime_error("cannot write '" + dataPath + "': write error");
  }

  // Both panels show the same range, from just under the lowest loss to just
  // over the unigram entropy: the first steps from ln(vocab) down to it are
  // the same for every rule and would flatten what differs.
  double low = std::numeric_limits<double>::infinity();
  size_t points = 0;
  for (const RunResult &result : results) {
    points = std::max(points, result.curve.size());
    for (const CurvePoint &point : result.curve)
      for (double loss : {point.trainLoss, point.valLoss})
        if (std::isfinite(loss))
          low = std::min(low, loss);
  }
  double high = unigramEntropy + 0.15;
  low = std::isfinite(low) ? std::min(low, unigramEntropy) - 0.05 : 0;
  // A marker every `markerEvery` points, each layout's at another phase: two
  // runs whose lines coincide (the same rule in two layouts) still show both
  // markers. The legend entry draws line and marker together.
  size_t markerEvery = std::max<size_t>(1, points / 10);

  std::vector<std::string> rules, layouts;
  for (const RunResult &result : results) {
    indexOf(rules, result.rule);
    indexOf(layouts, result.layout);
  }
  std::ostringstream plots[2]; // validation, training
  for (size_t r = 0; r < results.size(); ++r) {
    size_t colour = indexOf(rules, results[r].rule), style = indexOf(layouts, results[r].layout);
    size_t phase = style * markerEvery / layouts.size();
    std::string look = "lc rgb '" + std::string(kColors[colour % std::size(kColors)]) + "'";
    std::string line = look + " lw 2 dt " + std::to_string(1 + style % 5);
    std::string marker = look + " pt " + std::to_string(4 + 2 * (style % 6)) + " ps 1.3 lw 2";
    for (int panel = 0; panel < 2; ++panel) {
      std::string data = examples::gnuplotQuote(dataPath) + " index " + std::to_string(r);
      std::string column = panel == 0 ? "4" : "3";
      plots[panel] << (r ? ", \\\n     " : "plot ") << data << " using 1:" << column << " with lines " << line
                   << " notitle, \\\n     " << data << " using 1:(int($0) % " << markerEvery << " == " << phase
                   << " ? $" << column << " : NaN) with points " << marker << " notitle, \\\n     keyentry with linespoints "
                   << line << " pt " << 4 + 2 * (style % 6) << " ps 1.3 title "
                   << examples::gnuplotQuote(results[r].label);
    }
  }
  std::ostringstream script;
  script << "set datafile missing 'NaN'\n"
         << "set multiplot layout 2,1 title 'charlm: loss per character (nats), the same data and start for every "
            "run' font ',15'\n"
         << "set grid lc rgb '#dddddd'\n"
         << "set key inside top right box opaque samplen 4 spacing 1.15 font ',11'\n"
         << "set xlabel 'optimizer step (" << batch << " characters each)'\n"
         << "set yrange [" << number(low) << ":" << number(high) << "]\n";
  const char *titles[] = {"validation loss (held-out text)", "training loss (mean of the batches since the last point)"};
  for (int panel = 0; panel < 2; ++panel)
    script << "set ylabel '" << titles[panel] << "'\n"
           << plots[panel].str() << ", \\\n     " << number(unigramEntropy)
           << " with lines dt 3 lw 2 lc rgb '#777777' title 'unigram entropy (no context)'\n";
  script << "unset multiplot\n";
  examples::renderWithGnuplot(script.str(), stem, 1100, 1000);
}

} // namespace charlm
