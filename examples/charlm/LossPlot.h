// The loss curves of a charlm run, drawn by gnuplot (examples/plot).
#pragma once

#include "Trainer.h"

#include <string>
#include <vector>

namespace charlm {

/// Writes every run's curve to `stem.dat` (one block per run: step,
/// characters seen, training loss, validation loss) and draws it into
/// `stem.svg` and `stem.png`: validation loss above, training loss below,
/// one colour per rule and one line style and marker per layout, the legend
/// inside each panel, the unigram entropy dotted. Throws std::runtime_error
/// naming the problem when a file cannot be written or gnuplot fails.
void drawLossCurves(const std::vector<RunResult> &results, double unigramEntropy, int batch, const std::string &stem);

} // namespace charlm
