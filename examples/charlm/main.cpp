// charlm: trains a character-level language model with OptDSL rules.
// With --zero 1 it runs data-parallel over the ranks of mpirun (where it was
// built with MPI): every rank trains, rank 0 prints.
#include "App.h"

#include <algorithm>
#include <iostream>

#ifdef CHARLM_HAVE_MPI
#include "optrt/MpiCommunicator.h"
#endif

int main(int argc, char **argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
#ifdef CHARLM_HAVE_MPI
  if (std::find(args.begin(), args.end(), "--zero") != args.end()) {
    MPI_Init(&argc, &argv);
    int status = 1;
    {
      auto communicator = optrt::mpiCommunicator(MPI_COMM_WORLD);
      std::ostream quiet(nullptr); // ranks other than 0 print nothing
      bool primary = communicator->rank() == 0;
      status = charlm::runTrainer(args, primary ? std::cout : quiet, primary ? std::cerr : quiet, communicator);
    }
    MPI_Finalize();
    return status;
  }
#endif
  return charlm::runTrainer(args, std::cout, std::cerr);
}
