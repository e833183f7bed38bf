#include <aligner/aligner.hpp>

float second_tu_score() {
  const float q[] = {1.f, 0.f, 0.f, 1.f};
  const float d[] = {1.f, 0.f, 0.5f, 0.5f, 0.f, 2.f};
  return aligner::score({q, 2, 2}, {d, 3, 2});
}
