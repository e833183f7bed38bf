// The subcommands: each is a run function over parsed options, with its usage text (the flag list of its help is
// generated from the flag table).
#pragma once

#include "options.hpp"

namespace cli {

struct subcommand {
  const char* name;
  command bit;
  const char* summary;  ///< one line for `aligner --help`
  const char* usage;    ///< the head of `aligner NAME --help`
  int (*run)(const options&);
};

int run_eval(const options& o);
int run_adapt(const options& o);
int run_index(const options& o);
int run_search(const options& o);
int run_score(const options& o);
int run_gate(const options& o);
int run_salience(const options& o);
int run_info(const options& o);
int run_kernels(const options& o);
int run_explain(const options& o);
int run_train_salience(const options& o);
int run_query(const options& o);

}  // namespace cli
