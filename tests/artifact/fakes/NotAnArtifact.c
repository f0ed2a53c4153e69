/* A shared library that is not an OptDSL artifact: it lacks optdsl_abi_version. */
int not_an_artifact(void) { return 42; }
