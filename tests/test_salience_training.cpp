// Learned salience (SPEC section 12): finite-difference checks of the score, gate and loss gradients (float64), the
// trainer on a problem where salience decides the ranking, determinism, bad input, and the heads file.
#include <aligner/aligner.hpp>
#include <aligner/eval/idf.hpp>
#include <aligner/eval/salience_training.hpp>
#include <aligner/io/salience_heads.hpp>

#include "test_common.hpp"

#include <fstream>
#include <limits>

using Catch::Matchers::WithinAbs;

namespace {

using aligner::detail::head_forward;
using aligner::detail::head_params;

/// Central difference of f at x along coordinate i.
template <class F>
double central_difference(F&& f, std::vector<double> x, std::size_t i, double h) {
  const double x0 = x[i];
  x[i] = x0 + h;
  const double up = f(x);
  x[i] = x0 - h;
  const double down = f(x);
  return (up - down) / (2 * h);
}

void require_gradient_close(double analytic, double numeric, const std::string& what) {
  INFO(what << ": analytic " << analytic << ", finite difference " << numeric);
  REQUIRE(std::abs(analytic - numeric) <= 1e-6 + 1e-5 * std::abs(numeric));
}

/// A small training problem where salience decides the ranking: every query and document is half "stopword" tokens
/// (a few shared vectors with a large first component, identical in queries and documents) and half topic tokens
/// (a topic direction plus noise). Query t's relevant document is the one of topic t. Without salience the stopwords
/// (which match exactly everywhere) dominate the mean; a head that reads the first component can silence them. The
/// documents of topic t (docs_per_topic of them) are relevant to query t.
struct stopword_problem {
  std::size_t dim = 12, topics = 24;
  std::vector<float> q_tokens, d_tokens;
  std::vector<std::int64_t> q_offsets{0}, d_offsets{0};
  std::vector<aligner::training_query> examples;

  explicit stopword_problem(std::uint64_t seed, std::size_t docs_per_topic = 3) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<std::vector<float>> stop(4, std::vector<float>(dim)), topic(topics, std::vector<float>(dim));
    for (auto& s : stop) {
      for (auto& v : s) v = 0.3f * nd(rng);
      s[0] = 3.f;
    }
    for (auto& t : topic) {
      for (auto& v : t) v = nd(rng);
      t[0] = 0.f;
    }
    auto add = [&](std::vector<float>& tokens, std::vector<std::int64_t>& offsets, std::size_t t, std::size_t len, float noise) {
      for (std::size_t i = 0; i != len; ++i) {
        if (i % 2 == 0) {
          const auto& s = stop[rng() % stop.size()];
          tokens.insert(tokens.end(), s.begin(), s.end());
        } else {
          for (std::size_t c = 0; c != dim; ++c) tokens.push_back(topic[t][c] + noise * nd(rng));
          tokens[tokens.size() - dim] = 0.f;
        }
      }
      offsets.push_back(offsets.back() + std::int64_t(len));
    };
    for (std::size_t t = 0; t != topics; ++t)
      for (std::size_t k = 0; k != docs_per_topic; ++k) add(d_tokens, d_offsets, (t + k * 7) % topics, 6 + rng() % 10, 0.8f);
    for (std::size_t t = 0; t != topics; ++t) {
      add(q_tokens, q_offsets, t, 4 + rng() % 4, 0.8f);
      aligner::training_query ex{t, {}, {}};
      for (std::size_t d = 0; d + 1 < d_offsets.size(); ++d)
        if ((d / docs_per_topic + (d % docs_per_topic) * 7) % topics == t) ex.positives.push_back(std::uint32_t(d));
      examples.push_back(ex);
    }
  }
  aligner::sequence_set_view queries() const { return {{q_tokens.data(), std::size_t(q_offsets.back()), dim}, q_offsets}; }
  aligner::sequence_set_view docs() const { return {{d_tokens.data(), std::size_t(d_offsets.back()), dim}, d_offsets}; }
};

/// A problem the model class can solve exactly: random unit token vectors, and query q's relevant document is the
/// one a teacher's salience heads (random w, with or without the gate) score highest. The unweighted score finds it
/// only sometimes; a student trained from w = 0 should find it far more often.
stopword_problem teacher_problem(std::uint64_t seed, const aligner::salience_heads& teacher, const aligner::alignment& strategy) {
  stopword_problem pb(seed);
  std::mt19937_64 rng(seed + 1);
  pb.q_tokens = aligner_test::random_matrix(std::size_t(pb.q_offsets.back()), pb.dim, seed + 2, true);
  pb.d_tokens = aligner_test::random_matrix(std::size_t(pb.d_offsets.back()), pb.dim, seed + 3, true);
  const auto uq = teacher.query(pb.queries()), ud = teacher.doc(pb.docs());
  const aligner::aligner_retriever<aligner::exact_backend> index(aligner::exact_backend(pb.dim), pb.docs(), aligner::index_params{.token_index = false}, ud);
  for (auto& ex : pb.examples) {
    const auto q = pb.queries();
    const auto r = index.search(q.sequence(ex.query), {.strategy = strategy, .top = 1, .exhaustive = true,
                                                        .query_salience = std::span<const float>(uq).subspan(std::size_t(q.offsets[ex.query]), q.length(ex.query))});
    ex.positives = {std::uint32_t(r.ids[0])};
  }
  return pb;
}

/// Fraction of queries whose first result is relevant, among all documents under the given heads (none: no salience).
double first_rate(const stopword_problem& pb, const aligner::salience_heads* heads,
                  const aligner::alignment& strategy = aligner::alignment::top1()) {
  const auto docs = pb.docs(), queries = pb.queries();
  std::vector<float> ud, uq;
  if (heads) ud = heads->doc(docs), uq = heads->query(queries);
  const aligner::aligner_retriever<aligner::exact_backend> index(aligner::exact_backend(pb.dim), docs, aligner::index_params{.token_index = false}, ud);
  std::size_t hits = 0;
  for (const auto& ex : pb.examples) {
    aligner::search_params p{.strategy = strategy, .top = 1, .exhaustive = true};
    if (heads) p.query_salience = std::span<const float>(uq).subspan(std::size_t(queries.offsets[ex.query]), queries.length(ex.query));
    const auto r = index.search(queries.sequence(ex.query), p);
    hits += r.ids.size() == 1 && std::find(ex.positives.begin(), ex.positives.end(), std::uint32_t(r.ids[0])) != ex.positives.end();
  }
  return double(hits) / double(pb.examples.size());
}

}  // namespace

TEST_CASE("salience training: the score's gradient in the saliences equals finite differences", "[gradient]") {
  const std::size_t n = 5, m = 9, dim = 6;
  const auto q = aligner_test::random_matrix(n, dim, 11, true), d = aligner_test::random_matrix(m, dim, 12, true);
  for (const auto& strategy : {aligner::alignment::top1(), aligner::alignment::top_k(3), aligner::alignment::top_p(0.5), aligner::alignment::dense()})
    for (auto norm : {aligner::normalization::mean, aligner::normalization::none}) {
      aligner::detail::pair_mask mk;
      std::vector<float> scratch;
      aligner::detail::align_pair({q.data(), n, dim}, {d.data(), m, dim}, strategy, mk, scratch);
      REQUIRE(mk.sim.size() == (strategy.kind == aligner::alignment::kind_t::dense ? 1 : n * strategy.row_budget(m)));
      std::vector<double> u(n + m);
      std::mt19937_64 rng(3);
      for (auto& v : u) v = 0.2 + double(rng() % 1000) / 500.0;
      auto score = [&](const std::vector<double>& x) {
        double z;
        return aligner::detail::masked_score(mk, x.data(), x.data() + n, norm, z);
      };
      double z;
      const double sim = aligner::detail::masked_score(mk, u.data(), u.data() + n, norm, z);
      // The mask's score equals the library's scorer with these saliences.
      std::vector<float> uqf(u.begin(), u.begin() + n), udf(u.begin() + n, u.end());
      const float lib = aligner::score({q.data(), n, dim}, {d.data(), m, dim},
                                       {.strategy = strategy, .norm = norm, .query_salience = uqf, .doc_salience = udf});
      REQUIRE_THAT(sim, WithinAbs(lib, 1e-5));
      std::vector<double> g(n + m, 0.0);
      aligner::detail::masked_score_backward(mk, u.data(), u.data() + n, norm, sim, z, 1.0, g.data(), g.data() + n);
      for (std::size_t i = 0; i != n + m; ++i)
        require_gradient_close(g[i], central_difference(score, u, i, 1e-6),
                               strategy.name() + " " + aligner::to_string(norm) + " d sim / d u[" + std::to_string(i) + "]");
    }
}

TEST_CASE("salience training: the gate's derivative at its exact solution equals finite differences", "[gradient]") {
  // z = s (identity tokens, w = s, b = 0, every s > 0), so dL/dz of backward_head is dL/ds of u = λ(s) s.
  for (const auto& [mi, alpha, epsilon, seed] : {std::tuple{7, 0.4, 0.3, 1}, std::tuple{12, 0.25, 0.05, 2}, std::tuple{10, 0.5, 1.0, 3},
                                                 std::tuple{9, 0.6, 0.02, 4}}) {
    const int m = mi;
    const std::size_t mm = static_cast<std::size_t>(m);
    std::mt19937_64 rng{static_cast<std::uint64_t>(seed)};
    std::vector<float> eye(mm * mm, 0.f);
    for (int i = 0; i != m; ++i) eye[std::size_t(i * m + i)] = 1.f;
    std::vector<double> s0(mm), c(mm);
    for (auto& v : s0) v = 0.1 + double(rng() % 1000) / 1000.0;
    for (auto& v : c) v = double(int(rng() % 2001) - 1000) / 1000.0;
    auto objective = [&](const std::vector<double>& s) {
      head_forward f;
      aligner::detail::forward_head({eye.data(), std::size_t(m), std::size_t(m)}, head_params{s, 0.0}, alpha, epsilon, f);
      double acc = 0;
      for (int i = 0; i != m; ++i) acc += c[std::size_t(i)] * f.u[std::size_t(i)];
      return acc;
    };
    head_forward f;
    aligner::detail::forward_head({eye.data(), std::size_t(m), std::size_t(m)}, head_params{s0, 0.0}, alpha, epsilon, f);
    // The gate holds its budget and caps at 1; the test covers capped and uncapped entries.
    double total = 0;
    std::size_t capped = 0;
    for (double l : f.lambda) total += l, capped += l == 1.0;
    REQUIRE_THAT(total, WithinAbs(std::ceil(alpha * m), 1e-9));
    std::vector<float> s0f(s0.begin(), s0.end());
    const auto lib = aligner::solve_gate(s0f, std::ceil(alpha * m), epsilon);
    for (int i = 0; i != m; ++i) REQUIRE_THAT(f.lambda[std::size_t(i)], WithinAbs(lib[std::size_t(i)], 1e-5));
    std::vector<double> g = c;
    aligner::detail::backward_head(f, epsilon, g);
    for (int j = 0; j != m; ++j)
      require_gradient_close(g[std::size_t(j)], central_difference(objective, s0, std::size_t(j), 1e-7),
                             "m " + std::to_string(m) + " (" + std::to_string(capped) + " capped) d/ds[" + std::to_string(j) + "]");
  }
}

TEST_CASE("salience training: the loss gradient in (w, b) of both heads equals finite differences", "[gradient]") {
  stopword_problem pb(5);
  std::vector<aligner::training_query> examples = pb.examples;
  aligner::mine_hard_negatives(pb.queries(), pb.docs(), examples, 4);
  for (const auto& [strategy, norm, alpha_q, alpha_d, epsilon] :
       {std::tuple{aligner::alignment::top1(), aligner::normalization::mean, 0.5, 0.4, 0.5},
        std::tuple{aligner::alignment::top_k(2), aligner::normalization::none, 1.0, 0.6, 0.2},
        std::tuple{aligner::alignment::top_p(0.3), aligner::normalization::mean, 1.0, 1.0, 0.002}}) {
    const aligner::salience_trainer tr(pb.queries(), pb.docs(), examples,
                                       {.strategy = strategy, .norm = norm, .alpha_query = alpha_q, .alpha_doc = alpha_d, .epsilon = epsilon,
                                        .temperature = 5.0});
    // A point away from the start (where every token ties), inside the ReLU's positive side for most tokens.
    std::vector<double> x = tr.initial_parameters();
    std::mt19937_64 rng(9);
    for (auto& v : x) v += double(int(rng() % 2001) - 1000) / 5000.0;
    std::vector<double> g(tr.parameter_count());
    const double loss = tr.loss(x, g);
    REQUIRE(std::isfinite(loss));
    REQUIRE(loss > 0);
    auto f = [&](const std::vector<double>& p) { return tr.loss(p); };
    for (std::size_t i = 0; i != x.size(); ++i)
      require_gradient_close(g[i], central_difference(f, x, i, 1e-6), strategy.name() + " d loss / d parameter " + std::to_string(i));
  }
}

TEST_CASE("salience training: the gate-only derivative of the tokens objective equals finite differences", "[gradient]") {
  // z = s as in the test above; the objective reads λ alone: Σ c_i λ_i(s).
  for (const auto& [mi, alpha, epsilon, seed] : {std::tuple{7, 0.4, 0.3, 11}, std::tuple{12, 0.25, 0.05, 12}, std::tuple{9, 0.6, 0.02, 13}}) {
    const std::size_t m = std::size_t(mi);
    std::mt19937_64 rng{static_cast<std::uint64_t>(seed)};
    std::vector<float> eye(m * m, 0.f);
    for (std::size_t i = 0; i != m; ++i) eye[i * m + i] = 1.f;
    std::vector<double> s0(m), c(m);
    for (auto& v : s0) v = 0.1 + double(rng() % 1000) / 1000.0;
    for (auto& v : c) v = double(int(rng() % 2001) - 1000) / 1000.0;
    auto objective = [&](const std::vector<double>& s) {
      head_forward f;
      aligner::detail::forward_head({eye.data(), m, m}, head_params{s, 0.0}, alpha, epsilon, f);
      double acc = 0;
      for (std::size_t i = 0; i != m; ++i) acc += c[i] * f.lambda[i];
      return acc;
    };
    head_forward f;
    aligner::detail::forward_head({eye.data(), m, m}, head_params{s0, 0.0}, alpha, epsilon, f);
    std::vector<double> g = c;
    aligner::detail::backward_gate(f, epsilon, g);
    for (std::size_t j = 0; j != m; ++j)
      require_gradient_close(g[j], central_difference(objective, s0, j, 1e-7), "m " + std::to_string(m) + " d/ds[" + std::to_string(j) + "]");
  }
}

/// The tokens objective's loss over every example (no in-batch negatives), written out from its definition: for each
/// relevant document D+, r_i = Σ_{j∈D+} λ_j e^{τ S_ij} / Σ_{D ∈ {D+} ∪ negatives} Σ_{j∈D} λ_j e^{τ S_ij} and the loss is
/// -log(Σ λ^q_i r_i / Σ λ^q_i); the mean over the relevant pairs. S in double (the trainer's is float: a 1e-6 match).
/// With `crowd` (collection negatives), each crowd document that is neither relevant nor a negative of the query joins
/// the denominator with weight (documents / crowd size).
double tokens_loss_by_hand(const stopword_problem& pb, const std::vector<aligner::training_query>& examples, const std::vector<double>& x,
                           double alpha_q, double alpha_d, double epsilon, double tau, const std::vector<std::uint32_t>& crowd = {}) {
  const std::size_t dim = pb.dim;
  const head_params hq{{x.begin(), x.begin() + std::ptrdiff_t(dim)}, x[dim]};
  const head_params hd{{x.begin() + std::ptrdiff_t(dim + 1), x.begin() + std::ptrdiff_t(2 * dim + 1)}, x[2 * dim + 1]};
  const auto q = pb.queries(), d = pb.docs();
  double total = 0;
  std::size_t rows = 0;
  for (const auto& ex : examples) {
    head_forward fq;
    aligner::detail::forward_head(q.sequence(ex.query), hq, alpha_q, epsilon, fq);
    for (auto pos : ex.positives) {
      std::vector<std::uint32_t> members{pos};
      members.insert(members.end(), ex.negatives.begin(), ex.negatives.end());
      std::vector<double> weight(members.size(), 1.0);
      for (auto doc : crowd) {
        const bool relevant = std::find(ex.positives.begin(), ex.positives.end(), doc) != ex.positives.end();
        const bool negative = std::find(ex.negatives.begin(), ex.negatives.end(), doc) != ex.negatives.end();
        if (!relevant && !negative) members.push_back(doc), weight.push_back(double(d.size()) / double(crowd.size()));
      }
      double found = 0, qsum = 0;
      for (std::size_t i = 0; i != q.length(ex.query); ++i) {
        double mine = 0, all = 0;
        for (std::size_t k = 0; k != members.size(); ++k) {
          const auto doc = members[k];
          head_forward fd;
          aligner::detail::forward_head(d.sequence(doc), hd, alpha_d, epsilon, fd);
          for (std::size_t j = 0; j != d.length(doc); ++j) {
            double sij = 0;
            for (std::size_t c = 0; c != dim; ++c) sij += double(q.sequence(ex.query).row(i)[c]) * double(d.sequence(doc).row(j)[c]);
            const double e = fd.lambda[j] * std::exp(tau * sij);
            all += weight[k] * e;
            if (doc == pos) mine += e;
          }
        }
        found += fq.lambda[i] * mine / all;
        qsum += fq.lambda[i];
      }
      total += -std::log(found / qsum);
      ++rows;
    }
  }
  return total / double(rows);
}

TEST_CASE("salience training: the tokens objective's loss is its definition and its gradient equals finite differences", "[gradient]") {
  stopword_problem pb(5);
  std::vector<aligner::training_query> examples = pb.examples;
  aligner::mine_hard_negatives(pb.queries(), pb.docs(), examples, 4);
  for (const auto& [alpha_q, alpha_d, epsilon, tau] :
       {std::tuple{0.5, 0.4, 0.5, 5.0}, std::tuple{1.0, 0.6, 0.2, 3.0}, std::tuple{0.5, 1.0, 0.3, 8.0}}) {
    const aligner::salience_trainer tr(pb.queries(), pb.docs(), examples,
                                       {.alpha_query = alpha_q, .alpha_doc = alpha_d, .epsilon = epsilon,
                                        .objective = aligner::salience_objective::tokens, .token_temperature = tau});
    std::vector<double> x = tr.initial_parameters();
    std::mt19937_64 rng(19);
    for (auto& v : x) v += double(int(rng() % 2001) - 1000) / 5000.0;
    std::vector<double> g(tr.parameter_count());
    const double loss = tr.loss(x, g);
    INFO("alpha " << alpha_q << " / " << alpha_d << ", epsilon " << epsilon << ", tau " << tau);
    REQUIRE(std::isfinite(loss));
    REQUIRE(loss > 0);
    REQUIRE_THAT(loss, WithinAbs(tokens_loss_by_hand(pb, examples, x, alpha_q, alpha_d, epsilon, tau), 1e-5));
    auto f = [&](const std::vector<double>& p) { return tr.loss(p); };
    std::size_t nonzero = 0;
    for (std::size_t i = 0; i != x.size(); ++i) {
      require_gradient_close(g[i], central_difference(f, x, i, 1e-6), "d loss / d parameter " + std::to_string(i));
      nonzero += g[i] != 0.0;
    }
    // A side without a gate gets no gradient (its λ is 1 whatever w and b are); a gated side does.
    const std::size_t half = pb.dim + 1;
    REQUIRE((nonzero > 0));
    for (std::size_t i = 0; i != half; ++i) {
      if (alpha_q == 1.0) REQUIRE(g[i] == 0.0);
      if (alpha_d == 1.0) REQUIRE(g[half + i] == 0.0);
    }
  }
}

/// The score objective's loss written out with the library's retriever for the scores: per relevant pair,
/// log(e^{τ s+} + Σ_negatives e^{τ s} + ω Σ_crowd e^{τ s}) - τ s+ with s the salience-weighted score of heads_of(x).
double score_loss_by_hand(const stopword_problem& pb, const std::vector<aligner::training_query>& examples, const aligner::salience_heads& heads,
                          double tau, const std::vector<std::uint32_t>& crowd) {
  const auto q = pb.queries(), d = pb.docs();
  const auto uq = heads.query(q), ud = heads.doc(d);
  const aligner::aligner_retriever<aligner::exact_backend> index(aligner::exact_backend(pb.dim), d, aligner::index_params{.token_index = false}, ud);
  double total = 0;
  std::size_t rows = 0;
  for (const auto& ex : examples) {
    const auto r = index.search(q.sequence(ex.query), {.top = d.size(), .exhaustive = true,
                                                       .query_salience = std::span<const float>(uq).subspan(std::size_t(q.offsets[ex.query]), q.length(ex.query))});
    std::vector<double> score(d.size());
    for (std::size_t k = 0; k != r.ids.size(); ++k) score[std::size_t(r.ids[k])] = double(r.scores[k]);
    for (auto pos : ex.positives) {
      double sum = std::exp(tau * score[pos]);
      for (auto n : ex.negatives) sum += std::exp(tau * score[n]);
      for (auto c : crowd)
        if (std::find(ex.positives.begin(), ex.positives.end(), c) == ex.positives.end() &&
            std::find(ex.negatives.begin(), ex.negatives.end(), c) == ex.negatives.end())
          sum += double(d.size()) / double(crowd.size()) * std::exp(tau * score[c]);
      total += std::log(sum) - tau * score[pos], ++rows;
    }
  }
  return total / double(rows);
}

TEST_CASE("salience training: collection negatives stand for the collection, losses by hand, gradients by finite differences",
          "[gradient]") {
  stopword_problem pb(5);
  std::vector<aligner::training_query> examples = pb.examples;
  aligner::mine_hard_negatives(pb.queries(), pb.docs(), examples, 3);
  const std::size_t n_docs = pb.docs().size();
  const std::vector<std::uint32_t> crowd{4, 17, 0, 40, 9, 33, 61, 2};  // some relevant or negative for some query
  for (const auto objective : {aligner::salience_objective::score, aligner::salience_objective::tokens}) {
    INFO(aligner::to_string(objective));
    const aligner::salience_training_params p{.alpha_query = 0.5, .alpha_doc = 0.6, .epsilon = 0.3, .temperature = 5.0,
                                              .objective = objective, .token_temperature = 4.0};
    const aligner::salience_trainer tr(pb.queries(), pb.docs(), examples, p);
    std::vector<double> x = tr.initial_parameters();
    std::mt19937_64 rng(23);
    for (auto& v : x) v += double(int(rng() % 2001) - 1000) / 5000.0;
    std::vector<double> g(tr.parameter_count());
    const double loss = tr.loss(x, g, crowd);
    REQUIRE(std::isfinite(loss));
    REQUIRE(loss > tr.loss(x));  // more competitors, weighted n_docs / 8 each
    if (objective == aligner::salience_objective::tokens)
      REQUIRE_THAT(loss, WithinAbs(tokens_loss_by_hand(pb, examples, x, 0.5, 0.6, 0.3, 4.0, crowd), 1e-5));
    else
      REQUIRE_THAT(loss, WithinAbs(score_loss_by_hand(pb, examples, tr.heads_of(x), 5.0, crowd), 2e-4));
    auto f = [&](const std::vector<double>& v) { return tr.loss(v, {}, crowd); };
    for (std::size_t i = 0; i != x.size(); ++i)
      require_gradient_close(g[i], central_difference(f, x, i, 1e-6), "d loss / d parameter " + std::to_string(i));
    // Every document drawn: each weighs 1, and the loss is the one whose negatives are every other document.
    std::vector<std::uint32_t> all(n_docs);
    std::iota(all.begin(), all.end(), std::uint32_t{0});
    auto everything = examples;
    for (auto& ex : everything) {
      ex.negatives.clear();
      for (std::uint32_t doc = 0; doc != n_docs; ++doc)
        if (std::find(ex.positives.begin(), ex.positives.end(), doc) == ex.positives.end()) ex.negatives.push_back(doc);
    }
    const aligner::salience_trainer tr_all(pb.queries(), pb.docs(), everything, p);
    const double with_all = tr.loss(x, {}, all), by_negatives = tr_all.loss(x);
    REQUIRE_THAT(with_all, WithinAbs(by_negatives, 1e-9 * std::abs(by_negatives)));
  }
  const aligner::salience_trainer tr(pb.queries(), pb.docs(), examples);
  const std::vector<double> x = tr.initial_parameters();
  REQUIRE_THROWS_WITH(tr.loss(x, {}, std::vector<std::uint32_t>{3, std::uint32_t(n_docs)}),
                      Catch::Contains("collection negative " + std::to_string(n_docs) + " is not one of the " + std::to_string(n_docs)));
  REQUIRE_THROWS_WITH(tr.loss(x, {}, std::vector<std::uint32_t>{3, 5, 3}), Catch::Contains("collection negative 3 is given twice"));
}

TEST_CASE("salience training: with collection negatives, runs repeat exactly for a seed at any thread count", "[property]") {
  stopword_problem pb(33, 2);
  auto examples = pb.examples;
  aligner::mine_hard_negatives(pb.queries(), pb.docs(), examples, 4);
  for (const auto objective : {aligner::salience_objective::score, aligner::salience_objective::tokens}) {
    INFO(aligner::to_string(objective));
    aligner::salience_training_params p{.alpha_doc = 0.5, .epsilon = 0.1, .temperature = 10.0, .objective = objective,
                                        .token_temperature = 5.0, .collection_negatives = 10, .batch_size = 5, .epochs = 4,
                                        .learning_rate = 0.05, .holdout = 0.25, .seed = 4};
    const auto a = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
    p.threads = 3;
    const auto b = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
    REQUIRE(a.epochs.size() == b.epochs.size());
    for (std::size_t e = 0; e != a.epochs.size(); ++e) REQUIRE(a.epochs[e].holdout_loss == b.epochs[e].holdout_loss);
    REQUIRE(std::equal(a.heads.doc.weights().begin(), a.heads.doc.weights().end(), b.heads.doc.weights().begin()));
    REQUIRE(std::equal(a.heads.query.weights().begin(), a.heads.query.weights().end(), b.heads.query.weights().begin()));
    // The draws change the training: not the heads of a training without them.
    p.collection_negatives = 0;
    const auto c = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
    REQUIRE(c.epochs[0].holdout_loss < a.epochs[0].holdout_loss);
    REQUIRE(!std::equal(a.heads.doc.weights().begin(), a.heads.doc.weights().end(), c.heads.doc.weights().begin()));
    // More than the collection holds: every document, each once (weight 1); the held-out loss at the start is the one
    // with every non-relevant document a negative.
    p.collection_negatives = 100000;
    const auto d = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
    auto everything = examples;
    for (auto& ex : everything) {
      ex.negatives.clear();
      for (std::uint32_t doc = 0; doc != pb.docs().size(); ++doc)
        if (std::find(ex.positives.begin(), ex.positives.end(), doc) == ex.positives.end()) ex.negatives.push_back(doc);
    }
    p.collection_negatives = 0, p.epochs = 1;
    const auto e = aligner::salience_trainer(pb.queries(), pb.docs(), everything, p).train();
    REQUIRE_THAT(d.epochs[0].holdout_loss, WithinAbs(e.epochs[0].holdout_loss, 1e-9 * e.epochs[0].holdout_loss));
  }
  using aligner::invalid_argument;
  REQUIRE_THROWS_WITH(aligner::salience_trainer(pb.queries(), pb.docs(), examples, {.collection_negatives = (std::size_t{1} << 20) + 1}),
                      Catch::Contains("collection_negatives must be at most 2^20, got 1048577"));
}

TEST_CASE("salience training: the tokens objective learns which query tokens find the relevant document", "[property]") {
  // The stopword problem: half of every sequence are stopwords (shared vectors, exact matches in every document), half
  // topic tokens. A query stopword's search finds every document's stopwords alike (r_i = D+'s share of them), a topic
  // token's finds the relevant document's topic tokens, so the objective asks the query gate to keep the topic tokens.
  // (The document side gets no signal here: raising the λ of every token of one kind in every document leaves each
  // softmax unchanged, and no query token's candidates mix stopwords with topic tokens; so α_d = 1.)
  stopword_problem pb(31);
  auto examples = pb.examples;
  aligner::mine_hard_negatives(pb.queries(), pb.docs(), examples, 8);
  const aligner::salience_trainer tr(pb.queries(), pb.docs(), examples,
                                     {.alpha_query = 0.5, .alpha_doc = 1.0, .epsilon = 0.05, .objective = aligner::salience_objective::tokens,
                                      .token_temperature = 2.0, .batch_size = 8, .epochs = 40, .learning_rate = 0.05, .holdout = 0.0});
  const auto r = tr.train();
  REQUIRE(r.epochs.back().train_loss < 0.9 * r.epochs[1].train_loss);
  // Kept = the top half of each query by the head (the pruner's rule); topic tokens are the odd positions. The share is
  // of the most topic tokens the budget can hold (ceil(m / 2) kept, floor(m / 2) topic tokens).
  auto topic_share = [&](const std::vector<float>& u) {
    const auto q = pb.queries();
    std::size_t topic = 0, ideal = 0;
    for (std::size_t sq = 0; sq != q.size(); ++sq) {
      const std::size_t m = q.length(sq);
      const auto keep = aligner::prune(std::span<const float>(u).subspan(std::size_t(q.offsets[sq]), m), 0.5);
      for (auto j : keep) topic += j % 2 == 1;
      ideal += std::min(keep.size(), m / 2);
    }
    return double(topic) / double(ideal);
  };
  const double learned = topic_share(r.heads.query(pb.queries()));
  const double untrained = topic_share(std::vector<float>(pb.queries().tokens.rows, 1.f));  // ties: the first tokens
  INFO("topic tokens kept, share of the most the budget holds: learned " << learned << ", untrained " << untrained);
  REQUIRE(learned >= 0.75);
  REQUIRE(learned >= untrained + 0.2);
}

TEST_CASE("salience training: learns to silence tokens that match everywhere and beats the unweighted score", "[property]") {
  // Stopwords in queries and documents.
  {
    stopword_problem pb(21);
    auto examples = pb.examples;
    aligner::mine_hard_negatives(pb.queries(), pb.docs(), examples, 8);
    const aligner::salience_trainer tr(pb.queries(), pb.docs(), examples,
                                       {.alpha_query = 1.0, .alpha_doc = 1.0, .temperature = 10.0, .batch_size = 8, .epochs = 60,
                                        .learning_rate = 0.05, .holdout = 0.0});
    const auto r = tr.train();
    REQUIRE(r.epochs.size() == 61);
    REQUIRE(r.best_epoch == 60);
    REQUIRE(r.epochs.back().train_loss < 0.5 * r.epochs[1].train_loss);
    const double before = first_rate(pb, nullptr), after = first_rate(pb, &r.heads);
    INFO("relevant first " << before << " without salience, " << after << " learned");
    REQUIRE(after > before);
  }
  // A teacher's relevance, with and without the gate: the student recovers it.
  for (double alpha : {1.0, 0.5}) {
    std::optional<aligner::gate_params> gate;
    if (alpha < 1.0) gate = aligner::gate_params{.alpha = alpha, .epsilon = 0.05};
    const auto wq = aligner_test::random_matrix(1, 12, 70), wd = aligner_test::random_matrix(1, 12, 71);
    const aligner::salience_heads teacher(aligner::salience_scorer(wq, 0.5f, gate), aligner::salience_scorer(wd, 0.5f, gate));
    const stopword_problem pb = teacher_problem(23, teacher, aligner::alignment::top1());
    auto examples = pb.examples;
    aligner::mine_hard_negatives(pb.queries(), pb.docs(), examples, 8);
    const aligner::salience_trainer tr(pb.queries(), pb.docs(), examples,
                                       {.alpha_query = alpha, .alpha_doc = alpha, .epsilon = 0.05, .temperature = 20.0, .batch_size = 8,
                                        .epochs = 60, .learning_rate = 0.02, .holdout = 0.0});
    const auto r = tr.train();
    REQUIRE(r.epochs.back().train_loss < 0.7 * r.epochs[1].train_loss);
    const double before = first_rate(pb, nullptr), after = first_rate(pb, &r.heads);
    INFO("alpha " << alpha << ": teacher's document first " << before << " without salience, " << after << " learned");
    REQUIRE(after >= before + 0.2);
  }
}

TEST_CASE("salience training: hard negatives are the best-scoring documents that are not relevant", "[oracle]") {
  // Against the double reference score of every document: the negatives are the `count` best non-relevant ones, in
  // score order (within float rounding). Examples with 1 to 4 positives, one query twice, 1 and 3 threads.
  stopword_problem pb(21, 4);
  auto examples = pb.examples;
  for (std::size_t e = 0; e != examples.size(); ++e) examples[e].positives.resize(1 + e % examples[e].positives.size());
  examples.push_back(examples[3]);
  const auto docs = pb.docs();
  for (const auto& strategy : {aligner::alignment::top1(), aligner::alignment::top_k(2)})
    for (unsigned threads : {1u, 3u}) {
      INFO(strategy.name() << ", threads " << threads);
      auto got = examples;
      aligner::mine_hard_negatives(pb.queries(), docs, got, 5, strategy, aligner::normalization::mean, threads);
      for (std::size_t e = 0; e != got.size(); ++e) {
        INFO("example " << e);
        const auto& ex = got[e];
        REQUIRE(ex.negatives.size() == 5);
        std::vector<double> ref(docs.size());
        for (std::size_t d = 0; d != docs.size(); ++d)
          ref[d] = aligner::ref::score(pb.queries().sequence(ex.query), docs.sequence(d), {.strategy = strategy});
        auto relevant = [&](std::uint32_t d) { return std::find(ex.positives.begin(), ex.positives.end(), d) != ex.positives.end(); };
        double lowest = std::numeric_limits<double>::infinity();
        for (std::size_t i = 0; i != ex.negatives.size(); ++i) {
          const std::uint32_t d = ex.negatives[i];
          REQUIRE_FALSE(relevant(d));
          if (i) REQUIRE(ref[d] <= ref[ex.negatives[i - 1]] + 1e-5);
          lowest = std::min(lowest, ref[d]);
        }
        for (std::uint32_t d = 0; d != docs.size(); ++d)
          if (!relevant(d) && std::find(ex.negatives.begin(), ex.negatives.end(), d) == ex.negatives.end()) REQUIRE(ref[d] <= lowest + 1e-5);
      }
      REQUIRE(got.back().negatives == got[3].negatives);
    }
}

TEST_CASE("salience training: early stopping keeps the best held-out epoch, runs repeat exactly for a seed at any thread count",
          "[property]") {
  stopword_problem pb(33, 2);
  auto examples = pb.examples;
  aligner::mine_hard_negatives(pb.queries(), pb.docs(), examples, 6, aligner::alignment::top1(), aligner::normalization::mean, 2);
  aligner::salience_training_params p{.epsilon = 0.1, .temperature = 10.0, .batch_size = 5, .epochs = 12, .learning_rate = 0.05,
                                      .holdout = 0.25, .patience = 2, .seed = 4};
  std::vector<std::size_t> seen_epochs;
  p.on_epoch = [&](const aligner::salience_training_epoch& e) { seen_epochs.push_back(e.epoch); };
  const auto a = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
  REQUIRE(a.holdout_queries == 6);
  REQUIRE(a.train_queries == 18);
  REQUIRE(seen_epochs.size() == a.epochs.size());
  REQUIRE(seen_epochs.front() == 0);
  // The kept epoch has the lowest held-out loss of the trained epochs; it stopped `patience` epochs after it, or at the end.
  REQUIRE(a.best_epoch >= 1);
  for (std::size_t e = 1; e != a.epochs.size(); ++e) REQUIRE(a.epochs[a.best_epoch].holdout_loss <= a.epochs[e].holdout_loss);
  REQUIRE((a.stopped_early ? a.epochs.size() - 1 == a.best_epoch + 2 : a.epochs.size() == 13));
  p.on_epoch = {};
  p.threads = 2;
  const auto b = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
  REQUIRE(b.best_epoch == a.best_epoch);
  for (auto* heads : {&a.heads, &b.heads}) REQUIRE(heads->query.gate().has_value());
  REQUIRE(std::equal(a.heads.doc.weights().begin(), a.heads.doc.weights().end(), b.heads.doc.weights().begin()));
  REQUIRE(std::equal(a.heads.query.weights().begin(), a.heads.query.weights().end(), b.heads.query.weights().begin()));
  REQUIRE(a.heads.doc.bias() == b.heads.doc.bias());
  for (std::size_t e = 0; e != a.epochs.size(); ++e) REQUIRE(a.epochs[e].holdout_loss == b.epochs[e].holdout_loss);
  p.seed = 5;
  const auto c = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
  REQUIRE(c.epochs[0].holdout_loss != a.epochs[0].holdout_loss);  // another held-out split
  // The tokens objective reduces its gradients in the same fixed order: 1 and 3 threads give the same heads.
  p.seed = 4, p.objective = aligner::salience_objective::tokens, p.token_temperature = 5.0, p.threads = 1;
  const auto t1 = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
  p.threads = 3;
  const auto t3 = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
  REQUIRE(t1.best_epoch == t3.best_epoch);
  REQUIRE(t1.epochs.size() == t3.epochs.size());
  for (std::size_t e = 0; e != t1.epochs.size(); ++e) REQUIRE(t1.epochs[e].holdout_loss == t3.epochs[e].holdout_loss);
  REQUIRE(std::equal(t1.heads.doc.weights().begin(), t1.heads.doc.weights().end(), t3.heads.doc.weights().begin()));
  REQUIRE(std::equal(t1.heads.query.weights().begin(), t1.heads.query.weights().end(), t3.heads.query.weights().begin()));
  REQUIRE(!std::equal(t1.heads.query.weights().begin(), t1.heads.query.weights().end(), a.heads.query.weights().begin()));
}

TEST_CASE("salience training: an ensemble is the mean of its members, each the training with its own seed", "[property]") {
  stopword_problem pb(33, 2);
  auto examples = pb.examples;
  aligner::mine_hard_negatives(pb.queries(), pb.docs(), examples, 6, aligner::alignment::top1(), aligner::normalization::mean, 2);
  aligner::salience_training_params p{.epsilon = 0.1, .temperature = 10.0, .batch_size = 5, .epochs = 6, .learning_rate = 0.05,
                                      .holdout = 0.25, .patience = 2, .seed = 4, .ensemble = 3};
  std::size_t starts = 0;
  p.on_epoch = [&](const aligner::salience_training_epoch& e) { starts += e.epoch == 0; };
  const auto bag = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
  REQUIRE(starts == 3);
  REQUIRE(bag.members.size() == 3);
  REQUIRE(bag.epochs.empty());
  REQUIRE(bag.best_epoch == 0);
  REQUIRE(bag.train_queries == 18);
  REQUIRE(bag.holdout_queries == 6);
  p.ensemble = 1, p.on_epoch = {};
  std::vector<aligner::salience_training_result> single;
  for (std::uint64_t i = 0; i != 3; ++i) {
    p.seed = 4 + i;
    single.push_back(aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train());
    REQUIRE(single.back().members.empty());
    const auto& m = bag.members[i];
    REQUIRE(m.best_epoch == single.back().best_epoch);
    REQUIRE(m.epochs.size() == single.back().epochs.size());
    REQUIRE(std::equal(m.heads.doc.weights().begin(), m.heads.doc.weights().end(), single.back().heads.doc.weights().begin()));
    REQUIRE(std::equal(m.heads.query.weights().begin(), m.heads.query.weights().end(), single.back().heads.query.weights().begin()));
    REQUIRE(m.heads.doc.bias() == single.back().heads.doc.bias());
  }
  REQUIRE(single[0].best_epochs() == std::to_string(single[0].best_epoch));
  REQUIRE(bag.best_epochs() == std::to_string(single[0].best_epoch) + "," + std::to_string(single[1].best_epoch) + "," +
                                   std::to_string(single[2].best_epoch));
  // The members differ (each its own held-out queries and batch order), and the mean is theirs in double, rounded once.
  REQUIRE(!std::equal(single[0].heads.doc.weights().begin(), single[0].heads.doc.weights().end(), single[1].heads.doc.weights().begin()));
  auto check = [&](auto side) {
    const aligner::salience_scorer& mean = side(bag.heads);
    for (std::size_t c = 0; c != pb.dim; ++c) {
      double sum = 0;
      for (const auto& r : single) sum += double(side(r.heads).weights()[c]);
      REQUIRE(mean.weights()[c] == float(sum / 3.0));
    }
    double bias = 0;
    for (const auto& r : single) bias += double(side(r.heads).bias());
    REQUIRE(mean.bias() == float(bias / 3.0));
    REQUIRE(mean.gate().has_value());
  };
  check([](const aligner::salience_heads& h) -> const aligner::salience_scorer& { return h.query; });
  check([](const aligner::salience_heads& h) -> const aligner::salience_scorer& { return h.doc; });
  REQUIRE(bag.heads.doc.gate()->alpha == p.alpha_doc);
  REQUIRE(bag.heads.query.gate()->epsilon == p.epsilon);
  // Bad sizes are refused by name.
  for (std::size_t n : {std::size_t(0), std::size_t(1001)}) {
    p.ensemble = n;
    REQUIRE_THROWS_WITH(aligner::salience_trainer(pb.queries(), pb.docs(), examples, p),
                        Catch::Contains("ensemble must be in [1, 1000], got " + std::to_string(n)));
  }
}

TEST_CASE("salience training: IDF fitted from token ids, by hand", "[golden]") {
  // One-hot token vectors (dim = vocabulary): w . e_t + b can equal any per-id target, so the fit (ridge ~0) gives
  // every token the IDF of its id. Four documents over a vocabulary of 5 ids; id 4 never occurs.
  const std::size_t vocab = 5;
  const std::vector<std::int32_t> ids = {0, 1, 0, 2, 0, 3, 1, 0};  // documents {0,1,0}, {2}, {0,3}, {1,0}
  const std::vector<std::int64_t> offsets = {0, 3, 4, 6, 8};
  std::vector<float> vectors(ids.size() * vocab, 0.f);
  for (std::size_t t = 0; t != ids.size(); ++t) vectors[t * vocab + std::size_t(ids[t])] = 1.f;
  const aligner::sequence_set_view docs{{vectors.data(), ids.size(), vocab}, offsets};
  // df: id 0 in 3 documents, id 1 in 2, ids 2 and 3 in 1, id 4 in none; N = 4.
  auto idf = [](double df) { return std::log(1.0 + (4.0 - df + 0.5) / (df + 0.5)); };
  const std::vector<double> want = {idf(3), idf(2), idf(1), idf(1), idf(0)};
  const auto table = aligner::token_idf(offsets, ids, vocab);
  for (std::size_t t = 0; t != vocab; ++t) REQUIRE_THAT(table[t], WithinAbs(want[t], 1e-6));
  double r2 = 0;
  const auto fitted = aligner::fit_idf_salience(docs, ids, vocab, 1000, 7, 1e-9, &r2);
  REQUIRE_THAT(r2, WithinAbs(1.0, 1e-6));
  const auto s = fitted(docs.tokens);
  for (std::size_t t = 0; t != ids.size(); ++t) REQUIRE_THAT(s[t], WithinAbs(want[std::size_t(ids[t])], 1e-4));
  // vocab 0: the largest id + 1 (id 4 then does not exist, which changes nothing for the tokens).
  const auto auto_vocab = aligner::fit_idf_salience(docs, ids, 0, 1000, 7, 1e-9)(docs.tokens);
  for (std::size_t t = 0; t != ids.size(); ++t) REQUIRE_THAT(auto_vocab[t], WithinAbs(s[t], 1e-4));
  // A sample of 5 of the 8 tokens: the same seed draws the same sample.
  const auto a = aligner::fit_idf_salience(docs, ids, vocab, 5, 3), b = aligner::fit_idf_salience(docs, ids, vocab, 5, 3);
  REQUIRE(std::equal(a.weights().begin(), a.weights().end(), b.weights().begin()));
  REQUIRE(a.bias() == b.bias());
  // Bad input, by name.
  REQUIRE_THROWS_WITH(aligner::fit_idf_salience(docs, std::span(ids).first(7), vocab), Catch::Contains("7 token ids for 8 tokens"));
  auto negative = ids;
  negative[5] = -2;
  REQUIRE_THROWS_WITH(aligner::fit_idf_salience(docs, negative, vocab), Catch::Contains("token id -2 is outside the vocabulary"));
  REQUIRE_THROWS_WITH(aligner::fit_idf_salience(docs, ids, 3), Catch::Contains("token id 3 is outside the vocabulary of 3"));
  REQUIRE_THROWS_WITH(aligner::fit_idf_salience(docs, ids, vocab, 0), Catch::Contains("sample must be >= 1"));
}

TEST_CASE("salience training: starts from given heads and keeps them when no epoch beats them on the held-out queries",
          "[property]") {
  stopword_problem pb(41, 2);
  auto examples = pb.examples;
  aligner::mine_hard_negatives(pb.queries(), pb.docs(), examples, 6);
  const auto wq = aligner_test::random_matrix(1, pb.dim, 80), wd = aligner_test::random_matrix(1, pb.dim, 81);
  const aligner::salience_heads start(aligner::salience_scorer(wq, 0.7f), aligner::salience_scorer(wd, 1.3f));
  aligner::salience_training_params p{.alpha_query = 1.0, .alpha_doc = 1.0, .temperature = 10.0, .batch_size = 5, .epochs = 3,
                                      .learning_rate = 0.05, .holdout = 0.25, .patience = 3, .seed = 2};
  p.start = start;
  // The flat start is the heads' (w, b), and epoch 0 reports their held-out loss.
  const aligner::salience_trainer tr(pb.queries(), pb.docs(), examples, p);
  const auto x0 = tr.initial_parameters();
  for (std::size_t c = 0; c != pb.dim; ++c) {
    REQUIRE(x0[c] == double(wq[c]));
    REQUIRE(x0[pb.dim + 1 + c] == double(wd[c]));
  }
  REQUIRE(x0[pb.dim] == 0.7f);
  REQUIRE(x0.back() == 1.3f);
  const auto r = tr.train();
  REQUIRE(std::isfinite(r.epochs[0].holdout_loss));
  for (std::size_t e = 0; e != r.epochs.size(); ++e) REQUIRE(r.epochs[r.best_epoch].holdout_loss <= r.epochs[e].holdout_loss);
  // Heads trained from the default start (w = 0, b = 1) are a good start; a step size that wrecks them: no epoch
  // beats them, and they come back unchanged (with the training's gates).
  p.start.reset();
  p.epochs = 12;
  p.alpha_doc = 0.5;
  p.epsilon = 0.1;
  const auto trained = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
  REQUIRE(trained.epochs[trained.best_epoch].holdout_loss < trained.epochs[0].holdout_loss);
  p.start = trained.heads;
  p.epochs = 3;
  p.learning_rate = 1e4;
  const auto wrecked = aligner::salience_trainer(pb.queries(), pb.docs(), examples, p).train();
  INFO("held-out loss at the start " << wrecked.epochs[0].holdout_loss << ", after epoch 1 " << wrecked.epochs[1].holdout_loss);
  REQUIRE(wrecked.best_epoch == 0);
  REQUIRE(std::equal(wrecked.heads.query.weights().begin(), wrecked.heads.query.weights().end(), trained.heads.query.weights().begin()));
  REQUIRE(std::equal(wrecked.heads.doc.weights().begin(), wrecked.heads.doc.weights().end(), trained.heads.doc.weights().begin()));
  REQUIRE(wrecked.heads.doc.bias() == trained.heads.doc.bias());
  REQUIRE(!wrecked.heads.query.gate().has_value());
  REQUIRE(wrecked.heads.doc.gate().has_value());
  // Heads of another dim are refused by name.
  p.start = aligner::salience_heads(aligner::salience_scorer(std::vector<float>(pb.dim + 1, 0.1f), 1.f),
                                    aligner::salience_scorer(std::vector<float>(pb.dim + 1, 0.1f), 1.f));
  REQUIRE_THROWS_WITH(aligner::salience_trainer(pb.queries(), pb.docs(), examples, p), Catch::Contains("start heads have dim 13"));
}

TEST_CASE("salience training: bad input is refused by name before anything runs", "[edge]") {
  stopword_problem pb(7);
  const auto q = pb.queries(), d = pb.docs();
  using aligner::invalid_argument;
  auto trainer = [&](std::vector<aligner::training_query> ex, aligner::salience_training_params p = {}) {
    return aligner::salience_trainer(q, d, std::move(ex), p);
  };
  REQUIRE_THROWS_WITH(trainer({}), Catch::Contains("at least one labelled query"));
  REQUIRE_THROWS_WITH(trainer({{999, {0}, {}}}), Catch::Contains("names query 999"));
  REQUIRE_THROWS_WITH(trainer({{0, {}, {}}}), Catch::Contains("has no relevant document"));
  REQUIRE_THROWS_WITH(trainer({{0, {5000}, {}}}), Catch::Contains("relevant document 5000"));
  REQUIRE_THROWS_WITH(trainer({{0, {1}, {2, 1}}, {1, {2}, {}}}), Catch::Contains("both relevant and negative"));
  REQUIRE_THROWS_WITH(trainer({{0, {1}, {}}}), Catch::Contains("holdout needs at least 2"));
  const std::vector<aligner::training_query> ok = {{0, {0}, {1}}, {1, {3}, {4}}};
  for (double alpha : {0.0, -0.5, 1.5, std::nan("")}) {
    REQUIRE_THROWS_AS(trainer(ok, {.alpha_query = alpha}), invalid_argument);
    REQUIRE_THROWS_WITH(trainer(ok, {.alpha_doc = alpha}), Catch::Contains("alpha_doc must be in (0, 1]"));
  }
  for (double eps : {0.0, -1.0, std::nan("")}) REQUIRE_THROWS_WITH(trainer(ok, {.epsilon = eps}), Catch::Contains("epsilon"));
  REQUIRE_THROWS_WITH(trainer(ok, {.temperature = 0.0}), Catch::Contains("temperature"));
  for (double t : {0.0, -2.0, std::nan("")})
    REQUIRE_THROWS_WITH(trainer(ok, {.objective = aligner::salience_objective::tokens, .token_temperature = t}),
                        Catch::Contains("token_temperature must be finite and > 0"));
  REQUIRE_THROWS_WITH(trainer(ok, {.alpha_query = 1.0, .alpha_doc = 1.0, .objective = aligner::salience_objective::tokens}),
                      Catch::Contains("the tokens objective trains the gates"));
  for (auto o : {aligner::salience_objective::score, aligner::salience_objective::tokens})
    REQUIRE(aligner::parse_salience_objective(aligner::to_string(o)) == o);
  REQUIRE_THROWS_WITH(aligner::parse_salience_objective("Tokens"), Catch::Contains("objective must be 'score' or 'tokens', got 'Tokens'"));
  REQUIRE_THROWS_WITH(trainer(ok, {.batch_size = 0}), Catch::Contains("batch_size"));
  REQUIRE_THROWS_WITH(trainer(ok, {.epochs = 0}), Catch::Contains("epochs"));
  REQUIRE_THROWS_WITH(trainer(ok, {.learning_rate = -1}), Catch::Contains("learning_rate"));
  REQUIRE_THROWS_WITH(trainer(ok, {.holdout = 1.0}), Catch::Contains("holdout"));
  // NaN in a vector, dims that differ.
  auto bad = pb.d_tokens;
  bad[13] = aligner_test::nan_f();
  const aligner::sequence_set_view bad_docs{{bad.data(), std::size_t(pb.d_offsets.back()), pb.dim}, pb.d_offsets};
  REQUIRE_THROWS_WITH(aligner::salience_trainer(q, bad_docs, ok), Catch::Contains("training document vectors"));
  const aligner::sequence_set_view narrow{{pb.d_tokens.data(), std::size_t(pb.d_offsets.back()), pb.dim - 1}, pb.d_offsets};
  REQUIRE_THROWS_WITH(aligner::salience_trainer(q, narrow, ok), Catch::Contains("dim"));
  // The flat parameter API checks its sizes.
  const auto tr = trainer(ok);
  std::vector<double> x(3);
  REQUIRE_THROWS_WITH(tr.loss(x), Catch::Contains("salience parameters have 3 entries"));
}

TEST_CASE("salience training: training queries from a collection's judgments", "[edge]") {
  aligner::io::collection c;
  c.docs.dim = c.queries.dim = 2;
  c.docs.vectors = {1, 0, 0, 1, 1, 1};
  c.docs.offsets = {0, 1, 3};
  c.docs.ids = {"d1", "d2"};
  c.queries.vectors = {1, 0, 0, 1};
  c.queries.offsets = {0, 1, 2};
  c.queries.ids = {"q1", "q2"};
  c.judgments = {{"q1", {{"d1", 1}, {"gone", 2}, {"d2", 0}}}, {"q2", {{"d2", 0}}}};
  std::size_t missing = 9;
  const auto ex = aligner::training_queries(c, &missing);
  REQUIRE(ex.size() == 1);  // q2 has no relevant judgment
  REQUIRE(ex[0].query == 0);
  REQUIRE(ex[0].positives == std::vector<std::uint32_t>{0});
  REQUIRE(missing == 1);
  c.judgments = {{"q1", {{"gone", 1}}}};
  REQUIRE_THROWS_WITH(aligner::training_queries(c), Catch::Contains("training query 'q1' has no relevant document in the collection"));
  c.judgments = {{"q2", {{"d1", 0}}}};
  REQUIRE_THROWS_WITH(aligner::training_queries(c), Catch::Contains("the training set is empty"));
  c.judgments.clear();
  REQUIRE_THROWS_WITH(aligner::training_queries(c), Catch::Contains("the training set is empty"));
}

TEST_CASE("salience heads file: round trip is exact, malformed files are refused naming file and line", "[io]") {
  const auto dir = std::filesystem::temp_directory_path() / "aligner_heads_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<float> wq = {0.1f, -2.5e-7f, 3.f}, wd = {1.f / 3.f, 0.f, -7.25f};
  const aligner::salience_heads heads(aligner::salience_scorer(wq, 0.7f, aligner::gate_params{.alpha = 0.5, .epsilon = 0.002}),
                                      aligner::salience_scorer(wd, -1e-3f));
  const auto file = dir / "h.txt";
  aligner::io::save_salience_heads(file, heads, "topk:2 mean split=train");
  const auto back = aligner::io::load_salience_heads(file);
  REQUIRE(back.trained_with == "topk:2 mean split=train");
  REQUIRE(std::equal(wq.begin(), wq.end(), back.heads.query.weights().begin()));
  REQUIRE(std::equal(wd.begin(), wd.end(), back.heads.doc.weights().begin()));
  REQUIRE(back.heads.query.bias() == 0.7f);
  REQUIRE(back.heads.doc.bias() == -1e-3f);
  REQUIRE(back.heads.query.gate()->alpha == 0.5);
  REQUIRE(back.heads.query.gate()->epsilon == 0.002);
  REQUIRE(!back.heads.doc.gate());
  REQUIRE(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()) == 1);  // no temporary left

  const std::string good = aligner::io::format_salience_heads(heads, "x");
  auto refused = [&](std::string text, const std::string& expect) {
    std::ofstream(dir / "bad.txt", std::ios::binary) << text;
    INFO(text);
    REQUIRE_THROWS_AS(aligner::io::load_salience_heads(dir / "bad.txt"), aligner::io_error);
    REQUIRE_THROWS_WITH(aligner::io::load_salience_heads(dir / "bad.txt"), Catch::Contains("bad.txt") && Catch::Contains(expect));
  };
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string t = good;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  refused("", "empty");
  refused("hello\n", "not an aligner salience heads file");
  refused(replaced("aligner-salience-heads 1", "aligner-salience-heads 2"), "newer");
  refused(replaced("dim 3", "dim 4"), "has 3 values, dim is 4");
  refused(replaced("query_bias 0.699999988", "query_bias nan"), "not a finite number");
  refused(replaced("doc_bias -0.00100000005", "doc_bias 1e39"), "overflows float");
  refused(replaced("doc_gate none", "doc_gate 1.5 0.1"), "alpha must be in (0, 1]");
  refused(replaced("doc_gate none", "doc_gate 0.5 0"), "epsilon must be > 0");
  refused(replaced("query_bias 0.699999988\n", ""), "key 'query_bias' is missing");
  refused(good + "query_bias 1\n", "repeated");
  refused(good + "colour blue\n", "unknown key 'colour'");
  REQUIRE_THROWS_AS(aligner::io::load_salience_heads(dir / "absent.txt"), aligner::io_error);
  // Heads of different dims are refused.
  REQUIRE_THROWS_AS(aligner::salience_heads(aligner::salience_scorer({1.f}, 0.f), aligner::salience_scorer({1.f, 2.f}, 0.f)),
                    aligner::invalid_argument);
  std::filesystem::remove_all(dir);
}
