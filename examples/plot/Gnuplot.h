// Plots through gnuplot (Debian's gnuplot-nox): the examples write their
// curves as a data file and a script that draws them, and gnuplot renders
// the script to SVG and PNG. The data and the script stay beside the
// pictures, so a plot can be restyled and redrawn without training again.
#pragma once

#include <string>

namespace examples {

/// The path of a plot without its picture suffix: "out/loss.svg" and
/// "out/loss.png" both give "out/loss"; any other name is kept whole.
std::string plotStem(const std::string &path);

/// A string literal for a gnuplot script: single-quoted, quotes doubled.
std::string gnuplotQuote(const std::string &text);

/// Writes `stem.gp` (`script` after the lines that pick the terminal and the
/// output, once for `stem.svg` and once for `stem.png`, width x height
/// pixels) and runs gnuplot on it. Throws std::runtime_error naming the
/// problem when the script cannot be written, gnuplot is not installed
/// (saying which package brings it) or gnuplot fails (with its messages).
void renderWithGnuplot(const std::string &script, const std::string &stem, int width, int height);

} // namespace examples
