// A program that never called MPI_Init asks for an MPI communicator: a named
// error, not a crash inside MPI.
#include "optrt/MpiCommunicator.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

TEST(MpiCommunicator, NamesMpiThatIsNotInitialised) {
  try {
    optrt::mpiCommunicator(MPI_COMM_WORLD);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("MPI is not initialised"), std::string::npos) << e.what();
  }
}
