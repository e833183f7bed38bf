"""The aligner tool on collections it has never seen. Seeded random collections are written in the layout of
../shared/data (BEIR files plus a token-id vectors folder: embeddings.npy, *_token_ids.npy, *_offsets.npy, *_ids.txt),
holding what real collections hold and the bundled ones do not: empty documents and an empty query, repeated
documents, one vector under several token ids, vectors on a coarse grid (ties in S), graded judgments with grade 0,
a judgment repeated, judgments of documents and of queries the collection does not have, unjudged queries, document
ids outside ASCII. `aligner eval`'s run is checked against the NumPy reference (reference.py: scores in float64,
SPEC sections 1, 2, 5 and 6) and the measures it prints against trec_eval's rules applied to that run."""
import json
import math
import os
import re
import subprocess

import numpy as np
import pytest

import reference as ref

pytestmark = ref.needs_cli


def make_collection(path, seed, coarse):
    """Writes a collection under path; returns its parts (embeddings in float32, token ids per sequence, ids, qrels)."""
    rng = np.random.default_rng(seed)
    vocab, dim = int(rng.integers(60, 400)), int(rng.choice([3, 17, 37, 100, 129]))
    emb = rng.standard_normal((vocab, dim)).astype(np.float32)
    for t in rng.integers(0, vocab, size=vocab // 10):  # one vector under two token ids
        emb[t] = emb[int(rng.integers(0, vocab))]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    if coarse:  # a grid of 1/8: many equal entries of S
        emb = np.round(emb * 8) / 8
        emb[np.all(emb == 0, axis=1), 0] = 1.0
    emb = emb.astype(np.float32)
    freq = 1.0 / np.arange(1, vocab + 1) ** 0.9
    freq /= freq.sum()

    def sequence(lo, hi):
        return rng.choice(vocab, size=int(rng.integers(lo, hi)), p=freq).astype(np.int32)

    n_docs, n_queries = int(rng.integers(40, 250)), int(rng.integers(12, 40))
    docs = []
    for _ in range(n_docs):
        r = rng.random()
        if r < 0.04:
            docs.append(np.zeros(0, np.int32))
        elif r < 0.1 and docs:
            docs.append(docs[int(rng.integers(0, len(docs)))].copy())
        else:
            docs.append(sequence(1, 150))
    queries = [sequence(1, 14) for _ in range(n_queries)]
    queries[1] = np.zeros(0, np.int32)  # a judged query without a token
    doc_ids = [f"d{i}" if i % 5 else f"doc\u00fc{i}" for i in range(n_docs)]
    query_ids = [f"q{i}" for i in range(n_queries)]

    g = os.path.join(path, "glove100")
    os.makedirs(g)
    os.makedirs(os.path.join(path, "qrels"))
    np.save(os.path.join(g, "embeddings.npy"), emb)
    for side, seqs in (("doc", docs), ("query", queries)):
        np.save(os.path.join(g, f"{side}_token_ids.npy"), np.concatenate(seqs).astype(np.int32))
        np.save(os.path.join(g, f"{side}_offsets.npy"), np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64))
    for name, ids in (("doc_ids.txt", doc_ids), ("query_ids.txt", query_ids)):
        with open(os.path.join(g, name), "w", encoding="utf-8") as f:
            f.write("\n".join(ids) + "\n")
    with open(os.path.join(g, "vocab.txt"), "w") as f:
        f.write("\n".join(f"w{t}" for t in range(vocab)) + "\n")
    with open(os.path.join(path, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for i, d in zip(doc_ids, docs):
            f.write(json.dumps({"_id": i, "title": "", "text": " ".join(f"w{t}" for t in d)}) + "\n")
    with open(os.path.join(path, "queries.jsonl"), "w") as f:
        for i, q in zip(query_ids, queries):
            f.write(json.dumps({"_id": i, "text": " ".join(f"w{t}" for t in q)}) + "\n")
    qrels, lines = {}, []
    for qi, qid in enumerate(query_ids):
        if qi != 1 and rng.random() < 0.2:
            continue  # unjudged
        for _ in range(int(rng.integers(1, 6))):
            doc = doc_ids[int(rng.integers(0, n_docs))]
            grade = qrels.get(qid, {}).get(doc, int(rng.integers(0 if rng.random() < 0.3 else 1, 4)))
            qrels.setdefault(qid, {})[doc] = grade
            lines.append(f"{qid}\t{doc}\t{grade}")
        if rng.random() < 0.15:
            lines.append(lines[-1])  # the same judgment twice
        if rng.random() < 0.1:
            qrels[qid]["missing-doc"] = 1
            lines.append(f"{qid}\tmissing-doc\t1")
    qrels["no-such-query"] = {doc_ids[0]: 2}
    lines.append(f"no-such-query\t{doc_ids[0]}\t2")
    with open(os.path.join(path, "qrels", "test.tsv"), "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return {"emb": emb, "docs": docs, "queries": queries, "doc_ids": doc_ids, "query_ids": query_ids, "qrels": qrels}


def run_eval(collection, strategy, *options):
    run_file = os.path.join(collection, f"{strategy.replace(':', '_')}.run")
    out = subprocess.run([ref.CLI, "eval", "--collection", collection, "--strategy", strategy, "--run", run_file, *options],
                         capture_output=True, text=True, encoding="utf-8")
    assert out.returncode == 0, out.stderr
    printed = dict(re.findall(r"(\S+)=(\S+)", out.stdout.strip().splitlines()[-1]))
    run = {}
    with open(run_file, encoding="utf-8") as f:
        for line in f:
            qid, _, doc, rank, score, _tag = line.split()
            run.setdefault(qid, []).append((doc, float(score)))
            assert int(rank) == len(run[qid])
    return printed, run


def check_measures(printed, run, qrels):
    """The printed measures are trec_eval's over the run as written (ties by document id, descending)."""
    as_dict = {q: dict(v) for q, v in run.items()}
    expected = {"ndcg@10": ref.ndcg(as_dict, qrels, 10)[0], "mrr@10": ref.measure(as_dict, qrels, "mrr", 10)[0],
                "recall@100": ref.measure(as_dict, qrels, "recall", 100)[0],
                "map": ref.measure(as_dict, qrels, "map", 10 ** 9)[0], "p@10": ref.measure(as_dict, qrels, "precision", 10)[0]}
    for name, value in expected.items():
        assert float(printed[name]) == pytest.approx(value, abs=5.1e-5), name
    assert int(printed["queries"]) == sum(1 for q in qrels if run.get(q))


def check_ranking(ranked, scores, doc_index, tol):
    """ranked: the run's (doc, score) of one query; scores: the reference's score of every candidate (doc index ->
    score). Each listed score equals the reference's, the list is in descending order (equal scores: smaller index
    first), and no candidate left out scores above the last one listed."""
    for doc, s in ranked:
        assert doc_index[doc] in scores, doc
        assert s == pytest.approx(scores[doc_index[doc]], abs=tol, rel=tol), doc
    for (a, sa), (b, sb) in zip(ranked, ranked[1:]):
        assert sa > sb or (sa == sb and doc_index[a] < doc_index[b]), (a, b)
    listed = {doc_index[d] for d, _ in ranked}
    last = ranked[-1][1] if ranked else -math.inf
    assert not [j for j, s in scores.items() if j not in listed and s > last + tol]


@pytest.mark.parametrize("seed,coarse", [(1, True), (2, False), (3, True)])
def test_eval_ranks_every_document_and_measures_as_trec_eval(tmp_path, seed, coarse):
    c = make_collection(str(tmp_path), seed, coarse)
    emb, doc_index = c["emb"], {d: j for j, d in enumerate(c["doc_ids"])}
    for strategy, normalize in (("top1", "mean"), ("topk:3", "mean"), ("topp:0.05", "mean"), ("topk:2", "none")):
        printed, run = run_eval(str(tmp_path), strategy, "--normalize", normalize)
        for qi, qid in enumerate(c["query_ids"]):
            if qid not in c["qrels"]:
                assert qid not in run
                continue
            if len(c["queries"][qi]) == 0:  # no token, no evidence: the query ranks nothing and counts as missing
                assert qid not in run
                continue
            q = emb[c["queries"][qi]]
            scores = {j: ref.score(q, emb[d], strategy, normalize) for j, d in enumerate(c["docs"])}
            assert len(run[qid]) == min(1000, len(c["docs"]))
            check_ranking(run[qid], scores, doc_index, 2e-5)
        check_measures(printed, run, c["qrels"])


def keep(u, beta):
    """SPEC section 5: the max(1, ceil(beta m)) largest, ties toward the lower index; ascending."""
    if len(u) == 0:
        return []
    k = max(1, math.ceil(beta * len(u)))
    return sorted(sorted(range(len(u)), key=lambda i: (-u[i], i))[:k])


@pytest.mark.parametrize("seed,dedup", [(4, "off"), (5, "on"), (6, "on")])
def test_eval_with_idf_pruning_and_token_search(tmp_path, seed, dedup):
    c = make_collection(str(tmp_path), seed, coarse=False)
    emb, docs, doc_index = c["emb"], c["docs"], {d: j for j, d in enumerate(c["doc_ids"])}
    # IDF over the documents, the BM25 form, rounded to float as the library keeps it
    df = np.zeros(len(emb))
    for d in docs:
        df[np.unique(d)] += 1
    n = len(docs)
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5)).astype(np.float32).astype(np.float64)
    for beta_q, beta_d, k, weights in ((0.5, 0.4, 6, "on"), (1.0, 0.2, 3, "off"), (0.3, 0.1, 20, "on")):
        printed, run = run_eval(str(tmp_path), "top1", "--candidates", str(k), "--salience", "idf", "--prune-query",
                                str(beta_q), "--prune-doc", str(beta_d), "--rerank-weights", weights, "--dedup", dedup)
        # the token index: each document's kept tokens; with dedup one entry per distinct vector, a hit expanding
        # to every document that kept it
        entries, holders = [], []
        where = {}
        for j, d in enumerate(docs):
            for i in keep(idf[d], beta_d):
                key = emb[d[i]].tobytes() if dedup == "on" else (j, i)
                if key not in where:
                    where[key] = len(entries)
                    entries.append(emb[d[i]].astype(np.float64))
                    holders.append(set())
                holders[where[key]].add(j)
        table = np.array(entries)
        for qi, qid in enumerate(c["query_ids"]):
            tokens = c["queries"][qi]
            if qid not in c["qrels"] or len(tokens) == 0:
                assert qid not in run
                continue
            q = emb[tokens]
            # candidates: the k best entries of each kept query token; entries within 1e-5 of the k-th may go
            # either way (float against float64, ties between equal vectors kept twice)
            sure, possible = set(), set()
            for i in keep(idf[tokens], beta_q):
                sims = (table * q[i].astype(np.float64)).sum(axis=1)
                kth = np.sort(sims)[::-1][min(k, len(sims)) - 1]
                for e in np.nonzero(sims > kth + 1e-5)[0]:
                    sure |= holders[e]
                for e in np.nonzero(sims >= kth - 1e-5)[0]:
                    possible |= holders[e]
            listed = {doc_index[d] for d, _ in run[qid]}
            assert sure <= listed <= possible
            uq = idf[tokens] if weights == "on" else None
            scores = {j: ref.score(q, emb[docs[j]], "top1", "mean", uq, idf[docs[j]] if weights == "on" else None)
                      for j in listed}
            check_ranking(run[qid], scores, doc_index, 2e-5)
        check_measures(printed, run, c["qrels"])
