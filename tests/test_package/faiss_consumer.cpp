// A consumer of the FAISS backend configured only through find_package(aligner COMPONENTS faiss).
#include <aligner/aligner.hpp>
#include <aligner/backends/faiss.hpp>

#include <faiss/IndexFlat.h>

#include <cstdio>
#include <memory>

int main() {
  const float docs[] = {1.f, 0.f, 0.f, 1.f, 0.6f, 0.8f};
  const std::int64_t offsets[] = {0, 1, 3};
  aligner::aligner_retriever<aligner::faiss_backend> index(aligner::faiss_backend(std::make_unique<faiss::IndexFlatIP>(2)),
                                                            aligner::sequence_set_view{{docs, 3, 2}, offsets});
  const float q[] = {0.f, 1.f};
  const auto hits = index.search({q, 1, 2}, {.candidates_per_token = 3, .top = 2});
  if (hits.ids.size() != 2 || hits.ids[0] != 1) {
    std::printf("faiss consumer: wrong result\n");
    return 1;
  }
  std::printf("faiss consumer: best document %lld, score %g\n", static_cast<long long>(hits.ids[0]), double(hits.scores[0]));
  return 0;
}
