// The second translation unit that includes the whole library: a header that defines a non-inline function or
// variable makes the consumer fail to link (multiple definition). Including the headers is what checks it, so
// this TU instantiates nothing heavy (the kernels' instantiations cost a -O0 compile about 15 s).
#include <aligner/aligner.hpp>

float second_tu_score() {
  const float q[] = {1.f, 0.f, 0.f, 1.f};
  const float d[] = {1.f, 0.f, 0.5f, 0.5f, 0.f, 2.f};
  return float(aligner::ref::score({q, 2, 2}, {d, 3, 2}));
}
