"""Conditional kNN methods behind one API: the conditional tree, batched brute force, baselines.

Every method answers ``search(q, k, where)`` with ``(ids, distances)``: the ``k`` rows nearest
to ``q`` among those satisfying ``where`` (a predicate string or tree, a boolean mask over the
rows, or None), ranked by the canonical distance of :mod:`fw_retrieval.exact`, ties by smaller
id. All are exact except `FaissSelector` with ``kind="ivf"`` and ``nprobe < nlist``.

Baselines (Hamilton et al., "Conditional Image Retrieval", arXiv 2007.07177, Sec. 3.10):

* `MaskedBruteForce`: scores against every row, invalid rows masked out.
* `SubsetBruteForce`: scores against the valid rows only (gathered first).
* `QueryThenFilter`: an unconditional exact search for 50 rows, filtered by the condition;
  the request grows x5 until it holds ``k`` valid rows that nothing unseen could beat.
* `Reconfigured` (Matsui et al., "Reconfigurable Inverted Index", ACM MM 2018): subset brute
  force below a subset-size threshold, query-then-filter above it.
* `Dedicated`: one unconditional tree per condition, built on first use (the best case; its
  build time is what conditional pruning avoids).
* `FaissSelector`: faiss flat or IVF search that skips invalid ids with an ``IDSelector``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from fw.errors import ShapeError, check_choice
from fw_retrieval import exact
from fw_retrieval.exact import Metric
from fw_retrieval.predicate import Columns, Node, parse, to_literals
from fw_retrieval.tree import SCAN_BELOW, ConditionalTree

Where = str | Node | np.ndarray | None


class Corpus:
    """Rows ``X [n, D]`` (float32), their metadata ``columns`` and the metric."""

    def __init__(self, X: np.ndarray, columns: Columns | None = None, metric: Metric = "euclidean"):
        check_choice(metric, exact.METRICS, "metric")
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        if self.X.ndim != 2 or len(self.X) == 0:
            raise ShapeError(f"the corpus needs a non-empty [n, D] array, got {self.X.shape}")
        self.columns = columns if columns is not None else Columns({})
        if self.columns.n not in (-1, len(self.X)):
            raise ShapeError(f"{self.columns.n} metadata rows for {len(self.X)} feature rows")
        self.metric: Metric = metric
        self.n, self.dim = self.X.shape
        if self.columns.n < 0:  # no columns: conditions can only be true/false or masks
            self.columns = self.columns.take(np.arange(self.n))  # sized, the caller's untouched
        self.sq_norms = np.einsum("ij,ij->i", self.X, self.X)
        self.max_norm = float(np.sqrt(self.sq_norms.max()))
        self._masks: dict[Hashable, np.ndarray] = {}

    def node(self, where: Where) -> Node | np.ndarray | None:
        """A predicate string parsed (negation normal form); masks and None pass through."""
        if isinstance(where, str):
            return to_literals(parse(where))
        if where is None or isinstance(where, np.ndarray):
            return where
        return to_literals(where)

    def mask(self, where: Where) -> np.ndarray:
        """The rows satisfying ``where`` (cached per predicate)."""
        node = self.node(where)
        if node is None:
            return np.ones(self.n, bool)
        if isinstance(node, np.ndarray):
            if node.shape != (self.n,) or node.dtype != bool:
                raise ShapeError(f"a condition mask must be bool [{self.n}], got {node.shape}")
            return node
        if node not in self._masks:
            self._masks[node] = self.columns.mask(node)
        return self._masks[node]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """float32 rows of ``ids``."""
        return self.X[ids]

    def tolerance(self, q: np.ndarray) -> float:
        """Slack on fast scores within which candidates are re-ranked canonically."""
        return exact.fast_tolerance(self.max_norm, q, self.metric)

    def query(self, q: np.ndarray) -> np.ndarray:
        """``q`` as a float32 vector of the corpus's dimension."""
        q = np.asarray(q, dtype=np.float32).ravel()
        if q.shape != (self.dim,):
            raise ShapeError(f"query has {q.size} values, the corpus {self.dim}-d rows")
        return q


class Method:
    """One conditional kNN method over a `Corpus`."""

    name = "method"

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus

    def search(self, q: np.ndarray, k: int, where: Where = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, canonical distances) of the ``k`` nearest rows satisfying ``where``."""
        raise NotImplementedError


class MaskedBruteForce(Method):
    """Fast scores against every row; invalid rows set to +inf; exact re-rank."""

    name = "masked brute force"

    def search(self, q: np.ndarray, k: int, where: Where = None) -> tuple[np.ndarray, np.ndarray]:
        c = self.corpus
        q = c.query(q)
        mask = c.mask(where)
        fast = exact.fast_scores(c.X, q, c.metric, c.sq_norms)
        fast[~mask] = np.inf
        valid = int(mask.sum())
        if valid <= k:
            ids = np.flatnonzero(mask)
            return exact.select(ids, fast[ids], k, c.rows, q, c.metric, 0.0)
        kth = np.partition(fast, k - 1)[k - 1]
        ids = np.flatnonzero(fast <= kth + c.tolerance(q))
        return exact.select(ids, fast[ids], k, c.rows, q, c.metric, c.tolerance(q))


class SubsetBruteForce(Method):
    """Fast scores against the valid rows only (gathered), exact re-rank."""

    name = "subset brute force"

    def search(self, q: np.ndarray, k: int, where: Where = None) -> tuple[np.ndarray, np.ndarray]:
        c = self.corpus
        q = c.query(q)
        ids = np.flatnonzero(c.mask(where))
        fast = exact.fast_scores(c.X[ids], q, c.metric, c.sq_norms[ids])
        return exact.select(ids, fast, k, c.rows, q, c.metric, c.tolerance(q))


def _faiss_flat(X: np.ndarray, metric: Metric) -> Any:
    import faiss

    index = faiss.IndexFlatIP(X.shape[1]) if metric == "ip" else faiss.IndexFlatL2(X.shape[1])
    index.add(X)
    return index


def _faiss_fast(scores: np.ndarray, metric: Metric) -> np.ndarray:
    return -scores if metric == "ip" else scores


class QueryThenFilter(Method):
    """Unconditional exact search (faiss flat) for ``k0`` rows, ``growth`` times more until the
    request holds ``k`` valid rows and no unseen row could beat them."""

    name = "query-then-filter"

    def __init__(self, corpus: Corpus, k0: int = 50, growth: int = 5) -> None:
        super().__init__(corpus)
        self.k0, self.growth = k0, growth
        self.index = _faiss_flat(corpus.X, corpus.metric)
        self.requested = 0  # rows asked of the unconditional index, summed over queries

    def search(self, q: np.ndarray, k: int, where: Where = None) -> tuple[np.ndarray, np.ndarray]:
        c = self.corpus
        q = c.query(q)
        mask, tol = c.mask(where), c.tolerance(q)
        want = max(self.k0, k)
        while True:
            want = min(want, c.n)
            scores, ids = self.index.search(q[None], want)
            self.requested += want
            fast, ids = _faiss_fast(scores[0], c.metric), ids[0]
            keep = ids >= 0
            fast, ids = fast[keep], ids[keep]
            ok = mask[ids]
            if want >= c.n:
                break
            if ok.sum() >= k:
                kth = np.sort(fast[ok])[k - 1]
                if fast[-1] > kth + tol:  # every unseen row scores above the k-th valid one
                    break
            want *= self.growth
        return exact.select(ids[ok], fast[ok], k, c.rows, q, c.metric, tol)


class Reconfigured(Method):
    """Subset brute force when at most ``threshold`` rows are valid, else query-then-filter."""

    name = "reconfigured"

    def __init__(self, corpus: Corpus, threshold: int | None = None, k0: int = 50, growth: int = 5):
        super().__init__(corpus)
        self.threshold = threshold if threshold is not None else max(1, corpus.n // 100)
        self.small = SubsetBruteForce(corpus)
        self.large = QueryThenFilter(corpus, k0, growth)

    def search(self, q: np.ndarray, k: int, where: Where = None) -> tuple[np.ndarray, np.ndarray]:
        size = int(self.corpus.mask(where).sum())
        return (self.small if size <= self.threshold else self.large).search(q, k, where)


class Dedicated(Method):
    """One unconditional tree per condition (built on first use and kept; a bare mask is kept
    only under an explicit ``key``)."""

    name = "dedicated"

    def __init__(self, corpus: Corpus, leaf_size: int = 50, seed: int = 0) -> None:
        super().__init__(corpus)
        self.leaf_size, self.seed = leaf_size, seed
        self.trees: dict[Hashable, tuple[np.ndarray, ConditionalTree | None]] = {}

    def _key(self, where: Where, key: Hashable | None) -> Hashable | None:
        node = self.corpus.node(where)
        return key if key is not None or isinstance(node, np.ndarray) else node

    def build(
        self, where: Where, key: Hashable | None = None
    ) -> tuple[np.ndarray, ConditionalTree | None]:
        """Build (or reuse) the tree of one condition: (its rows' ids, the tree or None)."""
        key = self._key(where, key)
        if key is not None and key in self.trees:
            return self.trees[key]
        ids = np.flatnonzero(self.corpus.mask(where))
        tree = None
        if len(ids):
            X = self.corpus.X[ids]
            # a plain ball tree per subset, the baseline as the thesis describes it (§3.10)
            tree = ConditionalTree(X, None, self.corpus.metric, self.leaf_size, self.seed, 0)
        if key is not None:
            self.trees[key] = (ids, tree)
        return ids, tree

    def search(
        self, q: np.ndarray, k: int, where: Where = None, key: Hashable | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ids, tree = self.build(where, key)
        if tree is None:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        local, dist = tree.search(self.corpus.query(q), k)
        # local ids are increasing in the global id, so the tie-break carries over
        return ids[local], dist


class FaissSelector(Method):
    """faiss flat or IVF search restricted to valid ids by an ``IDSelectorBitmap``."""

    def __init__(
        self,
        corpus: Corpus,
        kind: str = "flat",
        nlist: int | None = None,
        nprobe: int = 8,
        seed: int = 0,
    ) -> None:
        import faiss

        super().__init__(corpus)
        check_choice(kind, ("flat", "ivf"), "kind")
        self.kind = kind
        self.name = f"faiss {kind} + IDSelector"
        X = corpus.X
        if kind == "flat":
            self.index = _faiss_flat(X, corpus.metric)
            self.nprobe = 1
        else:
            self.nlist = nlist or max(1, int(np.sqrt(corpus.n)))
            ip = corpus.metric == "ip"
            quantizer = faiss.IndexFlatIP(corpus.dim) if ip else faiss.IndexFlatL2(corpus.dim)
            mt = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
            self.index = faiss.IndexIVFFlat(quantizer, corpus.dim, self.nlist, mt)
            rng = np.random.default_rng(seed)
            sample = X[rng.choice(corpus.n, min(corpus.n, 256 * self.nlist), replace=False)]
            self.index.cp.seed = seed
            self.index.train(sample)
            self.index.add(X)
            self.nprobe = min(nprobe, self.nlist)
        self._selectors: dict[Hashable, Any] = {}

    @property
    def is_exact(self) -> bool:
        """Whether every list is probed (flat, or IVF with nprobe = nlist)."""
        return self.kind == "flat" or self.nprobe >= self.nlist

    def _params(self, mask: np.ndarray) -> Any:
        import faiss

        bits = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        if self.kind == "ivf":
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe)
        else:
            params = faiss.SearchParameters(sel=sel)
        params._keep = (bits, sel)  # the selector reads these buffers during the search
        return params

    def search(self, q: np.ndarray, k: int, where: Where = None) -> tuple[np.ndarray, np.ndarray]:
        c = self.corpus
        q = c.query(q)
        mask, tol = c.mask(where), c.tolerance(q)
        node = c.node(where)
        key = node if not isinstance(node, np.ndarray) else None
        params = self._selectors.get(key) if key is not None else None
        if params is None:
            params = self._params(mask)
            if key is not None:
                self._selectors[key] = params
        valid = int(mask.sum())
        want = min(valid, 2 * k + 8)
        while True:
            if want == 0:
                return np.empty(0, np.int64), np.empty(0, np.float32)
            scores, ids = self.index.search(q[None], want, params=params)
            fast, ids = _faiss_fast(scores[0], c.metric), ids[0]
            keep = ids >= 0
            fast, ids = fast[keep], ids[keep]
            if not self.is_exact or want >= valid or len(ids) < want:
                break
            if len(ids) >= k and fast[-1] > np.sort(fast)[k - 1] + tol:
                break
            want = min(valid, want * 4)
        return exact.select(ids, fast, k, c.rows, q, c.metric, tol if self.is_exact else 0.0)


class Tree(Method):
    """The conditional tree (Algorithm 1, with subtrees of at most ``scan_below`` valid rows
    scanned as one block; 0: as written) behind the common API; ``tree`` shares a built one
    (e.g. to compare ``scan_below`` settings on one tree)."""

    name = "conditional tree"

    def __init__(
        self,
        corpus: Corpus,
        leaf_size: int = 50,
        seed: int = 0,
        scan_below: int = SCAN_BELOW,
        tree: ConditionalTree | None = None,
    ):
        super().__init__(corpus)
        if tree is None:
            tree = ConditionalTree(corpus.X, corpus.columns, corpus.metric, leaf_size, seed)
        self.tree = tree
        self.scan_below = scan_below
        self.stats: dict[str, int] = {}

    def search(self, q: np.ndarray, k: int, where: Where = None) -> tuple[np.ndarray, np.ndarray]:
        node = self.corpus.node(where)
        return self.tree.search(self.corpus.query(q), k, node, self.stats, self.scan_below)


# ---------------------------------------------------------------------------- batched


def batched_search(
    corpus: Corpus,
    queries: np.ndarray | torch.Tensor,
    wheres: Sequence[Where],
    k: int,
    device: str | torch.device = "cpu",
    chunk_elements: int = 1 << 26,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact conditional kNN of many queries under many conditions at once.

    One score matrix ``einsum('qd,nd->qn')`` on ``device``, masked per condition to
    ``[q, c, n]`` and reduced by ``topk`` (the thesis's batched PyTorch module, ch. 3.10.1),
    then the candidates are re-ranked canonically on the CPU. Returns ``ids [q, c, k]`` (-1
    where a condition has fewer than ``k`` rows) and ``distances [q, c, k]`` (+inf there).
    """
    c = corpus
    Q = torch.as_tensor(np.asarray(queries, dtype=np.float32)).to(device)
    if Q.ndim != 2 or Q.shape[1] != c.dim:
        raise ShapeError(f"queries must be [q, {c.dim}], got {tuple(Q.shape)}")
    masks_np = np.stack([c.mask(w) for w in wheres])
    masks = torch.as_tensor(masks_np).to(device)
    X = torch.as_tensor(c.X).to(device)
    norms = torch.as_tensor(c.sq_norms).to(device)
    n_q, n_c = Q.shape[0], masks.shape[0]
    sizes = masks_np.sum(axis=1)
    extra = min(c.n, k + 16)
    out_i = np.full((n_q, n_c, k), -1, np.int64)
    out_d = np.full((n_q, n_c, k), np.inf, np.float32)
    step = max(1, chunk_elements // max(1, n_c * c.n))
    Qn = Q.cpu().numpy()
    for s in range(0, n_q, step):
        qb = Q[s : s + step]
        dots = torch.einsum("qd,nd->qn", qb, X)
        if c.metric == "ip":
            fast = -dots
        else:
            fast = norms[None] - 2 * dots + (qb * qb).sum(1, keepdim=True)
        fast = fast[:, None, :].expand(-1, n_c, -1).masked_fill(~masks[None], float("inf"))
        vals, idx = torch.topk(fast, extra, dim=2, largest=False, sorted=True)
        vals, idx = vals.cpu().numpy(), idx.cpu().numpy()
        for a in range(len(qb)):
            q = Qn[s + a]
            tol = c.tolerance(q)
            for b in range(n_c):
                take = min(extra, int(sizes[b]))
                ids, fv = idx[a, b, :take], vals[a, b, :take]
                complete = take >= sizes[b]
                if not complete and not (take > k and fv[-1] > fv[k - 1] + tol):
                    ids, dist = MaskedBruteForce(c).search(q, k, masks_np[b])  # near-ties
                else:
                    ids, dist = exact.select(ids, fv, k, c.rows, q, c.metric, tol)
                out_i[s + a, b, : len(ids)] = ids
                out_d[s + a, b, : len(ids)] = dist
    return out_i, out_d


METHODS = {
    "tree": Tree,
    "masked": MaskedBruteForce,
    "subset": SubsetBruteForce,
    "query_then_filter": QueryThenFilter,
    "reconfigured": Reconfigured,
    "dedicated": Dedicated,
    "faiss_flat": lambda corpus: FaissSelector(corpus, "flat"),
}
