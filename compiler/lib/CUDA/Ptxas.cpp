// Finding the CUDA toolkit and running ptxas. ptxas is a separate program
// (no library to link), so it runs as a child process on temporary files.
#include "optdsl/CUDACompile.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace optdsl {

namespace fs = std::filesystem;

namespace {

bool isFile(const fs::path &path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

std::string readFile(const fs::path &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// A temporary directory removed with its contents at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "optdsl-ptxas-XXXXXX").string();
    if (!mkdtemp(pattern.data()))
      throw std::runtime_error("ptxas: cannot create a temporary directory");
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

} // namespace

std::optional<std::string> findCudaToolkit(const std::string &preferred) {
  std::vector<std::string> candidates;
  if (!preferred.empty())
    candidates.push_back(preferred);
  for (const char *variable : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *value = std::getenv(variable); value && *value)
      candidates.push_back(value);
  candidates.push_back("/usr/local/cuda");
  for (const std::string &root : candidates)
    if (isFile(fs::path(root) / "nvvm" / "libdevice" / "libdevice.10.bc"))
      return root;
  return std::nullopt;
}

std::optional<std::string> findPtxas(const std::string &toolkitPath) {
  if (const char *value = std::getenv("OPTDSL_PTXAS"); value && *value)
    return isFile(value) ? std::optional<std::string>(value) : std::nullopt;
  if (!toolkitPath.empty() && isFile(fs::path(toolkitPath) / "bin" / "ptxas"))
    return (fs::path(toolkitPath) / "bin" / "ptxas").string();
  if (const char *path = std::getenv("PATH")) {
    std::istringstream dirs(path);
    for (std::string dir; std::getline(dirs, dir, ':');)
      if (!dir.empty() && isFile(fs::path(dir) / "ptxas"))
        return (fs::path(dir) / "ptxas").string();
  }
  return std::nullopt;
}

std::string assemblePtx(const std::string &ptxas, const std::string &ptx, const std::string &arch) {
  TempDir dir;
  fs::path input = dir.path / "kernels.ptx", output = dir.path / "kernels.cubin",
           log = dir.path / "ptxas.log";
  std::ofstream(input, std::ios::binary) << ptx;
  std::string archFlag = "-arch=" + arch;
  std::vector<std::string> args = {ptxas, archFlag, "-O3", input.string(), "-o", output.string()};
  std::vector<char *> argv;
  for (std::string &arg : args)
    argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  int spawned = posix_spawn(&pid, ptxas.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0)
    throw std::runtime_error("ptxas: cannot run '" + ptxas + "': " + std::strerror(spawned));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !isFile(output))
    throw std::runtime_error("ptxas " + archFlag + " failed:\n" + readFile(log));
  return readFile(output);
}

} // namespace optdsl
