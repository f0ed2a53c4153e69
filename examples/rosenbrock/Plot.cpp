#include "Plot.h"

#include "Gnuplot.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace rosenbrock {
namespace {

const char *const kColors[] = {"#0072B2", "#56B4E9", "#009E73", "#D55E00", "#E69F00", "#CC79A7"};

} // namespace

void drawDescents(const std::vector<Trajectory> &trajectories, const Function &function, const std::string &stem) {
  const std::string dataPath = std::filesystem::absolute(stem + ".dat").string();
  {
    std::ofstream data(dataPath);
    if (!data)
      throw std::runtime_error("cannot write '" + dataPath + "': " + std::strerror(errno));
    data.precision(9);
    for (const Trajectory &trajectory : trajectories) {
      data << "# " << trajectory.label << "\n# step x y f distance_to_minimum\n";
      for (size_t i = 0; i < trajectory.points.size(); ++i) {
        auto [x, y] = trajectory.points[i];
        data << i << " " << x << " " << y << " " << trajectory.values[i] << " "
             << std::hypot(x - function.a, y - function.a * function.a) << "\n";
      }
      data << "\n\n";
    }
    if (!data.flush())
      throw std::runtime_error("cannot write '" + dataPath + "': write error");
  }
  std::ostringstream paths, distances;
  for (size_t t = 0; t < trajectories.size(); ++t) {
    std::string data = examples::gnuplotQuote(dataPath) + " index " + std::to_string(t);
    std::string look = "lc rgb '" + std::string(kColors[t % std::size(kColors)]) + "' lw 2 dt " +
                       std::to_string(1 + t % 2 * 2);
    std::string title = examples::gnuplotQuote(trajectories[t].label);
    paths << ", \\\n     " << data << " using 2:3:(0) with lines nocontour " << look << " title " << title;
    distances << (t ? ", \\\n     " : "plot ") << data << " using 1:5 with lines " << look << " title " << title;
  }
  std::ostringstream script;
  script << "$MINIMUM << EOD\n" << function.a << " " << function.a * function.a << " 0\nEOD\n"
         << "a = " << function.a << "; b = " << function.b << "\n"
         << "f(x, y) = (a - x)**2 + b * (y - x**2)**2\n"
         << "set multiplot layout 1,2 title 'Rosenbrock f(x,y) = (1-x)^2 + 100(y-x^2)^2 from (-3, 5): Adam "
            "against AdEMAMix (the AdEMAMix paper, Figure 2)' font ',14'\n"
         // Left: the landscape as log10 f, the trajectories on top.
         << "set view map\nset size ratio -1\nset xrange [-3.5:3]\nset yrange [-1:8]\n"
         << "set isosamples 220, 220\nset samples 220, 220\n"
         << "set palette defined (0 '#f7f7f7', 1 '#cccccc', 2 '#888888')\nunset colorbox\n"
         << "set contour base\nset cntrparam levels incremental -1, 0.5, 5\nunset clabel\n"
         << "set key inside top right box opaque font ',10'\n"
         << "set xlabel 'x'\nset ylabel 'y'\nset title 'trajectories over log10 f (the minimum at (1, 1))'\n"
         << "splot log10(f(x, y) + 1e-12) with pm3d notitle nocontour, \\\n"
         << "      log10(f(x, y) + 1e-12) with lines nosurface lc rgb '#aaaaaa' notitle"
         << paths.str() << ", \\\n     $MINIMUM using 1:2:3 with points nocontour pt 3 ps 2.5 lc rgb 'black' title 'minimum'\n"
         << "reset\nset logscale y\nset format y '10^{%L}'\nset grid lc rgb '#dddddd'\n"
         << "set key inside top right box opaque font ',10'\n"
         << "set xlabel 'step'\nset ylabel 'distance to the minimum'\nset title 'distance to (1, 1) against the step'\n"
         << distances.str() << "\n"
         << "unset multiplot\n";
  examples::renderWithGnuplot(script.str(), stem, 1500, 700);
}

} // namespace rosenbrock
