"""The conditional ball tree of MosAIC: Algorithm 1 with a label -> dominating-nodes index.

Hamilton, Fu, Freeman, Lu, "Conditional Image Retrieval" (arXiv 2007.07177), Sec. 3 and
Algorithm 1; Hamilton, PhD thesis (MIT 2024), ch. 3, Alg. 1 and Eq. 3.1.

* Build: a ball tree whose split takes a random point of the node, the point farthest from it
  (pivot 1) and the point farthest from pivot 1 (pivot 2), and sends every point to the nearer
  pivot; leaves hold at most ``leaf_size`` (50) points. Each node keeps its centroid and radius.
* Inverted index: for every column value ``v`` the bit array of nodes that dominate (contain) a
  row with that value, i.e. its leaves and all their ancestors.
* A condition in negation normal form compiles to node bits: a comparison is the union of the
  bit arrays of the values it accepts (a negated one: of all the other values, which is exact
  because every row has one value), OR is a union (exact), AND an intersection, which is only a
  *superset* of the nodes holding rows that satisfy both sides; the rows of every leaf reached
  are therefore always filtered by the real predicate.
* Search (k nearest valid rows): depth first from the root, only into nodes of the compiled set
  whose lower bound can still beat the current k-th best *valid* distance, the child with the
  better bound first. Bounds: Euclidean ``max(0, |q - c| - r)``; inner product, for the distance
  ``-x.q``, ``-(q.c + r |q|)`` (the ball's largest inner product, as in SynapseML's
  ``ConditionalBallTree``). A kept node whose subtree holds at most ``scan_below`` valid rows
  is scanned as one block instead of descended (the thesis's remark, §3.10, that pruning
  combines with a switch to brute force); ``scan_below=0`` is Algorithm 1 as written.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

from fw.errors import ShapeError, check_choice
from fw_retrieval import exact
from fw_retrieval.exact import Metric
from fw_retrieval.predicate import And, Cmp, Columns, Const, Node, Or

_DENSE_INDEX_BITS = 1 << 28  # columns with at most this many (values x nodes) get dense bits
_CHUNK = 1 << 15
_PRUNED = float("nan")  # the bound of a pruned node: compares <= to nothing
#: default ``scan_below``: at 0.1 % selectivity it made the search 62x (clustered condition) and
#: 59x (random) faster than masked brute force at 1,000,000 x 128, 70x on Fashion-MNIST image
#: features, where Algorithm 1 alone gave 13.5x, 4.2x and 14.9x; it was slower than Algorithm 1
#: only at 50 % selectivity, by 2-10 % (docs/retrieval.md, "Benchmark")
SCAN_BELOW = 256


@dataclass
class Compiled:
    """A condition prepared for one tree: node set, row mask (tree order) and counts."""

    nodes: np.ndarray  # bool [n_nodes]: nodes the search may enter
    mask: np.ndarray  # bool [n], tree order: the rows that satisfy the condition
    size: int
    exact_nodes: int  # nodes that really hold a valid row (for the pruning report)
    _lists: tuple[np.ndarray, list[int]] | None = field(default=None, repr=False)
    # scan_below -> node -> its children in the pruned tree (filled as searches expand nodes)
    _kids: dict[int, dict[int, tuple[int, ...]]] = field(default_factory=dict, repr=False)


class ConditionalTree:
    """Exact conditional kNN over ``X [n, D]`` (float32) with rows described by ``columns``.

    ``metric``: ``"euclidean"`` or ``"ip"`` (maximum inner product; for cosine similarity pass
    L2-normalised rows and queries with either metric). ``scan_below``: a node whose subtree
    holds at most this many valid rows is scanned as one block instead of descended (0 keeps the
    plain Algorithm 1; either way the result is exact; default `SCAN_BELOW`).
    """

    def __init__(
        self,
        X: np.ndarray,
        columns: Columns | None = None,
        metric: Metric = "euclidean",
        leaf_size: int = 50,
        seed: int = 0,
        scan_below: int = SCAN_BELOW,
    ) -> None:
        check_choice(metric, exact.METRICS, "metric")
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or len(X) == 0:
            raise ShapeError(f"the index needs a non-empty [n, D] array, got shape {X.shape}")
        if leaf_size < 1:
            raise ValueError(f"leaf_size must be >= 1, got {leaf_size}")
        if columns is not None and columns.n not in (-1, len(X)):
            raise ShapeError(f"{columns.n} metadata rows for {len(X)} feature rows")
        self.metric: Metric = metric
        self.leaf_size = leaf_size
        self.scan_below = scan_below
        self.columns = columns if columns is not None else Columns({})
        self.n, self.dim = X.shape
        if self.columns.n < 0:  # no columns: conditions can only be true/false or masks
            self.columns = self.columns.take(np.arange(self.n))  # sized, the caller's untouched
        self._build(X, np.random.default_rng(seed))
        self.max_norm = float(np.sqrt(self.sq_norms.max()))
        self._index_columns()
        self._cache: dict[Hashable, Compiled] = {}

    # ------------------------------------------------------------------ build

    def _build(self, X: np.ndarray, rng: np.random.Generator) -> None:
        n = len(X)
        perm = np.arange(n)
        Xw = X.copy()
        norms = np.einsum("ij,ij->i", Xw, Xw)
        start, end, left, right, parent, depth = [0], [n], [-1], [-1], [-1], [0]
        centers: list[np.ndarray] = []
        radii: list[float] = []
        todo = [0]
        while todo:
            node = todo.pop()
            s, e = start[node], end[node]
            pts = Xw[s:e]
            center = pts.mean(axis=0, dtype=np.float64)
            radius = self._radius(pts, center)
            while len(centers) <= node:
                centers.append(center)
                radii.append(0.0)
            centers[node], radii[node] = center, radius
            if e - s <= self.leaf_size or radius == 0.0:
                continue
            nrm = norms[s:e]
            r = int(rng.integers(e - s))
            d_r = nrm - 2.0 * (pts @ pts[r]) + nrm[r]
            p1 = int(np.argmax(d_r))
            d_1 = nrm - 2.0 * (pts @ pts[p1]) + nrm[p1]
            p2 = int(np.argmax(d_1))
            d_2 = nrm - 2.0 * (pts @ pts[p2]) + nrm[p2]
            side = d_2 < d_1  # ties go to pivot 1
            n_right = int(side.sum())
            if n_right == 0 or n_right == e - s:
                continue  # numerically identical points: keep them in one leaf
            o = np.argsort(side, kind="stable")
            Xw[s:e] = pts[o]
            norms[s:e] = nrm[o]
            perm[s:e] = perm[s:e][o]
            mid = e - n_right
            for a, b, attach in ((s, mid, left), (mid, e, right)):
                child = len(start)
                start.append(a)
                end.append(b)
                left.append(-1)
                right.append(-1)
                parent.append(node)
                depth.append(depth[node] + 1)
                attach[node] = child
                todo.append(child)
        self.X = Xw  # rows in tree order: every node's rows are contiguous
        self.perm = perm  # tree position -> original row id
        self.sq_norms = norms
        self.start, self.end = np.asarray(start), np.asarray(end)
        self.left, self.right = np.asarray(left), np.asarray(right)
        self.parent, self.depth = np.asarray(parent), np.asarray(depth)
        self.center = np.stack(centers)
        self.center_norm = np.linalg.norm(self.center, axis=1)
        self.radius = np.asarray(radii)
        self.is_leaf = self.left < 0
        self.n_nodes = len(start)
        leaf_of = np.empty(n, np.int64)
        for node in np.flatnonzero(self.is_leaf):
            leaf_of[self.start[node] : self.end[node]] = node
        self.leaf_of = leaf_of
        # plain lists: the traversal reads single entries, which lists serve far faster
        self._l, self._r = self.left.tolist(), self.right.tolist()
        self._s, self._e = self.start.tolist(), self.end.tolist()

    @staticmethod
    def _radius(pts: np.ndarray, center: np.ndarray) -> float:
        """The largest distance from ``center`` to a row, inflated past float rounding."""
        c32 = center.astype(np.float32)
        best = 0.0
        for i in range(0, len(pts), _CHUNK):
            diff = pts[i : i + _CHUNK] - c32
            best = max(best, float(np.einsum("ij,ij->i", diff, diff).max()))
        if best == 0.0:
            spread = float(np.abs(pts - c32).max()) if len(pts) else 0.0
            if spread == 0.0:
                return 0.0
        return float(np.sqrt(best)) * (1 + 1e-5) + 1e-6 * (float(np.linalg.norm(center)) + 1e-30)

    def _index_columns(self) -> None:
        """Column value -> its dominating nodes (the leaves holding it and their ancestors):
        a packed bit array per value, or, for a column with many values, the (value, node)
        pairs (sparse), which compile to the same bit arrays."""
        self.index: dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]] = {}
        m = self.n_nodes
        for name, codes in self.columns.codes.items():
            n_values = len(self.columns.values[name])
            pairs = np.unique(codes[self.perm] * m + self.leaf_of)
            found = [pairs]
            while len(pairs):
                value, node = np.divmod(pairs, m)
                up = self.parent[node]
                pairs = np.unique(value[up >= 0] * m + up[up >= 0])
                found.append(pairs)
            value, node = np.divmod(np.unique(np.concatenate(found)), m)
            if n_values * m <= _DENSE_INDEX_BITS:
                bits = np.zeros((n_values, m), dtype=bool)
                bits[value, node] = True
                self.index[name] = np.packbits(bits, axis=1)
            else:
                self.index[name] = (value, node)

    # ------------------------------------------------------------------ conditions

    def _node_bits(self, node: Node) -> np.ndarray:
        """Packed node bits of a condition in negation normal form (a superset for AND)."""
        width = (self.n_nodes + 7) // 8
        if isinstance(node, Const):
            return np.full(width, 255 if node.value else 0, np.uint8)
        if isinstance(node, And):
            return self._node_bits(node.left) & self._node_bits(node.right)
        if isinstance(node, Or):
            return self._node_bits(node.left) | self._node_bits(node.right)
        assert isinstance(node, Cmp)
        codes = self.columns.value_codes(node)
        table = self.index[node.column]
        wanted = np.zeros(len(self.columns.values[node.column]), bool)
        wanted[codes] = True
        if node.negated:  # exact: every row holds exactly one of the column's values
            wanted = ~wanted
        if not wanted.any():
            return np.zeros(width, np.uint8)
        if isinstance(table, np.ndarray):
            return np.bitwise_or.reduce(table[wanted], axis=0)
        value, nodes = table
        out = np.zeros(self.n_nodes, bool)
        out[nodes[wanted[value]]] = True
        return np.packbits(out)

    def compile(self, where: Node | np.ndarray | None, key: Hashable | None = None) -> Compiled:
        """Prepare a condition (a parsed predicate, a boolean mask over original rows, or None
        for every row); predicates are cached by their syntax tree, masks by ``key`` if given."""
        from fw_retrieval.predicate import to_literals

        if where is None:
            where = Const(True)
        if isinstance(where, np.ndarray):
            cache_key = ("mask", key) if key is not None else None
        else:
            where = to_literals(where)
            cache_key = ("node", where)
        if cache_key is not None and cache_key in self._cache:
            return self._cache[cache_key]
        if isinstance(where, np.ndarray):
            if where.shape != (self.n,) or where.dtype != bool:
                raise ShapeError(f"a condition mask must be bool [{self.n}], got {where.shape}")
            mask = where[self.perm]
        else:
            mask = self.columns.take(self.perm).mask(where)
        counts = self.counts(mask)
        exact_nodes = counts > 0
        if isinstance(where, np.ndarray):
            nodes = exact_nodes  # no predicate to push down: the exact node set
        else:
            nodes = np.unpackbits(self._node_bits(where))[: self.n_nodes].astype(bool)
            if not np.all(nodes[exact_nodes]):  # pruning must never drop a valid node
                raise AssertionError("inverted index dropped a node that holds a valid row")
        out = Compiled(nodes, mask, int(mask.sum()), int(exact_nodes.sum()))
        out._lists = (np.flatnonzero(nodes), counts.tolist())
        if cache_key is not None:
            self._cache[cache_key] = out
        return out

    def counts(self, mask_tree_order: np.ndarray) -> np.ndarray:
        """Valid rows below every node."""
        cs = np.concatenate([[0], np.cumsum(mask_tree_order, dtype=np.int64)])
        return cs[self.end] - cs[self.start]

    # ------------------------------------------------------------------ search

    def search(
        self,
        q: np.ndarray,
        k: int,
        where: Node | np.ndarray | None = None,
        stats: dict | None = None,
        scan_below: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest valid rows of ``q``: (original ids, canonical distances), sorted
        by distance then id; fewer when fewer rows satisfy the condition. ``scan_below``
        overrides the tree's setting for this query."""
        cond = where if isinstance(where, Compiled) else self.compile(where)
        q = np.asarray(q, dtype=np.float32).ravel()
        if q.shape != (self.dim,):
            raise ShapeError(f"query has {q.size} values, the index {self.dim}-d rows")
        scan = self.scan_below if scan_below is None else scan_below
        return self._search(q, k, cond, stats, scan)

    def _bound(self, q: np.ndarray, qn: float, nodes: list[int]) -> np.ndarray:
        dots = self.center[nodes] @ q.astype(np.float64)
        r = self.radius[nodes]
        if self.metric == "ip":
            return -dots - r * qn - 1e-9 * qn * (self.center_norm[nodes] + r)
        cn = self.center_norm[nodes]
        d = np.sqrt(np.maximum(qn * qn - 2 * dots + cn * cn, 0.0))
        return d - r - 1e-7 * (qn + cn)

    def _search(
        self, q: np.ndarray, k: int, cond: Compiled, stats: dict | None, scan_below: int
    ) -> tuple[np.ndarray, np.ndarray]:
        best_i = np.empty(0, np.int64)  # original row ids
        best_d = np.empty(0, np.float32)
        if k <= 0 or cond.size == 0:
            return best_i, best_d
        if cond._lists is None:
            cond._lists = (np.flatnonzero(cond.nodes), self.counts(cond.mask).tolist())
        valid_idx, counts = cond._lists
        qn = float(np.linalg.norm(q.astype(np.float64)))
        valid = cond.nodes
        kid_cache = cond._kids.setdefault(scan_below, {})
        lazy = scan_below > 0  # few nodes will be entered: bound only the children of those
        if lazy:
            bounds = {0: float(self._bound(q, qn, np.array([0]))[0])}
        else:  # plain Alg. 1 enters many kept nodes: bound them all in one product
            bounds = dict(
                zip(valid_idx.tolist(), self._bound(q, qn, valid_idx).tolist(), strict=True)
            )
        L, S, E = self._l, self._s, self._e
        mask, X, metric, perm = cond.mask, self.X, self.metric, self.perm
        sq_norms, tol = self.sq_norms, exact.fast_tolerance(self.max_norm, q, metric)
        ip, qq = metric == "ip", float(np.dot(q, q))
        kth = kth_fast = np.inf
        visited = 0
        stack: list[tuple[int, float]] = [(0, bounds.get(0, _PRUNED))]
        while stack:
            node, bound = stack.pop()
            if bound > kth:
                continue
            visited += 1
            left = L[node]
            if left < 0 or (scan_below and counts[node] <= scan_below):
                pos = mask[S[node] : E[node]].nonzero()[0]
                if len(pos) == 0:
                    continue
                pos += S[node]
                rows = X[pos]
                if kth_fast < np.inf:  # cheap float32 screen before the canonical distance
                    dots = rows @ q
                    fast = -dots if ip else sq_norms[pos] - 2.0 * dots + qq
                    keep = fast <= kth_fast
                    if not keep.any():
                        continue
                    pos, rows = pos[keep], rows[keep]
                d = exact.canonical(rows, q, metric)
                best_i, best_d = _merge(best_i, best_d, perm[pos], d, k)
                if len(best_d) == k:
                    last = float(best_d[-1])
                    kth = last + 1e-6 * abs(last) + 1e-30
                    kth_fast = (last * last if metric == "euclidean" else last) + tol
                continue
            kids = kid_cache.get(node)
            if kids is None:
                kids = kid_cache[node] = self._kept_children(node, valid, counts, scan_below)
            if not kids:
                continue
            if lazy and kids[0] not in bounds:
                b = self._bound(q, qn, np.array(kids)).tolist()
                bounds.update(zip(kids, b, strict=True))
            if len(kids) == 1:
                if bounds[kids[0]] <= kth:
                    stack.append((kids[0], bounds[kids[0]]))
                continue
            first, second = kids
            b_first, b_second = bounds[first], bounds[second]
            if b_first < b_second:  # push the worse child first: the better one is popped first
                first, second, b_first, b_second = second, first, b_second, b_first
            if b_first <= kth:
                stack.append((first, b_first))
            if b_second <= kth:
                stack.append((second, b_second))
        if stats is not None:
            stats["visited"] = stats.get("visited", 0) + visited
        return best_i, best_d

    def _kept_children(
        self, node: int, valid: np.ndarray, counts: list[int], scan_below: int
    ) -> tuple[int, ...]:
        """The children of ``node`` in the pruned tree: each kept child, moved down past nodes
        with a single kept child (their bounds are implied by the deeper node's own); a node
        whose children are both pruned holds no valid row (AND's superset) and is dropped."""
        L, R = self._l, self._r
        out = []
        for c in (L[node], R[node]):
            if not valid[c]:
                continue
            while L[c] >= 0 and not (scan_below and counts[c] <= scan_below):
                a, b = valid[L[c]], valid[R[c]]
                if a and b:
                    break
                if not (a or b):
                    c = -1
                    break
                c = L[c] if a else R[c]
            if c >= 0:
                out.append(c)
        return tuple(out)

    def pruned_fraction(self, where: Node | np.ndarray | None) -> tuple[float, float]:
        """Fraction of nodes the condition prunes: (compiled set, exact set of valid nodes)."""
        cond = self.compile(where)
        return 1 - cond.nodes.mean(), 1 - cond.exact_nodes / self.n_nodes


def _merge(
    best_i: np.ndarray, best_d: np.ndarray, pos: np.ndarray, d: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge candidates (original ids, distances) into the running best list of ``k``."""
    all_d = np.concatenate([best_d, d])
    all_i = np.concatenate([best_i, pos])
    o = np.lexsort((all_i, all_d))[:k]
    return all_i[o], all_d[o]
