"""fw_retrieval: every conditional kNN method equals masked brute force (ids, distances, ties);
the tree and its inverted index; the --where parser."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest

from fw.errors import FwError
from fw_retrieval import exact
from fw_retrieval.methods import (
    Corpus,
    Dedicated,
    FaissSelector,
    MaskedBruteForce,
    QueryThenFilter,
    Reconfigured,
    SubsetBruteForce,
    Tree,
    batched_search,
)
from fw_retrieval.predicate import (
    And,
    Cmp,
    Columns,
    Const,
    Not,
    Or,
    PredicateError,
    parse,
    to_literals,
)
from fw_retrieval.tree import ConditionalTree

MEDIA = ("photo", "paint", "ink", "print")

# ----------------------------------------------------------------------------- random data


def _rows(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    n = int(rng.choice([1, 2, 7, 60, 300, 700]))
    d = int(rng.choice([1, 2, 3, 8]))
    kind = rng.integers(3)
    if kind == 0:  # continuous
        X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10)
    elif kind == 1:  # a small integer grid: many exact distance ties
        X = rng.integers(-2, 3, (n, d))
    else:  # clusters with duplicated rows
        X = rng.standard_normal((max(1, n // 5), d))[rng.integers(max(1, n // 5), size=n)]
    n_labels = int(rng.integers(1, 12))
    p = rng.dirichlet(np.full(n_labels, 0.3))  # skewed: some labels are rare
    cols = {
        "label": rng.choice(n_labels, n, p=p),
        "medium": rng.choice(MEDIA[: int(rng.integers(1, 5))], n),
        "year": rng.integers(1900, 1904, n),
    }
    return X.astype(np.float32), cols


def _predicate(rng: np.random.Generator, depth: int = 0):
    """Random condition text and an independent row-wise Python evaluator of it."""
    r = rng.random()
    if depth >= 3 or r < 0.4:
        col = str(rng.choice(["label", "label", "medium", "year"]))
        if col == "medium":
            vals = [str(v) for v in rng.choice(list(MEDIA) + ["oil"], int(rng.integers(1, 3)))]
            lit = [f'"{v}"' for v in vals]
        else:
            base = 0 if col == "label" else 1900
            vals = [int(v) + base for v in rng.integers(0, 13 if col == "label" else 5, 3)]
            vals = vals[: int(rng.integers(1, 4))]
            lit = [str(v) for v in vals]
        op = int(rng.integers(5))
        if op == 0:
            return f"{col} == {lit[0]}", lambda row: row[col] == vals[0]
        if op == 1:
            return f"{col} != {lit[0]}", lambda row: row[col] != vals[0]
        if op == 2:
            return f"{col} in [{', '.join(lit)}]", lambda row: row[col] in vals
        if op == 3:
            return f"{col} not in [{', '.join(lit)}]", lambda row: row[col] not in vals
        value = bool(rng.integers(2))
        return ("true" if value else "false"), lambda row: value
    a_text, a = _predicate(rng, depth + 1)
    if r < 0.55:
        return f"not ({a_text})", lambda row: not a(row)
    b_text, b = _predicate(rng, depth + 1)
    if r < 0.8:
        return f"({a_text}) and ({b_text})", lambda row: a(row) and b(row)
    return f"({a_text}) or {b_text}", lambda row: a(row) or b(row)


def _reference(X: np.ndarray, q: np.ndarray, valid: list[int], k: int, metric: str):
    """Hand-written float64 loop (math.fsum), rounded to float32, sorted by (distance, id)."""
    out = []
    for i in valid:
        if metric == "euclidean":
            d = math.sqrt(
                math.fsum((float(a) - float(b)) ** 2 for a, b in zip(X[i], q, strict=True))
            )
        else:
            d = -math.fsum(float(a) * float(b) for a, b in zip(X[i], q, strict=True))
        out.append((np.float32(d), i))
    out.sort()
    return np.array([i for _, i in out[:k]], np.int64), np.array([d for d, _ in out[:k]])


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("seed", range(6))
def test_every_method_equals_masked_brute_force(seed):
    """Random data (continuous, integer grids with ties, duplicates), random AND/OR/NOT
    predicates (rare, common, empty, everything) and k: all methods give masked brute force's
    ids and distances, and masked brute force gives the float64 reference's."""
    rng = np.random.default_rng(1000 + seed)
    draws = 0
    for _ in range(6):  # corpora per seed
        X, cols = _rows(rng)
        n = len(X)
        metric = str(rng.choice(["euclidean", "ip"]))
        corpus = Corpus(X, Columns(cols), metric)  # type: ignore[arg-type]
        nlist = max(1, min(4, n // 2))
        methods = [
            Tree(
                corpus,
                leaf_size=int(rng.choice([1, 5, 50])),
                seed=int(rng.integers(99)),
                scan_below=0,
            ),
            Tree(corpus, leaf_size=8, scan_below=int(rng.integers(1, 40))),
            SubsetBruteForce(corpus),
            QueryThenFilter(corpus, k0=int(rng.integers(1, 60)), growth=int(rng.integers(2, 6))),
            Reconfigured(corpus, threshold=int(rng.integers(0, n + 1))),
            Dedicated(corpus, leaf_size=int(rng.choice([1, 7, 50]))),
            FaissSelector(corpus, "flat"),
            FaissSelector(corpus, "ivf", nlist=nlist, nprobe=nlist),
        ]
        reference = MaskedBruteForce(corpus)
        table = [{c: v[i].item() for c, v in cols.items()} for i in range(n)]
        for _ in range(10):  # queries x predicates per corpus
            text, holds = _predicate(rng)
            valid = [i for i in range(n) if holds(table[i])]
            np.testing.assert_array_equal(corpus.mask(text), np.isin(np.arange(n), valid))
            k = int(rng.choice([1, 2, 5, 17]))
            if rng.random() < 0.5:  # a query on the data (distance 0 and ties)
                q = X[rng.integers(n)].copy()
            else:
                q = (rng.standard_normal(X.shape[1]) * X.std() + 0.1).astype(np.float32)
            ids, dist = reference.search(q, k, text)
            ref_ids, ref_dist = _reference(X, q, valid, k, metric)
            np.testing.assert_array_equal(ids, ref_ids, err_msg=text)
            np.testing.assert_array_equal(dist, ref_dist.astype(np.float32), err_msg=text)
            for m in methods:
                got_ids, got_dist = m.search(q, k, text)
                np.testing.assert_array_equal(got_ids, ids, err_msg=f"{m.name}: {text}")
                np.testing.assert_array_equal(got_dist, dist, err_msg=f"{m.name}: {text}")
            draws += 1
    assert draws == 60


def test_methods_take_boolean_masks():
    """A bare row mask works everywhere, and two different masks never share a cached index."""
    rng = np.random.default_rng(9)
    X = rng.standard_normal((500, 3)).astype(np.float32)
    corpus = Corpus(X)
    masks = [rng.random(500) < 0.1, rng.random(500) < 0.02]
    methods = [Tree(corpus), Dedicated(corpus), FaissSelector(corpus), QueryThenFilter(corpus)]
    for mask in masks + masks:
        q = rng.standard_normal(3).astype(np.float32)
        ids, dist = MaskedBruteForce(corpus).search(q, 4, mask)
        assert mask[ids].all()
        for m in methods:
            got = m.search(q, 4, mask)
            np.testing.assert_array_equal(got[0], ids, err_msg=m.name)
            np.testing.assert_array_equal(got[1], dist, err_msg=m.name)


def test_batched_brute_force_many_queries_many_conditions():
    """The einsum path answers a [queries x conditions] grid exactly, -1/inf past the subset."""
    rng = np.random.default_rng(7)
    for metric in ("euclidean", "ip"):
        X = rng.integers(-2, 3, (400, 4)).astype(np.float32)  # ties everywhere
        cols = {"label": rng.integers(0, 30, 400), "medium": rng.choice(MEDIA, 400)}
        corpus = Corpus(X, Columns(cols), metric)
        wheres = [
            "label == 3",
            'not medium == "ink"',
            "label in [1, 2] or label == 99",
            None,
            "label == 99",
        ]
        Q = np.concatenate([X[:3], rng.standard_normal((4, 4)).astype(np.float32)])
        ids, dist = batched_search(corpus, Q, wheres, k=6, chunk_elements=3000)
        assert ids.shape == dist.shape == (7, 5, 6)
        ref = MaskedBruteForce(corpus)
        for a, q in enumerate(Q):
            for b, w in enumerate(wheres):
                r_ids, r_dist = ref.search(q, 6, w)
                np.testing.assert_array_equal(ids[a, b, : len(r_ids)], r_ids)
                np.testing.assert_array_equal(dist[a, b, : len(r_ids)], r_dist)
                assert (ids[a, b, len(r_ids) :] == -1).all()
                assert np.isinf(dist[a, b, len(r_ids) :]).all()


# ----------------------------------------------------------------------------- the tree


def _dominating(tree: ConditionalTree, codes: np.ndarray, value: int) -> np.ndarray:
    """Nodes above some row with ``value``: walk each such row's leaf up to the root."""
    out = np.zeros(tree.n_nodes, bool)
    for pos in range(tree.n):
        if codes[tree.perm[pos]] == value:
            node = int(tree.leaf_of[pos])
            while node >= 0:
                out[node] = True
                node = int(tree.parent[node])
    return out


def test_tree_structure_and_inverted_index():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((900, 5)).astype(np.float32)
    labels = rng.integers(0, 6, 900)
    tree = ConditionalTree(X, Columns({"label": labels}), leaf_size=50, seed=1)
    assert sorted(tree.perm.tolist()) == list(range(900))
    np.testing.assert_array_equal(tree.X, X[tree.perm])
    sizes = tree.end - tree.start
    assert sizes[tree.is_leaf].max() <= 50 and sizes[0] == 900
    for node in np.flatnonzero(~tree.is_leaf):  # children partition the parent's rows
        a, b = tree.left[node], tree.right[node]
        assert tree.start[a] == tree.start[node] and tree.end[a] == tree.start[b]
        assert tree.end[b] == tree.end[node]
    for node in range(tree.n_nodes):  # the ball holds its rows
        rows = tree.X[tree.start[node] : tree.end[node]].astype(np.float64)
        assert np.linalg.norm(rows - tree.center[node], axis=1).max() <= tree.radius[node]
    bits = np.unpackbits(tree.index["label"], axis=1)[:, : tree.n_nodes].astype(bool)
    for value in range(6):
        np.testing.assert_array_equal(bits[value], _dominating(tree, labels, value))


def test_union_is_exact_and_intersection_a_superset():
    """OR through the index gives exactly the nodes holding a valid row; AND may keep nodes
    holding an a-row and a different b-row only, which the leaf filter then rejects."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((2000, 3)).astype(np.float32)
    cols = {"label": rng.integers(0, 10, 2000), "medium": rng.choice(MEDIA, 2000)}
    tree = ConditionalTree(X, Columns(cols), leaf_size=50)
    union = tree.compile(parse("label == 1 or label == 2"))
    assert union.nodes.sum() == union.exact_nodes
    inter = tree.compile(parse('label == 1 and medium == "ink"'))
    assert inter.nodes.sum() > inter.exact_nodes  # a strict superset here
    negated = tree.compile(parse('not medium == "ink"'))  # complement via the other values
    assert negated.nodes.sum() == negated.exact_nodes
    corpus = Corpus(X, Columns(cols))
    q = rng.standard_normal(3).astype(np.float32)
    ids, _ = tree.search(q, 5, parse('label == 1 and medium == "ink"'))
    assert all(cols["label"][i] == 1 and cols["medium"][i] == "ink" for i in ids)
    np.testing.assert_array_equal(
        ids, MaskedBruteForce(corpus).search(q, 5, 'label == 1 and medium == "ink"')[0]
    )


def test_sparse_index_of_many_valued_columns_equals_the_bit_arrays(monkeypatch):
    """Columns with many values keep (value, node) pairs instead of one bit array per value;
    both compile every condition to the same nodes."""
    import fw_retrieval.tree as tree_module

    rng = np.random.default_rng(8)
    X = rng.standard_normal((1500, 4)).astype(np.float32)
    cols = Columns({"label": rng.integers(0, 300, 1500), "medium": rng.choice(MEDIA, 1500)})
    dense = ConditionalTree(X, cols, leaf_size=20, seed=3)
    monkeypatch.setattr(tree_module, "_DENSE_INDEX_BITS", 0)
    sparse = ConditionalTree(X, cols, leaf_size=20, seed=3)
    assert isinstance(dense.index["label"], np.ndarray)
    assert isinstance(sparse.index["label"], tuple)
    for text in ("label in [1, 2, 250]", 'not label == 5 and medium != "ink"', "label == 999"):
        a, b = dense.compile(parse(text)), sparse.compile(parse(text))
        np.testing.assert_array_equal(a.nodes, b.nodes, err_msg=text)
        assert a.nodes.sum() >= a.exact_nodes


def test_rare_conditions_prune_most_nodes():
    """A condition on one cluster of rows leaves few nodes, and the search enters no others."""
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((50, 8)) * 10
    which = rng.integers(0, 50, 5000)
    X = (centers[which] + rng.standard_normal((5000, 8))).astype(np.float32)
    tree = ConditionalTree(X, Columns({"label": which}), leaf_size=50)
    pruned, pruned_exact = tree.pruned_fraction(parse("label == 7"))
    assert pruned == pruned_exact > 0.8
    stats: dict[str, int] = {}
    tree.search(X[0], 5, parse("label == 7"), stats)
    assert stats["visited"] <= round(tree.n_nodes * (1 - pruned))  # only compiled nodes


# ----------------------------------------------------------------------------- the parser


def test_parser_precedence_and_forms():
    assert parse("label == 3") == Cmp("label", (3,))
    assert parse("label != 'a'") == Cmp("label", ("a",), True)
    assert parse('medium in ["a", "b",]') == Cmp("medium", ("a", "b"))
    assert parse("label not in []") == Cmp("label", (), True)
    # not > and > or
    assert parse("not a == 1 and b == 2 or c == 3") == Or(
        And(Not(Cmp("a", (1,))), Cmp("b", (2,))), Cmp("c", (3,))
    )
    assert parse("a == 1 and (b == 2 or c == -3)") == And(
        Cmp("a", (1,)), Or(Cmp("b", (2,)), Cmp("c", (-3,)))
    )
    assert parse("not not true") == Const(True)
    assert parse(r"m == 'it\'s'") == Cmp("m", ("it's",))
    assert to_literals(parse("not (a == 1 or b != 2)")) == And(Cmp("a", (1,), True), Cmp("b", (2,)))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("__import__('os').system('ls')", "unexpected"),
        ("label == 3; import os", "unexpected ';"),
        ("label == (lambda: 1)()", "unexpected ': 1)()'"),
        ("label == label", "expected an integer or a quoted string"),
        ("label.__class__ == 1", "unexpected '.__class__"),
        ('exec("x = 1")', "expected '==', '!=', 'in' or 'not in'"),
        ("label == 3 or", "got the end"),
        ("(label == 3", "expected ')'"),
        ("label == 3)", "expected 'and', 'or' or the end"),
        ("label = 3", "unexpected '= 3'"),
        ("label in 3", "expected '[' opening a list"),
        ("label == 3.5", "unexpected"),
        ("label == 1 and and label == 2", "expected a column name"),
        ("", "empty"),
        ("(" * 500 + "label == 1" + ")" * 500, "nested deeper"),
    ],
)
def test_parser_rejects_bad_input_and_code(text, says, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the predicate language must never call eval/exec")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    with pytest.raises(PredicateError, match=None) as err:
        parse(text)
    assert isinstance(err.value, FwError)
    assert says in str(err.value)


def test_columns_reject_unknown_columns_and_types():
    cols = Columns({"label": np.array([1, 2, 2]), "medium": np.array(["a", "b", "a"])})
    with pytest.raises(PredicateError, match="column 'culture'.*columns: label, medium"):
        cols.mask(parse("culture == 'x'"))
    with pytest.raises(PredicateError, match="values are integers"):
        cols.mask(parse("label == 'one'"))
    with pytest.raises(PredicateError, match="values are quoted strings"):
        cols.mask(parse("medium in [1]"))
    np.testing.assert_array_equal(cols.mask(parse("label == 7")), [False] * 3)  # absent value
    with pytest.raises(PredicateError, match="float64 values"):
        Columns({"x": np.array([0.5, 1.0])})
    with pytest.raises(PredicateError, match="cannot be used"):
        Columns({"not": np.array([1])})


def test_a_corpus_without_columns_refuses_column_conditions():
    X = np.random.default_rng(0).standard_normal((30, 2)).astype(np.float32)
    for method in (MaskedBruteForce(Corpus(X)), Tree(Corpus(X))):
        with pytest.raises(PredicateError, match="column 'label'.*columns: none"):
            method.search(X[0], 3, "label == 1")
        assert len(method.search(X[0], 3, "true")[0]) == 3
        assert len(method.search(X[0], 3, "false")[0]) == 0


def test_exact_tie_break_is_distance_then_id():
    ids, dist = exact.order(np.array([1.0, 0.5, 1.0, 0.5], np.float32), np.array([9, 4, 2, 7]), 3)
    np.testing.assert_array_equal(ids, [4, 7, 2])
    np.testing.assert_array_equal(dist, [0.5, 0.5, 1.0])


def test_one_empty_columns_object_serves_corpora_and_trees_of_any_size():
    empty = Columns({})
    rng = np.random.default_rng(0)
    for n in (30, 50):
        X = rng.normal(size=(n, 4)).astype(np.float32)
        assert Corpus(X, empty).columns.n == n
        assert ConditionalTree(X, leaf_size=8, columns=empty).columns.n == n
    assert empty.n == -1  # the caller's object is left as it was
