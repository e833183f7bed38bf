// A consumer of the FAISS backend configured only through the package's faiss component (find_package(aligner
// COMPONENTS faiss), or alignerComponents.cmake under add_subdirectory): it compiles against FAISS's headers, links
// its library and searches through it. The backend alone, not a retriever over it (test_backends covers that): the
// retriever's kernels made this a 20 s compile at -O0.
#include <aligner/backends/faiss.hpp>

#include <faiss/IndexFlat.h>

#include <cstdio>
#include <memory>

int main() {
  const float tokens[] = {1.f, 0.f, 0.f, 1.f, 0.6f, 0.8f};
  aligner::faiss_backend index(std::make_unique<faiss::IndexFlatIP>(2));
  index.add({tokens, 3, 2});
  const float q[] = {0.f, 1.f};
  const auto hits = index.search({q, 1, 2}, 2);
  if (index.size() != 3 || hits.ids.size() != 2 || hits.ids[0] != 1 || hits.ids[1] != 2) {
    std::printf("faiss consumer: wrong result\n");
    return 1;
  }
  std::printf("faiss consumer: best token %lld, score %g\n", static_cast<long long>(hits.ids[0]), double(hits.scores[0]));
  return 0;
}
