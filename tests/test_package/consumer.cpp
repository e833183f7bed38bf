#include <aligner/aligner.hpp>

#include <cmath>
#include <cstdio>

float second_tu_score();

int main() {
  const float q[] = {1.f, 0.f, 0.f, 1.f};
  const float d[] = {1.f, 0.f, 0.5f, 0.5f, 0.f, 2.f};
#if defined(ALIGNER_CONSUMER_REFERENCE)  // add_subdirectory, FetchContent: how the package is consumed is the check
  const float s = float(aligner::ref::score({q, 2, 2}, {d, 3, 2}, {.strategy = aligner::alignment::top1()}));
#else  // find_package: the installed headers' kernels, compiled and run (a 20 s compile at -O0)
  const float s = aligner::score({q, 2, 2}, {d, 3, 2}, {.strategy = aligner::alignment::top1()});
#endif
  if (std::abs(s - 1.5f) > 1e-6f || std::abs(second_tu_score() - 1.5f) > 1e-6f) {
    std::printf("consumer: wrong score %g\n", double(s));
    return 1;
  }
  std::printf("consumer: aligner %d.%d.%d, score %g, arch %s\n", ALIGNER_VERSION_MAJOR, ALIGNER_VERSION_MINOR,
              ALIGNER_VERSION_PATCH, double(s), aligner::compiled_arch_name().c_str());
  return 0;
}
