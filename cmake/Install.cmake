# `cmake --install` and find_package(OptDSL) for other projects:
#   OptDSL::optrt            the runtime (loads artifacts; needs no LLVM/MLIR)
#   OptDSL::optc             the compiler driver, used by optdsl_add_rule
#   OptDSL::OptDSLCompiler   the compiler library for in-process JIT; only
#                            with find_package(OptDSL COMPONENTS jit), which
#                            also finds MLIR 19 and Boost
#   OptDSL::optrt_mpi        sharding over MPI (optrt/MpiCommunicator.h); only
#                            with find_package(OptDSL COMPONENTS mpi), and
#                            only where this build found MPI
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The installed optc keeps its path to the system's libMLIR/libLLVM.
set_target_properties(optc PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)

set(OPTDSL_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/OptDSL)
install(TARGETS optrt EXPORT OptDSLRuntimeTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS optc EXPORT OptDSLRuntimeTargets
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS OptDSLCompiler EXPORT OptDSLCompilerTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/optrt
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/compiler/include/optdsl ${PROJECT_BINARY_DIR}/compiler/include/optdsl
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h" PATTERN "*.inc")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/dsl/ DESTINATION ${CMAKE_INSTALL_DATADIR}/optdsl/rules
        FILES_MATCHING PATTERN "*.opt")
install(EXPORT OptDSLRuntimeTargets NAMESPACE OptDSL:: DESTINATION ${OPTDSL_CMAKE_DIR})
install(EXPORT OptDSLCompilerTargets NAMESPACE OptDSL:: DESTINATION ${OPTDSL_CMAKE_DIR})
if(TARGET optrt_mpi)
  install(TARGETS optrt_mpi EXPORT OptDSLMpiTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT OptDSLMpiTargets NAMESPACE OptDSL:: DESTINATION ${OPTDSL_CMAKE_DIR})
endif()

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/OptDSLConfig.cmake.in
  ${PROJECT_BINARY_DIR}/OptDSLConfig.cmake INSTALL_DESTINATION ${OPTDSL_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/OptDSLConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/OptDSLConfig.cmake ${PROJECT_BINARY_DIR}/OptDSLConfigVersion.cmake
              ${CMAKE_CURRENT_LIST_DIR}/OptDSLRules.cmake
        DESTINATION ${OPTDSL_CMAKE_DIR})
