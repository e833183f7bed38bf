# Finds aligner's header-only dependencies: Eigen 3.3+ and xsimd 8+ (with Debian's xtl quirk).
# Used by the build and, installed next to alignerConfig.cmake, by consumers.
include(CMakeFindDependencyMacro)
if(NOT TARGET Eigen3::Eigen)
  find_dependency(Eigen3 3.3 NO_MODULE)
endif()
# Debian's xsimd 8 target lists a plain `xtl` in INTERFACE_LINK_LIBRARIES: without an xtl target the link
# line gets `-lxtl` and fails. Find the real one, or make a header-only stand-in.
if(NOT TARGET xtl)
  find_package(xtl QUIET)
endif()
if(NOT TARGET xtl)
  add_library(xtl INTERFACE IMPORTED GLOBAL)
endif()
if(NOT TARGET xsimd)
  find_dependency(xsimd 8)
endif()
