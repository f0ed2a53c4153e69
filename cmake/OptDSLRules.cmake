# optdsl_add_rule: compile an OptDSL rule into a kernel artifact at build time.
#
#   optdsl_add_rule(NAME <name> SOURCE <rule.opt>
#                   [LAYOUTS <layout>...]      # default: f32 (written as in optrt/Layout.h)
#                   [TARGETS cpu [cuda]]       # default: cpu; cuda embeds PTX/cubins
#                                              # (needs the CUDA toolkit, not a GPU)
#                   [FIX <hyper>=<value>...]   # hypers folded into the kernels
#                   [CPU <cpu>]                # default: ${OPTDSL_CPU}, else portable
#                   [OUTPUT_DIRECTORY <dir>])  # default: the current binary dir
#
# Creates the custom target optdsl_rule_<name>, which builds
# <dir>/libopt_<name>.so with optc; the build reruns optc whenever the .opt
# file or optc changes. The target's property OPTDSL_ARTIFACT holds the
# library's path, e.g. for a compile definition of the program that loads it:
#
#   add_dependencies(trainer optdsl_rule_adamw)
#   target_compile_definitions(trainer PRIVATE
#     ADAMW_SO="$<TARGET_PROPERTY:optdsl_rule_adamw,OPTDSL_ARTIFACT>")
#
# Works in OptDSL's own tree (optc target) and in a project that did
# find_package(OptDSL) (OptDSL::optc). Argument mistakes stop configuration
# with a message naming them.
#
# optdsl_link_rule(<target> <name>): the one line a program that loads the
# rule needs: links optrt, builds the rule first, copies the artifact next to
# the program, and defines OPTDSL_RULE_<NAME> (upper case) as its file name,
# "libopt_<name>.so", for optrt::findArtifact (no path is compiled in):
#
#   optdsl_link_rule(trainer adamw)
#   ... optrt::loadArtifact(optrt::findArtifact(OPTDSL_RULE_ADAMW))
#
# optdsl_install_rule(<name> [DESTINATION <dir>]): installs the artifact in
# <prefix>/lib/optdsl (default), where findArtifact looks from an installed
# <prefix>/bin program, however the prefix is moved.
include_guard(GLOBAL)

function(optdsl_add_rule)
  cmake_parse_arguments(PARSE_ARGV 0 ARG "" "NAME;SOURCE;CPU;OUTPUT_DIRECTORY" "LAYOUTS;TARGETS;FIX")
  set(where "optdsl_add_rule(${ARG_NAME})")
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "${where}: unexpected arguments: ${ARG_UNPARSED_ARGUMENTS} "
                        "(keywords: NAME SOURCE LAYOUTS TARGETS FIX CPU OUTPUT_DIRECTORY)")
  endif()
  if(ARG_KEYWORDS_MISSING_VALUES)
    message(FATAL_ERROR "${where}: no value after ${ARG_KEYWORDS_MISSING_VALUES}")
  endif()
  if(NOT ARG_NAME MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
    message(FATAL_ERROR "optdsl_add_rule: NAME '${ARG_NAME}' must be an identifier "
                        "(it names libopt_<NAME>.so and the target optdsl_rule_<NAME>)")
  endif()
  if(TARGET optdsl_rule_${ARG_NAME})
    message(FATAL_ERROR "${where}: a rule named '${ARG_NAME}' was already added")
  endif()
  if(NOT ARG_SOURCE)
    message(FATAL_ERROR "${where}: SOURCE <file.opt> is required")
  endif()
  get_filename_component(source "${ARG_SOURCE}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  if(NOT EXISTS "${source}" OR IS_DIRECTORY "${source}")
    message(FATAL_ERROR "${where}: SOURCE '${ARG_SOURCE}' is not a file (looked at ${source})")
  endif()

  set(targets ${ARG_TARGETS})
  if(NOT targets)
    set(targets cpu)
  endif()
  set(options)
  foreach(target IN LISTS targets)
    if(target STREQUAL "cuda")
      # The CPU kernels are always built (the host functions serve both).
      list(APPEND options --cuda)
    elseif(NOT target STREQUAL "cpu")
      message(FATAL_ERROR "${where}: unknown target '${target}' in TARGETS (expected cpu or cuda)")
    endif()
  endforeach()

  foreach(layout IN LISTS ARG_LAYOUTS)
    # The full check (known dtypes, state names) is optc's; this catches
    # list mistakes at configure time.
    if(NOT layout MATCHES "^(f32|[A-Za-z_][A-Za-z0-9_]*=[a-z0-9]+(,[A-Za-z_][A-Za-z0-9_]*=[a-z0-9]+)*)$")
      message(FATAL_ERROR "${where}: LAYOUTS item '${layout}' is not a written layout "
                          "(f32, or KEY=DTYPE items separated by commas, e.g. param=bf16,master=f32)")
    endif()
    list(APPEND options "--layout=${layout}")
  endforeach()
  foreach(fix IN LISTS ARG_FIX)
    if(NOT fix MATCHES "^[A-Za-z_][A-Za-z0-9_]*=[-+0-9.eE]+$")
      message(FATAL_ERROR "${where}: FIX item '${fix}' is not NAME=NUMBER")
    endif()
    list(APPEND options --fix "${fix}")
  endforeach()
  set(cpu "${ARG_CPU}")
  if(NOT cpu)
    set(cpu "${OPTDSL_CPU}")
  endif()
  if(NOT cpu)
    set(cpu portable)
  endif()

  if(TARGET OptDSL::optc)
    set(optc OptDSL::optc)
  elseif(TARGET optc)
    set(optc optc)
  else()
    message(FATAL_ERROR "${where}: no optc (call find_package(OptDSL) first)")
  endif()
  set(directory "${ARG_OUTPUT_DIRECTORY}")
  if(NOT directory)
    set(directory "${CMAKE_CURRENT_BINARY_DIR}")
  endif()
  set(artifact "${directory}/libopt_${ARG_NAME}.so")
  # The transforms a rule may apply (`apply NAME;`) live in transforms/ next
  # to it: an edit there rebuilds the artifact too.
  get_filename_component(source_dir "${source}" DIRECTORY)
  file(GLOB transforms CONFIGURE_DEPENDS "${source_dir}/transforms/*.opt")
  add_custom_command(
    OUTPUT "${artifact}"
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${directory}"
    COMMAND ${optc} "${source}" --emit=so "--cpu=${cpu}" ${options} -o "${artifact}"
    DEPENDS "${source}" ${transforms} ${optc}
    COMMENT "optc: ${ARG_NAME} (${ARG_SOURCE}) -> libopt_${ARG_NAME}.so"
    VERBATIM)
  add_custom_target(optdsl_rule_${ARG_NAME} ALL DEPENDS "${artifact}")
  set_target_properties(optdsl_rule_${ARG_NAME} PROPERTIES OPTDSL_ARTIFACT "${artifact}")
endfunction()

function(optdsl_link_rule target name)
  set(where "optdsl_link_rule(${target} ${name})")
  if(ARGN)
    message(FATAL_ERROR "${where}: unexpected arguments: ${ARGN}")
  endif()
  if(NOT TARGET ${target})
    message(FATAL_ERROR "${where}: '${target}' is not a target")
  endif()
  if(NOT TARGET optdsl_rule_${name})
    message(FATAL_ERROR "${where}: no rule '${name}' (add it with optdsl_add_rule(NAME ${name} ...) first)")
  endif()
  if(TARGET OptDSL::optrt)
    target_link_libraries(${target} PRIVATE OptDSL::optrt)
  else()
    target_link_libraries(${target} PRIVATE optrt)
  endif()
  add_dependencies(${target} optdsl_rule_${name})
  string(TOUPPER "${name}" upper)
  target_compile_definitions(${target} PRIVATE OPTDSL_RULE_${upper}="libopt_${name}.so")
  get_target_property(artifact optdsl_rule_${name} OPTDSL_ARTIFACT)
  add_custom_command(TARGET ${target} POST_BUILD
    COMMAND "${CMAKE_COMMAND}" -E copy_if_different "${artifact}" "$<TARGET_FILE_DIR:${target}>"
    VERBATIM)
endfunction()

function(optdsl_install_rule name)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "DESTINATION" "")
  set(where "optdsl_install_rule(${name})")
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "${where}: unexpected arguments: ${ARG_UNPARSED_ARGUMENTS} (keyword: DESTINATION)")
  endif()
  if(NOT TARGET optdsl_rule_${name})
    message(FATAL_ERROR "${where}: no rule '${name}' (add it with optdsl_add_rule(NAME ${name} ...) first)")
  endif()
  set(destination "${ARG_DESTINATION}")
  if(NOT destination)
    set(destination lib/optdsl)
  endif()
  get_target_property(artifact optdsl_rule_${name} OPTDSL_ARTIFACT)
  install(PROGRAMS "${artifact}" DESTINATION "${destination}")
endfunction()
