// Must NOT compile: aligner_retriever over a type that is not a MIPS backend (it has no search). The test
// (tests/CMakeLists.txt) builds this file and passes when the compiler names the unmet concept.
#include <aligner/aligner.hpp>

struct vectors_without_search {
  std::size_t dim() const { return 4; }
  std::size_t size() const { return 0; }
  void add(aligner::matrix_view<float>) {}
};

int main() {
  aligner::aligner_retriever<vectors_without_search> retriever(vectors_without_search{});
  return int(retriever.size());
}
