// charlm: trains a character-level language model with OptDSL rules.
#include "App.h"

#include <iostream>

int main(int argc, char **argv) {
  return charlm::runTrainer(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
