/** @file version.hpp
 *  @brief The library version: the only place it is written (CMake parses these three lines). */
#pragma once

#define ALIGNER_VERSION_MAJOR 0
#define ALIGNER_VERSION_MINOR 1
#define ALIGNER_VERSION_PATCH 0
