/** @file salience_training.hpp
 *  @brief Learned salience (SPEC section 12): the query and document heads u = λ · ReLU(w . x + b) trained on
 *  frozen token vectors from labelled (query, relevant document) pairs.
 *
 *  Loss: for every (query, relevant document D+) of a batch, softmax cross-entropy
 *  -log exp(τ sim(Q, D+)) / Σ_D exp(τ sim(Q, D)) over D+, the query's negatives (hard negatives, e.g. from
 *  mine_hard_negatives) and, optionally, the relevant documents of the other queries of the batch (in-batch
 *  negatives; never one that is relevant to Q). sim is SPEC section 1 under the chosen strategy and normalisation,
 *  weighted by the two heads' saliences. The alignment mask is chosen on S, which does not depend on the heads,
 *  so sim is a smooth rational function of the saliences: the gradient is exact.
 *
 *  Backward: dsim/du^q_i = Σ_{j∈M_i} (S_ij - sim) u^d_j / Z (mean; Σ S_ij u^d_j without normalisation) and the
 *  mirror for u^d; through the gate at its exact solution λ_i = min(1, exp((s_i + a*)/ε)) (for uncapped i and j,
 *  dλ_i/ds_j = (λ_i/ε)(δ_ij - λ_j / Σ_uncapped λ); capped entries have none); through the ReLU (0 at and below 0).
 *  Everything is in double. Adam with a cosine learning-rate decay; a seeded split of the training queries is held
 *  out and the parameters of the epoch with the lowest held-out loss are returned (early stopping after
 *  `patience` epochs without improvement). The gate's temperature is annealed from `epsilon_start` to `epsilon`.
 *  Deterministic for a seed at any thread count: gradients are reduced in
 *  a fixed order.
 *
 *  Objective `salience_objective::tokens` (a library extension, for heads used to prune) replaces the loss by one on
 *  the token search: the kept query tokens' softmax over the kept document tokens should find D+ (see the enum).
 *
 *  Collection negatives (`collection_negatives`, a library extension): a fresh uniform sample of the collection's
 *  documents each step joins every query's candidates, weighted N / R so that it stands for all N documents in the
 *  softmax's denominator (hard and in-batch negatives are documents like the relevant ones; the rest of the
 *  collection, which a token search also competes with, is otherwise never seen).
 *
 *  Start: w = 0, b = 1 for both heads, where every token has the same salience and the score is the unweighted one
 *  (with a gate λ is then k/m for every token, which the mean normalisation cancels); or the (w, b) of given heads
 *  (`start`, e.g. fit_idf_salience: the IDF of the token ids, which the heads then learn to improve on from the
 *  vectors alone). With given heads the start is a candidate for the best epoch, so the held-out loss of the result
 *  is never above theirs. */
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "../backends/exact.hpp"
#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/types.hpp"
#include "../kernels/dot.hpp"
#include "../io/collection.hpp"
#include "../math/alignment.hpp"
#include "../math/gate_solver.hpp"
#include "../math/salience.hpp"
#include "../pipeline/retriever.hpp"
#include "adapt.hpp"

namespace aligner {

/// One labelled training query: its index among the queries, its relevant documents and its negatives (document
/// indices; a negative that is also relevant is an error).
struct training_query {
  std::size_t query = 0;
  std::vector<std::uint32_t> positives;
  std::vector<std::uint32_t> negatives;
};

/// What salience training minimises.
enum class salience_objective {
  /// SPEC section 12: softmax cross-entropy of τ sim(Q, D) over the relevant document and the negatives, sim weighted
  /// by the saliences u = λ ReLU(w . x + b).
  score,
  /// Library extension, for heads used to prune (SPEC section 5), where only which tokens are kept matters: the token
  /// search of pruned retrieval. For a relevant document D+ and its candidates C (D+, the negatives, the in-batch
  /// documents), query token i's search is a softmax over every kept document token of C:
  ///     r_i = Σ_{j ∈ D+} λ^d_j exp(τ_t S_ij) / Σ_{D ∈ C} Σ_{j ∈ D} λ^d_j exp(τ_t S_ij)
  /// (the chance that i's nearest kept token is one of D+'s), and the loss is -log(Σ_i λ^q_i r_i / Σ_i λ^q_i): the
  /// kept query tokens should find D+. λ are the gates' keep weights (ReLU(w . x + b) only ranks the tokens), so the
  /// gradient flows through the gates alone, and a side without a gate (α = 1) gets none. τ_t is token_temperature.
  tokens,
};

inline const char* to_string(salience_objective o) noexcept { return o == salience_objective::tokens ? "tokens" : "score"; }

/// Parses "score" or "tokens".
inline salience_objective parse_salience_objective(std::string_view text) {
  if (text == "score") return salience_objective::score;
  if (text == "tokens") return salience_objective::tokens;
  ALIGNER_EXPECTS(false, "objective must be 'score' or 'tokens', got '", text, "'");
  return salience_objective::score;
}

/// What one epoch did.
struct salience_training_epoch {
  std::size_t epoch = 0;      ///< 0: the starting parameters (no step taken)
  double train_loss = 0.0;    ///< mean loss of the epoch's steps (before each step's update); NaN for epoch 0
  double holdout_loss = 0.0;  ///< mean loss on the held-out queries after the epoch (NaN without a holdout)
  double holdout_accuracy = 0.0;  ///< fraction of held-out (query, relevant) rows whose relevant document scores first
  double learning_rate = 0.0;     ///< at the epoch's last step
  double epsilon = 0.0;           ///< the gate's temperature at the epoch's last step
  double seconds = 0.0;
};

/// Settings of salience training. Defaults: the paper's budgets (α^q = 0.5, α^d = 0.4) and gate temperature
/// (ε = 0.002), Top-1 with the mean normalisation, τ = 20 (scores are means of cosines, so τ sim spans about
/// 20 logits), batches of 32 queries with in-batch negatives, Adam at 0.01 decayed to 10% on a cosine, at most 20
/// epochs, 10% of the queries held out, patience 3.
struct salience_training_params {
  alignment strategy = alignment::top1();
  normalization norm = normalization::mean;
  double alpha_query = 0.5;    ///< query gate budget fraction in (0, 1]; 1 means no gate (λ = 1)
  double alpha_doc = 0.4;      ///< document gate budget fraction in (0, 1]
  double epsilon = 0.002;      ///< gate temperature (> 0) of the trained heads
  /// The gate's temperature during training starts here and falls geometrically to `epsilon` over the first half of
  /// the steps, then stays there (when it is larger than epsilon; 0: no annealing). Early stopping only counts epochs
  /// after the anneal. A small ε makes the gate a hard top-k from the first step, where only
  /// tokens at the budget's edge get a gradient; starting soft lets every token's salience move first. Held-out losses
  /// are always measured at `epsilon`, the temperature the heads are used with.
  double epsilon_start = 0.0;
  double temperature = 20.0;   ///< τ of the softmax (> 0)
  salience_objective objective = salience_objective::score;
  /// τ_t of the tokens objective (> 0): a cosine S_ij spans 2 τ_t logits, so 50 makes a token's softmax close to its
  /// nearest few tokens, as a token search with a small k' is.
  double token_temperature = 50.0;
  bool in_batch_negatives = true;
  /// Collection negatives: every step draws this many documents of the whole collection at random (seeded; at most
  /// all of them) and adds them to every query's candidates, each weighted N / R (N documents, R drawn), so that the
  /// sample stands for the collection in the softmax. A token search competes with every document's tokens, most of
  /// them neither hard negatives nor relevant elsewhere: a common token's many near neighbours are what make it a
  /// poor token to keep, and only such a sample lets the loss see them. The held-out loss uses one fixed draw. 0: none.
  std::size_t collection_negatives = 0;
  std::size_t batch_size = 32;  ///< training queries per step (>= 1)
  std::size_t epochs = 20;      ///< at most this many passes (>= 1)
  double learning_rate = 0.01;  ///< Adam's step size at the start (> 0)
  double final_learning_rate = 0.1;  ///< fraction of learning_rate the cosine decay ends at, in [0, 1]
  double holdout = 0.1;         ///< fraction of the training queries held out for early stopping, in [0, 1)
  std::size_t patience = 3;     ///< epochs without a better held-out loss before stopping (>= 1)
  std::uint64_t seed = 0;
  /// Bagging: train this many heads (>= 1), with seeds seed, seed + 1, ... (each its own held-out queries and batch
  /// order, every other setting the same), and return their mean: each head's w and b are the members' means. With
  /// about a thousand training queries the learned direction moves with the seed; the mean moves less (bench/RESULTS.md,
  /// learned salience, "Sixth pass"). 1: one training, as without it.
  std::size_t ensemble = 1;
  /// Heads to start from (their w and b; gates ignored; dims must be the vectors'); none: w = 0, b = 1.
  std::optional<salience_heads> start{};
  unsigned threads = 1;         ///< 0 = one per hardware thread
  bool check_finite = true;
  /// Called after every epoch (and once with epoch 0 for the start) on the calling thread.
  std::function<void(const salience_training_epoch&)> on_epoch{};
  /// Called after every step with (steps done, steps of the epoch), on the calling thread.
  std::function<void(std::size_t, std::size_t)> on_step{};

  /// Throws aligner::invalid_argument naming the first setting outside its range.
  void validate() const;
};

inline void salience_training_params::validate() const {
  const salience_training_params& p = *this;
  p.strategy.validate();
  ALIGNER_EXPECTS(std::isfinite(p.alpha_query) && p.alpha_query > 0.0 && p.alpha_query <= 1.0,
                  "salience training alpha_query must be in (0, 1], got ", p.alpha_query);
  ALIGNER_EXPECTS(std::isfinite(p.alpha_doc) && p.alpha_doc > 0.0 && p.alpha_doc <= 1.0,
                  "salience training alpha_doc must be in (0, 1], got ", p.alpha_doc);
  ALIGNER_EXPECTS(std::isfinite(p.epsilon) && p.epsilon > 0.0, "salience training epsilon must be finite and > 0, got ", p.epsilon);
  ALIGNER_EXPECTS(std::isfinite(p.epsilon_start) && p.epsilon_start >= 0.0,
                  "salience training epsilon_start must be finite and >= 0, got ", p.epsilon_start);
  ALIGNER_EXPECTS(std::isfinite(p.temperature) && p.temperature > 0.0, "salience training temperature must be finite and > 0, got ",
                  p.temperature);
  ALIGNER_EXPECTS(std::isfinite(p.token_temperature) && p.token_temperature > 0.0,
                  "salience training token_temperature must be finite and > 0, got ", p.token_temperature);
  ALIGNER_EXPECTS(p.objective != salience_objective::tokens || p.alpha_query < 1.0 || p.alpha_doc < 1.0,
                  "the tokens objective trains the gates (which tokens are kept): alpha_query or alpha_doc must be < 1, got ",
                  p.alpha_query, " and ", p.alpha_doc);
  ALIGNER_EXPECTS(p.batch_size >= 1, "salience training batch_size must be >= 1, got ", p.batch_size);
  ALIGNER_EXPECTS(p.epochs >= 1, "salience training epochs must be >= 1, got ", p.epochs);
  ALIGNER_EXPECTS(std::isfinite(p.learning_rate) && p.learning_rate > 0.0, "salience training learning_rate must be finite and > 0, got ",
                  p.learning_rate);
  ALIGNER_EXPECTS(std::isfinite(p.final_learning_rate) && p.final_learning_rate >= 0.0 && p.final_learning_rate <= 1.0,
                  "salience training final_learning_rate must be in [0, 1], got ", p.final_learning_rate);
  ALIGNER_EXPECTS(std::isfinite(p.holdout) && p.holdout >= 0.0 && p.holdout < 1.0, "salience training holdout must be in [0, 1), got ",
                  p.holdout);
  ALIGNER_EXPECTS(p.patience >= 1, "salience training patience must be >= 1, got ", p.patience);
  ALIGNER_EXPECTS(p.collection_negatives <= (std::size_t{1} << 20), "salience training collection_negatives must be at most 2^20, got ",
                  p.collection_negatives);
  ALIGNER_EXPECTS(p.ensemble >= 1 && p.ensemble <= 1000, "salience training ensemble must be in [1, 1000], got ", p.ensemble);
}


/// The trained heads and the training's history. For an ensemble (salience_training_params::ensemble > 1) `heads` is
/// the members' mean, each member's own result is in `members` (member i trained with seed + i), and `epochs`,
/// `best_epoch` and `stopped_early` are left empty, 0 and false; the query counts are the first member's (every member
/// holds out as many).
struct salience_training_result {
  salience_heads heads;
  std::vector<salience_training_epoch> epochs;  ///< epochs[0] is the start
  std::size_t best_epoch = 0;  ///< the epoch whose parameters `heads` holds (>= 1; 0 only for given start heads no epoch beat)
  bool stopped_early = false;
  std::size_t train_queries = 0, holdout_queries = 0;
  std::vector<salience_training_result> members{};

  /// The best epoch, or each member's comma-separated for an ensemble (the `epochs=` field of a heads file's
  /// provenance line, written by the CLI and by Python).
  std::string best_epochs() const {
    if (members.empty()) return std::to_string(best_epoch);
    std::string out;
    for (const auto& m : members) {
      if (!out.empty()) out += ',';
      out += std::to_string(m.best_epoch);
    }
    return out;
  }
};

namespace detail {


/// A head's parameters in double: w (dim) then b.
struct head_params {
  std::vector<double> w;
  double b = 1.0;
};

/// The forward pass of one head over one sequence, with what the backward pass needs.
struct head_forward {
  std::vector<double> z;       ///< w . x + b
  std::vector<double> s;       ///< ReLU(z)
  std::vector<double> lambda;  ///< the gate (1 without one)
  std::vector<char> free;      ///< uncapped entries of the gate (they carry its derivative)
  double free_sum = 0.0;       ///< Σ λ over the uncapped entries
  std::vector<double> u;       ///< λ s
};

/// u = λ(s) s with s = ReLU(X w + b) and the exact gate of budget ceil(alpha m) (alpha = 1: no gate).
inline void forward_head(matrix_view<float> x, const head_params& h, double alpha, double epsilon, head_forward& out) {
  const std::size_t m = x.rows;
  out.z.resize(m), out.s.resize(m), out.lambda.assign(m, 1.0), out.free.assign(m, 0), out.u.resize(m);
  out.free_sum = 0.0;
  for (std::size_t i = 0; i != m; ++i) {
    double acc = h.b;
    const float* row = x.row(i);
    for (std::size_t c = 0; c != x.cols; ++c) acc += double(row[c]) * h.w[c];
    out.z[i] = acc;
    out.s[i] = acc > 0.0 ? acc : 0.0;
  }
  const double k = gate_budget(alpha, m);
  if (alpha < 1.0 && k > 0.0 && k < double(m)) {
    const auto sol = solve_gate_pivot(std::span<const double>(out.s), k, epsilon);
    // λ below float's smallest normal number is 0 (as the float scorer sees it) and carries no derivative: far below
    // the budget's edge exp(t) underflows, and saliences of 1e-300 made the mean's 1 / Z, and so the gradients, overflow.
    constexpr double lambda_floor = double(std::numeric_limits<float>::min());
    for (std::size_t i = 0; i != m; ++i) {
      const double t = (out.s[i] - sol.pivot) / epsilon + sol.offset;
      if (t < 0.0) {
        const double l = std::exp(t);
        out.lambda[i] = l >= lambda_floor ? l : 0.0;
        out.free[i] = l >= lambda_floor;
        out.free_sum += out.lambda[i];
      }
    }
  } else if (k <= 0.0) {
    std::fill(out.lambda.begin(), out.lambda.end(), 0.0);
  }
  for (std::size_t i = 0; i != m; ++i) out.u[i] = out.lambda[i] * out.s[i];
}

/// Adds dL/ds through the gate alone to out: for uncapped j, (λ_j/ε)(h_j - Σ_uncapped h_i λ_i / Σ_uncapped λ), where h
/// is dL/dλ (capped entries have no derivative).
inline void add_gate_backward(const head_forward& f, double epsilon, std::span<const double> h, std::span<double> out) {
  const std::size_t m = f.u.size();
  double t = 0.0;
  if (f.free_sum > 0.0) {
    for (std::size_t i = 0; i != m; ++i)
      if (f.free[i]) t += h[i] * f.lambda[i];
    t /= f.free_sum;
  }
  for (std::size_t j = 0; j != m; ++j)
    if (f.free[j]) out[j] += f.lambda[j] / epsilon * (h[j] - t);
}

/// dL/dz from dL/du: through u = λ s (dL/dλ_i = g_i s_i, carried by the gate: add_gate_backward) and through the ReLU
/// (0 at and below 0). `g` holds dL/du and receives dL/dz.
inline void backward_head(const head_forward& f, double epsilon, std::span<double> g) {
  const std::size_t m = f.u.size();
  std::vector<double> h(m), ds(m);
  for (std::size_t j = 0; j != m; ++j) h[j] = g[j] * f.s[j], ds[j] = g[j] * f.lambda[j];
  add_gate_backward(f, epsilon, h, ds);
  for (std::size_t j = 0; j != m; ++j) g[j] = f.z[j] > 0.0 ? ds[j] : 0.0;
}

/// One training query's part of a batch: its loss over its relevant rows, how many rows had the relevant document
/// first, and the gradient in its query's and its candidates' saliences (dL/du for the score objective, dL/dλ for
/// the tokens objective).
struct salience_item_out {
  double loss = 0.0;
  std::size_t first = 0;
  std::vector<double> g_uq;
  std::vector<std::pair<std::size_t, std::vector<double>>> g_ud;  // (document slot, its gradient)
};

/// dL/dz from dL/dλ (the tokens objective reads the gate's output alone): add_gate_backward, then the ReLU. `g` holds
/// dL/dλ and receives dL/dz.
inline void backward_gate(const head_forward& f, double epsilon, std::span<double> g) {
  const std::size_t m = f.u.size();
  std::vector<double> ds(m, 0.0);
  add_gate_backward(f, epsilon, g, ds);
  for (std::size_t j = 0; j != m; ++j) g[j] = f.z[j] > 0.0 ? ds[j] : 0.0;
}

/// The aligned pairs of one (query, document) under a strategy: entry e aligns query token qi[e] with document token
/// dj[e], similarity sim[e] (in double); grouped by query token. The mask is chosen on float S (ties toward the
/// lower document token), as the scorer chooses it.
struct pair_mask {
  std::vector<std::uint32_t> qi, dj;
  std::vector<double> sim;
};

inline double dot_double(const float* a, const float* b, std::size_t n) noexcept {
  double acc = 0.0;
  for (std::size_t c = 0; c != n; ++c) acc += double(a[c]) * double(b[c]);
  return acc;
}

inline void align_pair(matrix_view<float> q, matrix_view<float> d, const alignment& strategy, pair_mask& out,
                       std::vector<float>& scratch) {
  out.qi.clear(), out.dj.clear(), out.sim.clear();
  const std::size_t n = q.rows, m = d.rows;
  if (n == 0 || m == 0) return;
  if (strategy.kind == alignment::kind_t::dense) {
    out.qi.push_back(0), out.dj.push_back(0), out.sim.push_back(dot_double(q.row(0), d.row(0), q.cols));
    return;
  }
  // S in float with the library's dot (not Eigen's GEMM: its AVX-512 code trips GCC 12's false
  // -Wmaybe-uninitialized, bug 105593, in consumers' builds, where no pragma of ours reaches it).
  scratch.resize(n * m);
  for (std::size_t i = 0; i != n; ++i)
    for (std::size_t j = 0; j != m; ++j) scratch[i * m + j] = dot(q.row(i), d.row(j), q.cols);
  const std::size_t budget = strategy.row_budget(m);
  std::vector<std::uint32_t> order(m);
  for (std::size_t i = 0; i != n; ++i) {
    const float* row = scratch.data() + i * m;
    std::iota(order.begin(), order.end(), std::uint32_t{0});
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(budget), order.end(),
                      [row](std::uint32_t a, std::uint32_t b) { return ranks_before(row[a], a, row[b], b); });
    for (std::size_t t = 0; t != budget; ++t) {
      out.qi.push_back(std::uint32_t(i)), out.dj.push_back(order[t]);
      out.sim.push_back(dot_double(q.row(i), d.row(order[t]), q.cols));
    }
  }
}

/// sim(Q, D) of a mask under saliences uq, ud (SPEC section 1; Z = 0 gives 0). Also returns Z.
inline double masked_score(const pair_mask& mk, const double* uq, const double* ud, normalization norm, double& z) {
  double numer = 0.0;
  z = 0.0;
  for (std::size_t e = 0; e != mk.sim.size(); ++e) {
    const double w = uq[mk.qi[e]] * ud[mk.dj[e]];
    numer += w * mk.sim[e];
    z += w;
  }
  if (norm == normalization::none) return numer;
  return z > 0.0 ? numer / z : 0.0;
}

/// Adds g · dsim/du^q to g_uq and g · dsim/du^d to g_ud.
inline void masked_score_backward(const pair_mask& mk, const double* uq, const double* ud, normalization norm, double sim,
                                  double z, double g, double* g_uq, double* g_ud) {
  const bool mean = norm == normalization::mean;
  if (mean && !(z > 0.0)) return;  // the score is the constant 0 there
  for (std::size_t e = 0; e != mk.sim.size(); ++e) {
    const double c = mean ? g * (mk.sim[e] - sim) / z : g * mk.sim[e];
    g_uq[mk.qi[e]] += c * ud[mk.dj[e]];
    g_ud[mk.dj[e]] += c * uq[mk.qi[e]];
  }
}


}  // namespace detail

/// Trains the two salience heads (see the file comment). Construction validates everything and precomputes the
/// alignment masks of every (query, positive or negative) pair; `train()` runs the optimisation. The views must
/// outlive the trainer. Thread-safe for concurrent const calls.
class salience_trainer {
 public:
  /// Throws aligner::invalid_argument (and leaves nothing behind) for: an empty example list, a query or document
  /// index out of range, a query without a relevant document, a negative that is also relevant, different dims,
  /// non-finite vectors (with check_finite), or a setting outside its range (see salience_training_params).
  salience_trainer(const sequence_set_view& queries, const sequence_set_view& docs, std::vector<training_query> examples,
                   salience_training_params params = {})
      : queries_(queries), docs_(docs), examples_(std::move(examples)), p_(std::move(params)) {
    p_.validate();
    detail::check_offsets(queries_.offsets, queries_.tokens.rows, "training queries' offsets");
    detail::check_offsets(docs_.offsets, docs_.tokens.rows, "training documents' offsets");
    ALIGNER_EXPECTS(!examples_.empty(), "salience training needs at least one labelled query, got none");
    ALIGNER_EXPECTS(queries_.tokens.cols == docs_.tokens.cols, "training queries have dim ", queries_.tokens.cols,
                    " but the documents have dim ", docs_.tokens.cols);
    ALIGNER_EXPECTS(docs_.tokens.cols >= 1, "training vectors must have dim >= 1");
    if (p_.start)
      ALIGNER_EXPECTS(p_.start->dim() == docs_.tokens.cols, "salience training start heads have dim ", p_.start->dim(),
                      " but the vectors have dim ", docs_.tokens.cols);
    detail::check_matrix(queries_.tokens, "training query vectors", p_.check_finite);
    detail::check_matrix(docs_.tokens, "training document vectors", p_.check_finite);
    for (std::size_t e = 0; e != examples_.size(); ++e) {
      const auto& ex = examples_[e];
      ALIGNER_EXPECTS(ex.query < queries_.size(), "training example ", e, " names query ", ex.query, " of ", queries_.size());
      ALIGNER_EXPECTS(!ex.positives.empty(), "training example ", e, " (query ", ex.query, ") has no relevant document");
      ALIGNER_EXPECTS(queries_.length(ex.query) > 0, "training example ", e, " (query ", ex.query, ") has no tokens");
      std::unordered_set<std::uint32_t> relevant;
      for (auto d : ex.positives) {
        ALIGNER_EXPECTS(d < docs_.size(), "training example ", e, " names relevant document ", d, " of ", docs_.size());
        relevant.insert(d);
      }
      for (auto d : ex.negatives) {
        ALIGNER_EXPECTS(d < docs_.size(), "training example ", e, " names negative document ", d, " of ", docs_.size());
        ALIGNER_EXPECTS(!relevant.count(d), "training example ", e, " (query ", ex.query, ") has document ", d,
                        " both relevant and negative");
      }
    }
    if (p_.holdout > 0.0)
      ALIGNER_EXPECTS(examples_.size() >= 2, "a holdout needs at least 2 labelled queries, got ", examples_.size(),
                      " (set holdout to 0)");
    // The masks of every fixed pair, computed once (the score objective's; the tokens objective reads S whole).
    if (p_.objective == salience_objective::score) {
      masks_.resize(examples_.size());
      parallel_for(examples_.size(), p_.threads, [&](std::size_t e) {
        const auto& ex = examples_[e];
        std::vector<float> scratch;
        auto& ms = masks_[e];
        ms.resize(ex.positives.size() + ex.negatives.size());
        for (std::size_t c = 0; c != ms.size(); ++c) {
          const std::uint32_t d = c < ex.positives.size() ? ex.positives[c] : ex.negatives[c - ex.positives.size()];
          detail::align_pair(queries_.sequence(ex.query), docs_.sequence(d), p_.strategy, ms[c], scratch);
        }
      });
    }
  }

  std::size_t dim() const noexcept { return docs_.tokens.cols; }
  /// Parameters in the flat layout of loss(): w^q (dim), b^q, w^d (dim), b^d.
  std::size_t parameter_count() const noexcept { return 2 * dim() + 2; }
  const salience_training_params& params() const noexcept { return p_; }

  /// The starting parameters: those of params().start, else w = 0, b = 1 for both heads.
  std::vector<double> initial_parameters() const {
    std::vector<double> x(parameter_count(), 0.0);
    if (p_.start) {
      auto put = [&](std::size_t at, const salience_scorer& h) {
        for (std::size_t c = 0; c != dim(); ++c) x[at + c] = double(h.weights()[c]);
        x[at + dim()] = double(h.bias());
      };
      put(0, p_.start->query), put(dim() + 1, p_.start->doc);
      return x;
    }
    x[dim()] = 1.0;
    x.back() = 1.0;
    return x;
  }

  /// Mean loss over every labelled (query, relevant document) pair against that query's negatives (no in-batch
  /// negatives), at the flat parameters `x`; with `gradient` (parameter_count() entries) also its gradient. `crowd`:
  /// distinct documents that join every query's candidates as collection negatives, each weighted N / crowd.size()
  /// (as a training step's draw; see collection_negatives).
  double loss(std::span<const double> x, std::span<double> gradient = {}, std::span<const std::uint32_t> crowd = {}) const {
    ALIGNER_EXPECTS(x.size() == parameter_count(), "salience parameters have ", x.size(), " entries, expected ", parameter_count());
    ALIGNER_EXPECTS(gradient.empty() || gradient.size() == parameter_count(), "salience gradient has ", gradient.size(),
                    " entries, expected ", parameter_count());
    std::vector<std::size_t> all(examples_.size());
    std::iota(all.begin(), all.end(), std::size_t{0});
    std::unordered_set<std::uint32_t> distinct;
    for (auto d : crowd) {
      ALIGNER_EXPECTS(d < docs_.size(), "salience loss: collection negative ", d, " is not one of the ", docs_.size(), " documents");
      ALIGNER_EXPECTS(distinct.insert(d).second, "salience loss: collection negative ", d, " is given twice");
    }
    return batch(x, all, false, gradient, p_.epsilon, crowd).loss;
  }

  /// The heads of flat parameters `x` (w and b rounded to float) with the training's gates.
  salience_heads heads_of(std::span<const double> x) const {
    ALIGNER_EXPECTS(x.size() == parameter_count(), "salience parameters have ", x.size(), " entries, expected ", parameter_count());
    auto head = [&](std::size_t at, double alpha) {
      std::vector<float> w(dim());
      for (std::size_t c = 0; c != dim(); ++c) w[c] = float(x[at + c]);
      std::optional<gate_params> g;
      if (alpha < 1.0) g = gate_params{.alpha = alpha, .epsilon = p_.epsilon};
      return salience_scorer(std::move(w), float(x[at + dim()]), g);
    };
    return {head(0, p_.alpha_query), head(dim() + 1, p_.alpha_doc)};
  }

  /// Runs the training (each member of an ensemble in turn, on_epoch reporting each member's epochs from its epoch
  /// 0). Deterministic for a seed, at any thread count.
  salience_training_result train() const {
    if (p_.ensemble == 1) return train_member(p_.seed);
    std::vector<double> mean(parameter_count(), 0.0);
    auto add = [&](std::size_t at, const salience_scorer& h) {
      for (std::size_t c = 0; c != dim(); ++c) mean[at + c] += double(h.weights()[c]);
      mean[at + dim()] += double(h.bias());
    };
    std::vector<salience_training_result> members;
    members.reserve(p_.ensemble);
    for (std::size_t i = 0; i != p_.ensemble; ++i) {
      members.push_back(train_member(p_.seed + i));
      add(0, members.back().heads.query), add(dim() + 1, members.back().heads.doc);
    }
    for (auto& v : mean) v /= double(p_.ensemble);
    const std::size_t train_queries = members[0].train_queries, holdout_queries = members[0].holdout_queries;
    return {heads_of(mean), {}, 0, false, train_queries, holdout_queries, std::move(members)};
  }

 private:
  /// One training with this seed (the held-out queries and the batch order).
  salience_training_result train_member(std::uint64_t seed) const {
    const std::size_t n = examples_.size();
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::mt19937_64 rng(seed);
    std::size_t held = 0;
    if (p_.holdout > 0.0) held = std::clamp<std::size_t>(std::size_t(std::llround(p_.holdout * double(n))), 1, n - 1);
    if (held) detail::seeded_shuffle(order, rng);
    // Collection negatives: a fixed draw for the held-out loss (its own generator, so the training's draws and batch
    // order are those of a training without them), a fresh one every step.
    std::mt19937_64 crowd_rng(seed ^ 0x9e3779b97f4a7c15ULL);
    const std::vector<std::uint32_t> holdout_crowd = draw_documents(crowd_rng);
    std::vector<std::size_t> holdout(order.begin(), order.begin() + std::ptrdiff_t(held));
    std::vector<std::size_t> train_set(order.begin() + std::ptrdiff_t(held), order.end());
    std::sort(holdout.begin(), holdout.end());

    std::vector<double> x = initial_parameters(), best = x;
    const std::size_t np = x.size();
    std::vector<double> g(np), m1(np, 0.0), m2(np, 0.0);
    const std::size_t steps_per_epoch = (train_set.size() + p_.batch_size - 1) / p_.batch_size;
    const double total_steps = double(steps_per_epoch * p_.epochs);
    std::size_t step = 0;

    salience_training_result out{heads_of(x), {}, 0, false, train_set.size(), held, {}};
    auto evaluate_holdout = [&](salience_training_epoch& ep) {
      if (holdout.empty()) {
        ep.holdout_loss = ep.holdout_accuracy = std::numeric_limits<double>::quiet_NaN();
        return;
      }
      const auto r = batch(x, holdout, false, {}, p_.epsilon, holdout_crowd);
      ep.holdout_loss = r.loss;
      ep.holdout_accuracy = r.rows ? double(r.first) / double(r.rows) : 0.0;
    };
    {
      salience_training_epoch start;
      start.train_loss = std::numeric_limits<double>::quiet_NaN();
      evaluate_holdout(start);
      start.learning_rate = p_.learning_rate;
      start.epsilon = p_.epsilon;
      out.epochs.push_back(start);
      if (p_.on_epoch) p_.on_epoch(start);
    }
    // The best epoch is chosen among trained epochs (epoch 0, where every token ties, is reported, never returned),
    // and the given start heads, which are a result in their own right.
    double best_loss = std::numeric_limits<double>::infinity();
    const bool start_counts = p_.start.has_value() && !holdout.empty();
    if (start_counts) best_loss = out.epochs[0].holdout_loss;
    std::size_t since_best = 0;
    const bool annealing = p_.epsilon_start > p_.epsilon;
    const std::size_t anneal_steps = annealing ? std::size_t(std::ceil(total_steps / 2.0)) : 0;
    constexpr double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
    for (std::size_t epoch = 1; epoch <= p_.epochs; ++epoch) {
      const auto t0 = std::chrono::steady_clock::now();
      detail::seeded_shuffle(train_set, rng);
      salience_training_epoch ep;
      ep.epoch = epoch;
      double loss_sum = 0.0;
      std::size_t loss_rows = 0;
      for (std::size_t s = 0; s != steps_per_epoch; ++s) {
        const std::size_t lo = s * p_.batch_size, hi = std::min(train_set.size(), lo + p_.batch_size);
        const std::vector<std::size_t> items(train_set.begin() + std::ptrdiff_t(lo), train_set.begin() + std::ptrdiff_t(hi));
        std::fill(g.begin(), g.end(), 0.0);
        const double progress = total_steps > 0 ? double(step) / total_steps : 0.0;
        const double epsilon = annealing ? p_.epsilon * std::pow(p_.epsilon_start / p_.epsilon, std::max(0.0, 1.0 - 2.0 * progress)) : p_.epsilon;
        const std::vector<std::uint32_t> crowd = draw_documents(crowd_rng);
        const auto r = batch(x, items, p_.in_batch_negatives, g, epsilon, crowd);
        loss_sum += r.loss * double(r.rows);
        loss_rows += r.rows;
        const double lr = p_.learning_rate *
                          (p_.final_learning_rate + (1.0 - p_.final_learning_rate) * 0.5 * (1.0 + std::cos(3.141592653589793 * progress)));
        ++step;
        const double c1 = 1.0 - std::pow(beta1, double(step)), c2 = 1.0 - std::pow(beta2, double(step));
        for (std::size_t i = 0; i != np; ++i) {
          m1[i] = beta1 * m1[i] + (1.0 - beta1) * g[i];
          m2[i] = beta2 * m2[i] + (1.0 - beta2) * g[i] * g[i];
          x[i] -= lr * (m1[i] / c1) / (std::sqrt(m2[i] / c2) + adam_eps);
        }
        ep.learning_rate = lr;
        ep.epsilon = epsilon;
        if (p_.on_step) p_.on_step(s + 1, steps_per_epoch);
      }
      ep.train_loss = loss_rows ? loss_sum / double(loss_rows) : 0.0;
      evaluate_holdout(ep);
      ep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      out.epochs.push_back(ep);
      if (p_.on_epoch) p_.on_epoch(ep);
      if (holdout.empty()) {
        best = x, out.best_epoch = epoch;
      } else if (ep.holdout_loss < best_loss || (out.best_epoch == 0 && !start_counts)) {
        best_loss = ep.holdout_loss, best = x, out.best_epoch = epoch, since_best = 0;
      } else if (step >= anneal_steps && ++since_best >= p_.patience) {
        out.stopped_early = epoch < p_.epochs;
        break;
      }
    }
    out.heads = heads_of(best);
    return out;
  }

  /// min(collection_negatives, N) distinct documents drawn uniformly (Floyd's method), in the order drawn.
  std::vector<std::uint32_t> draw_documents(std::mt19937_64& rng) const {
    const std::size_t n = docs_.size(), r = std::min(p_.collection_negatives, n);
    std::vector<std::uint32_t> out;
    if (r == 0) return out;
    out.reserve(r);
    std::unordered_set<std::uint32_t> taken;
    for (std::size_t j = n - r; j != n; ++j) {
      const auto t = std::uint32_t(rng() % (j + 1));
      const auto pick = taken.insert(t).second ? t : std::uint32_t(j);
      if (pick != t) taken.insert(pick);
      out.push_back(pick);
    }
    return out;
  }

  struct batch_result {
    double loss = 0.0;      ///< mean over rows
    std::size_t rows = 0;   ///< (query, relevant document) rows
    std::size_t first = 0;  ///< rows whose relevant document scored strictly above every other candidate
  };

  /// Loss (and, with a non-empty `grad`, its gradient added to grad) over the examples `items`.
  /// `crowd`: collection negatives of every item, each weighted docs / crowd.size() (see collection_negatives).
  batch_result batch(std::span<const double> x, const std::vector<std::size_t>& items, bool in_batch, std::span<double> grad,
                     double epsilon, std::span<const std::uint32_t> crowd = {}) const {
    const std::size_t dim = this->dim();
    const detail::head_params hq{{x.begin(), x.begin() + std::ptrdiff_t(dim)}, x[dim]};
    const detail::head_params hd{{x.begin() + std::ptrdiff_t(dim + 1), x.begin() + std::ptrdiff_t(2 * dim + 1)}, x[2 * dim + 1]};
    // The documents of the batch, each once (slot order = first appearance, so the reduction order is fixed).
    std::vector<std::uint32_t> slot_doc;
    std::unordered_map<std::uint32_t, std::size_t> slot_of;
    auto slot = [&](std::uint32_t d) {
      const auto [it, added] = slot_of.emplace(d, slot_doc.size());
      if (added) slot_doc.push_back(d);
      return it->second;
    };
    std::vector<std::uint32_t> batch_positives;
    for (std::size_t e : items) {
      for (auto d : examples_[e].positives) {
        slot(d);
        batch_positives.push_back(d);
      }
      for (auto d : examples_[e].negatives) slot(d);
    }
    for (auto d : crowd) slot(d);
    const double crowd_weight = crowd.empty() ? 1.0 : double(docs_.size()) / double(crowd.size());
    std::vector<detail::head_forward> doc_f(slot_doc.size()), query_f(items.size());
    parallel_for(slot_doc.size() + items.size(), p_.threads, [&](std::size_t i) {
      if (i < slot_doc.size())
        detail::forward_head(docs_.sequence(slot_doc[i]), hd, p_.alpha_doc, epsilon, doc_f[i]);
      else
        detail::forward_head(queries_.sequence(examples_[items[i - slot_doc.size()]].query), hq, p_.alpha_query, epsilon,
                             query_f[i - slot_doc.size()]);
    });
    std::size_t total_rows = 0;
    for (std::size_t e : items) total_rows += examples_[e].positives.size();
    const double row_weight = 1.0 / double(total_rows);
    const bool want_grad = !grad.empty();

    std::vector<detail::salience_item_out> outs(items.size());
    parallel_for(items.size(), p_.threads, [&](std::size_t b) {
      const auto& ex = examples_[items[b]];
      const auto& qf = query_f[b];
      // Candidates: positives, negatives, then in-batch positives of other queries, then collection negatives; each
      // document once.
      std::vector<std::uint32_t> cand(ex.positives);
      cand.insert(cand.end(), ex.negatives.begin(), ex.negatives.end());
      const std::size_t fixed = cand.size(), np = ex.positives.size();
      std::unordered_set<std::uint32_t> seen;
      if (in_batch || !crowd.empty()) seen.insert(cand.begin(), cand.end());
      if (in_batch)
        for (auto d : batch_positives)
          if (seen.insert(d).second) cand.push_back(d);
      const std::size_t from = cand.size();  // candidates from here on are collection negatives
      for (auto d : crowd)
        if (seen.insert(d).second) cand.push_back(d);
      const std::size_t nc = cand.size();
      // log of each candidate's weight in the softmax
      std::vector<double> log_w(nc, 0.0);
      for (std::size_t c = from; c != nc; ++c) log_w[c] = std::log(crowd_weight);
      if (p_.objective == salience_objective::tokens) {
        token_search_item(queries_.sequence(ex.query), qf, cand, np, log_w, doc_f, slot_of, row_weight, want_grad, outs[b]);
        return;
      }
      // The masks: cached for the fixed candidates, aligned here for the in-batch ones.
      std::vector<const detail::pair_mask*> mk;
      for (const auto& m : masks_[items[b]]) mk.push_back(&m);
      std::vector<detail::pair_mask> extra(nc - fixed);
      std::vector<float> scratch;
      for (std::size_t a = 0; a != extra.size(); ++a) {
        detail::align_pair(queries_.sequence(ex.query), docs_.sequence(cand[fixed + a]), p_.strategy, extra[a], scratch);
        mk.push_back(&extra[a]);
      }
      std::vector<double> sim(nc), z(nc), gsim(nc, 0.0);
      for (std::size_t c = 0; c != nc; ++c) sim[c] = detail::masked_score(*mk[c], qf.u.data(), doc_f[slot_of.at(cand[c])].u.data(), p_.norm, z[c]);
      auto& o = outs[b];
      const double tau = p_.temperature;
      for (std::size_t r = 0; r != np; ++r) {
        // Row r: the relevant document r against the negatives and in-batch candidates (not the other relevant ones).
        double mx = tau * sim[r];
        for (std::size_t c = np; c != nc; ++c) mx = std::max(mx, tau * sim[c] + log_w[c]);
        double sum = std::exp(tau * sim[r] - mx);
        bool first = true;
        for (std::size_t c = np; c != nc; ++c) {
          sum += std::exp(tau * sim[c] + log_w[c] - mx);
          if (!(sim[r] > sim[c])) first = false;
        }
        const double lse = mx + std::log(sum);
        o.loss += lse - tau * sim[r];
        o.first += first;
        if (want_grad) {
          gsim[r] += row_weight * tau * (std::exp(tau * sim[r] - lse) - 1.0);
          for (std::size_t c = np; c != nc; ++c) gsim[c] += row_weight * tau * std::exp(tau * sim[c] + log_w[c] - lse);
        }
      }
      if (!want_grad) return;
      o.g_uq.assign(qf.u.size(), 0.0);
      for (std::size_t c = 0; c != nc; ++c) {
        if (gsim[c] == 0.0) continue;
        const std::size_t sl = slot_of.at(cand[c]);
        std::vector<double> gd(doc_f[sl].u.size(), 0.0);
        detail::masked_score_backward(*mk[c], qf.u.data(), doc_f[sl].u.data(), p_.norm, sim[c], z[c], gsim[c], o.g_uq.data(), gd.data());
        o.g_ud.emplace_back(sl, std::move(gd));
      }
    });
    batch_result res;
    res.rows = total_rows;
    for (const auto& o : outs) res.loss += o.loss, res.first += o.first;
    res.loss /= double(total_rows);
    if (!want_grad) return res;

    // Reduce dL/du^d per document in item order, then backpropagate every sequence in parallel and sum in order.
    std::vector<std::vector<double>> g_doc(slot_doc.size());
    for (std::size_t i = 0; i != slot_doc.size(); ++i) g_doc[i].assign(doc_f[i].u.size(), 0.0);
    for (const auto& o : outs)
      for (const auto& [sl, gd] : o.g_ud)
        for (std::size_t j = 0; j != gd.size(); ++j) g_doc[sl][j] += gd[j];
    std::vector<std::vector<double>> g_head(slot_doc.size() + items.size(), std::vector<double>(dim + 1, 0.0));
    parallel_for(g_head.size(), p_.threads, [&](std::size_t i) {
      const bool is_doc = i < slot_doc.size();
      const detail::head_forward& f = is_doc ? doc_f[i] : query_f[i - slot_doc.size()];
      std::vector<double> g = is_doc ? std::move(g_doc[i]) : std::move(outs[i - slot_doc.size()].g_uq);
      if (g.empty()) return;
      if (p_.objective == salience_objective::tokens)
        detail::backward_gate(f, epsilon, g);
      else
        detail::backward_head(f, epsilon, g);
      const matrix_view<float> xs = is_doc ? docs_.sequence(slot_doc[i]) : queries_.sequence(examples_[items[i - slot_doc.size()]].query);
      auto& acc = g_head[i];
      for (std::size_t t = 0; t != xs.rows; ++t) {
        if (g[t] == 0.0) continue;
        const float* row = xs.row(t);
        for (std::size_t c = 0; c != dim; ++c) acc[c] += g[t] * double(row[c]);
        acc[dim] += g[t];
      }
    });
    for (std::size_t i = 0; i != g_head.size(); ++i) {
      const std::size_t at = i < slot_doc.size() ? dim + 1 : 0;
      for (std::size_t c = 0; c <= dim; ++c) grad[at + c] += g_head[i][c];
    }
    return res;
  }

  /// The tokens objective (salience_objective::tokens) of one training query: candidates `cand` (its np relevant
  /// documents first), log_w[c] the log of candidate c's weight in the denominators (0, or log(N / R) for a
  /// collection negative), their documents' gates in doc_f at slot_of's slots; adds to `o`. A row counts as first when
  /// some kept query token (λ^q >= 1/2) scores a kept token (λ^d >= 1/2) of the relevant document strictly above every
  /// kept token of the other candidates.
  void token_search_item(matrix_view<float> q, const detail::head_forward& qf, const std::vector<std::uint32_t>& cand, std::size_t np,
                         const std::vector<double>& log_w, const std::vector<detail::head_forward>& doc_f,
                         const std::unordered_map<std::uint32_t, std::size_t>& slot_of,
                         double row_weight, bool want_grad, detail::salience_item_out& o) const {
    const std::size_t n = q.rows, nc = cand.size();
    const double tau = p_.token_temperature;
    constexpr double none = -std::numeric_limits<double>::infinity();
    // Per candidate c, once for all rows: S in float with the library's dot (as align_pair computes it), and per query
    // token i the kept mass in its own scale, mass[c][i] = Σ_j λ_j e^{τ S_ij - top[c][i]} with top[c][i] the largest
    // τ S_ij over c's tokens of λ_j > 0 (e[c] keeps those exponentials for the gradient), and the best S_ij over
    // c's tokens of λ_j >= 1/2 (the kept ones, for `first`). A row combines its members' masses on a common scale.
    std::vector<const detail::head_forward*> f(nc);
    std::vector<std::vector<double>> e(nc), mass(nc), top(nc), kept_best(nc);
    for (std::size_t c = 0; c != nc; ++c) {
      const matrix_view<float> d = docs_.sequence(cand[c]);
      const std::size_t m = d.rows;
      f[c] = &doc_f[slot_of.at(cand[c])];
      const std::vector<double>& lambda = f[c]->lambda;
      e[c].assign(n * m, 0.0), mass[c].assign(n, 0.0), top[c].assign(n, none), kept_best[c].assign(n, none);
      for (std::size_t i = 0; i != n; ++i) {
        double* ei = e[c].data() + i * m;
        for (std::size_t j = 0; j != m; ++j) {
          const float sij = dot(q.row(i), d.row(j), q.cols);
          ei[j] = tau * double(sij);
          if (lambda[j] > 0.0) top[c][i] = std::max(top[c][i], ei[j]);
          if (lambda[j] >= 0.5) kept_best[c][i] = std::max(kept_best[c][i], double(sij));
        }
        for (std::size_t j = 0; j != m; ++j) {
          ei[j] = lambda[j] > 0.0 ? std::exp(ei[j] - top[c][i]) : 0.0;
          mass[c][i] += lambda[j] * ei[j];
        }
      }
    }
    // coef[c][i]: dL/dλ_j = Σ_i coef[c][i] e[c][i][j] for j of c (summed over the rows c is a member of).
    std::vector<std::vector<double>> coef;
    if (want_grad) {
      o.g_uq.assign(n, 0.0);
      coef.assign(nc, std::vector<double>(n, 0.0));
    }
    std::vector<double> scale(n), total(n), r(n);
    double qsum = 0.0;
    for (std::size_t i = 0; i != n; ++i) qsum += qf.lambda[i];
    for (std::size_t row = 0; row != np; ++row) {
      // Members: the relevant document `row`, then every non-relevant candidate.
      auto members = [&](auto&& visit) {
        visit(row);
        for (std::size_t c = np; c != nc; ++c) visit(c);
      };
      std::fill(scale.begin(), scale.end(), none);
      members([&](std::size_t c) {
        for (std::size_t i = 0; i != n; ++i) scale[i] = std::max(scale[i], top[c][i] + log_w[c]);
      });
      std::fill(total.begin(), total.end(), 0.0);
      members([&](std::size_t c) {
        for (std::size_t i = 0; i != n; ++i)
          if (mass[c][i] > 0.0) total[i] += mass[c][i] * std::exp(top[c][i] + log_w[c] - scale[i]);
      });
      double found = 0.0;
      for (std::size_t i = 0; i != n; ++i) {
        r[i] = total[i] > 0.0 && mass[row][i] > 0.0 ? mass[row][i] * std::exp(top[row][i] - scale[i]) / total[i] : 0.0;
        found += qf.lambda[i] * r[i];
      }
      if (!(qsum > 0.0)) continue;  // no kept query token: nothing to learn from this row
      // found / qsum is a mean of chances in [0, 1]; floored so that a relevant document whose kept tokens all
      // underflow gives a large finite loss (and no gradient).
      o.loss += std::log(qsum) - std::log(std::max(found, 1e-300 * qsum));
      // First: a kept query token whose best kept token of D+ beats every other member's kept tokens.
      bool first = false;
      for (std::size_t i = 0; i != n && !first; ++i) {
        if (qf.lambda[i] < 0.5) continue;
        double other = none;
        for (std::size_t c = np; c != nc; ++c) other = std::max(other, kept_best[c][i]);
        first = kept_best[row][i] > other;
      }
      o.first += first;
      if (!want_grad || !(found > 1e-300 * qsum)) continue;
      // dL/dλ^q_i = 1 / qsum - r_i / found; dL/dλ^d_j = -(1/found) Σ_i λ^q_i (w_ij / total_i) ([j ∈ D+] - r_i), where
      // w_ij = e^{τ S_ij - scale_i} = e[c][i][j] e^{top[c][i] - scale_i}.
      for (std::size_t i = 0; i != n; ++i) o.g_uq[i] += row_weight * (1.0 / qsum - r[i] / found);
      members([&](std::size_t c) {
        const double in_pos = c == row ? 1.0 : 0.0;
        for (std::size_t i = 0; i != n; ++i) {
          if (!(total[i] > 0.0) || qf.lambda[i] == 0.0 || !(mass[c][i] > 0.0)) continue;
          coef[c][i] += -row_weight * qf.lambda[i] * (in_pos - r[i]) * std::exp(top[c][i] + log_w[c] - scale[i]) / (found * total[i]);
        }
      });
    }
    if (!want_grad) return;
    for (std::size_t c = 0; c != nc; ++c) {
      const std::size_t m = f[c]->lambda.size();
      std::vector<double> g(m, 0.0);
      for (std::size_t i = 0; i != n; ++i) {
        if (coef[c][i] == 0.0) continue;
        const double* ei = e[c].data() + i * m;
        for (std::size_t j = 0; j != m; ++j) g[j] += coef[c][i] * ei[j];
      }
      o.g_ud.emplace_back(slot_of.at(cand[c]), std::move(g));
    }
  }

  sequence_set_view queries_, docs_;
  std::vector<training_query> examples_;
  salience_training_params p_;
  std::vector<std::vector<detail::pair_mask>> masks_;  ///< per example: positives, then negatives
};

/// Hard negatives: for every example, the `count` best-scoring documents that are not relevant to it, by an exhaustive
/// search of all documents under `strategy` and `norm` without salience (the starting point of training). Replaces
/// each example's negatives.
inline void mine_hard_negatives(const sequence_set_view& queries, const sequence_set_view& docs, std::vector<training_query>& examples,
                                std::size_t count, const alignment& strategy = alignment::top1(),
                                normalization norm = normalization::mean, unsigned threads = 1) {
  strategy.validate();
  for (std::size_t e = 0; e != examples.size(); ++e)
    ALIGNER_EXPECTS(examples[e].query < queries.size(), "training example ", e, " names query ", examples[e].query, " of ",
                    queries.size());
  std::vector<std::vector<std::uint32_t>> found(examples.size());
  if (count > 0 && docs.size() > 0) {
    const aligner_retriever<exact_backend> index(exact_backend(docs.tokens.cols), docs, index_params{.token_index = false});
    // One exhaustive batch over the examples' queries (blocks of queries sweep each document once). Every example
    // asks for the most any needs: a ranking's first n entries do not depend on how many more are asked for.
    std::vector<float> rows;
    std::vector<std::int64_t> offsets{0};
    std::size_t top = count;
    for (const auto& ex : examples) {
      const matrix_view<float> q = queries.sequence(ex.query);
      for (std::size_t i = 0; i != q.rows; ++i) rows.insert(rows.end(), q.row(i), q.row(i) + q.cols);
      offsets.push_back(offsets.back() + std::int64_t(q.rows));
      top = std::max(top, count + ex.positives.size());
    }
    const sequence_set_view batch{{rows.data(), std::size_t(offsets.back()), queries.tokens.cols}, offsets};
    const auto results = index.search_batch(batch, {.strategy = strategy, .norm = norm, .top = top, .exhaustive = true}, {}, threads);
    for (std::size_t e = 0; e != examples.size(); ++e) {
      const auto& ex = examples[e];
      for (auto id : results[e].ids) {
        if (found[e].size() == count) break;
        if (std::find(ex.positives.begin(), ex.positives.end(), std::uint32_t(id)) == ex.positives.end())
          found[e].push_back(std::uint32_t(id));
      }
    }
  }
  for (std::size_t e = 0; e != examples.size(); ++e) examples[e].negatives = std::move(found[e]);
}

/// Training queries from a collection's judgments (`c.judgments`, e.g. loaded with split "train"): every query with
/// a judgment of grade > 0, its positives those documents. `missing`, when given, receives the number of relevant
/// judgments whose document is not in the collection (they are skipped). Throws aligner::invalid_argument when no
/// query has a relevant document, or when a query's relevant documents are all missing (naming the query).
inline std::vector<training_query> training_queries(const io::collection& c, std::size_t* missing = nullptr) {
  std::unordered_map<std::string_view, std::uint32_t> doc_index;
  for (std::size_t d = 0; d != c.docs.size(); ++d) doc_index.emplace(c.docs.ids[d], std::uint32_t(d));
  std::vector<training_query> out;
  std::size_t skipped = 0;
  for (std::size_t q = 0; q != c.queries.size(); ++q) {
    const auto it = c.judgments.find(c.queries.ids[q]);
    if (it == c.judgments.end()) continue;
    training_query t{q, {}, {}};
    std::string first_missing;
    for (const auto& [doc, grade] : it->second) {
      if (grade <= 0) continue;
      const auto d = doc_index.find(doc);
      if (d == doc_index.end()) {
        ++skipped;
        if (first_missing.empty()) first_missing = doc;
        continue;
      }
      t.positives.push_back(d->second);
    }
    ALIGNER_EXPECTS(!(t.positives.empty() && !first_missing.empty()), "training query '", c.queries.ids[q],
                    "' has no relevant document in the collection (document '", first_missing, "' is not there)");
    if (!t.positives.empty()) out.push_back(std::move(t));
  }
  ALIGNER_EXPECTS(!out.empty(), "the training set is empty: no query of the collection has a relevant judged document (",
                  c.judgments.size(), " judged queries)");
  if (missing) *missing = skipped;
  return out;
}

}  // namespace aligner
