#include "Gnuplot.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace examples {
namespace {

bool endsWith(const std::string &text, const std::string &suffix) {
  return text.size() > suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string readAll(const std::string &path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

} // namespace

std::string plotStem(const std::string &path) {
  for (const char *suffix : {".svg", ".png"})
    if (endsWith(path, suffix))
      return path.substr(0, path.size() - std::strlen(suffix));
  return path;
}

std::string gnuplotQuote(const std::string &text) {
  std::string quoted = "'";
  for (char c : text)
    quoted += c == '\'' ? std::string("''") : std::string(1, c);
  return quoted + "'";
}

void renderWithGnuplot(const std::string &script, const std::string &stem, int width, int height) {
  const std::string scriptPath = stem + ".gp", messagesPath = stem + ".gnuplot.log";
  {
    std::ofstream out(scriptPath);
    if (!out)
      throw std::runtime_error("cannot write the plot script '" + scriptPath + "': " + std::strerror(errno));
    // One script, two pictures: the same drawing commands after each
    // terminal, so the SVG and the PNG show the same plot.
    const std::pair<const char *, const char *> terminals[] = {
        {"svg", "set terminal svg size %d,%d dynamic enhanced font 'Sans,13' background rgb 'white'"},
        {"png", "set terminal pngcairo size %d,%d enhanced font 'Sans,11' background rgb 'white'"}};
    for (const auto &[suffix, terminal] : terminals) {
      char line[160];
      std::snprintf(line, sizeof line, terminal, width, height);
      out << "reset\n" << line << "\nset output " << gnuplotQuote(stem + "." + suffix) << "\n"
          << script << "\nunset output\n";
    }
    if (!out.flush())
      throw std::runtime_error("cannot write the plot script '" + scriptPath + "': write error");
  }
  // gnuplot's messages go to a file so that a failure can quote them.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, messagesPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  const char *argv[] = {"gnuplot", scriptPath.c_str(), nullptr};
  pid_t pid;
  int spawned = posix_spawnp(&pid, "gnuplot", &actions, nullptr, const_cast<char **>(argv), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned == ENOENT)
    throw std::runtime_error("cannot draw '" + stem + ".svg': gnuplot is not installed (Debian: apt-get install "
                             "gnuplot-nox; ./dev.sh installs it); the script is '" + scriptPath + "'");
  if (spawned != 0)
    throw std::runtime_error("cannot run gnuplot: " + std::string(std::strerror(spawned)));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      throw std::runtime_error("waiting for gnuplot: " + std::string(std::strerror(errno)));
  std::string messages = readAll(messagesPath);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("gnuplot failed on '" + scriptPath + "':\n" + messages);
  // A clean run says nothing; keep no empty log beside the pictures.
  if (messages.empty())
    std::remove(messagesPath.c_str());
}

} // namespace examples
