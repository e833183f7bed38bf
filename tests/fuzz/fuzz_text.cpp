// libFuzzer target: qrels, TREC run and BEIR jsonl readers on arbitrary text.
#include <aligner/eval/metrics.hpp>
#include <aligner/io/beir.hpp>
#include <aligner/io/trec.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  aligner::io::qrels q;
  aligner::io::run r;
  try {
    q = aligner::io::parse_qrels(text, "fuzz.tsv");
  } catch (const aligner::io_error&) {
  }
  try {
    r = aligner::io::parse_run(text, "fuzz.run");
  } catch (const aligner::io_error&) {
  }
  try {
    (void)aligner::io::parse_beir_jsonl(text, "fuzz.jsonl");
  } catch (const aligner::io_error&) {
  }
  // Whatever parsed must evaluate and round-trip without trouble.
  (void)aligner::ndcg_at(10, r, q);
  (void)aligner::io::parse_run(aligner::io::format_run(r));
  return 0;
}
