// The one translation unit of the program that compiles the kernels' instances (ALIGNER_SEPARATE_KERNELS).
#define ALIGNER_KERNELS_IMPLEMENTATION
#include <aligner/aligner.hpp>
