"""Image-retrieval metrics with the published protocols.

* :func:`average_precision`: AP of one ranked list, as the Oxford/Paris ``compute_ap`` (used unchanged
  by cirtorch and revisitop): junk images are removed from the ranking first, then the area under the
  precision-recall curve is accumulated as *trapezoids*, one per positive::

      AP = 1/P * sum_j (p0_j + p1_j) / 2,   p0_j = j / r_j (1 when r_j = 0),   p1_j = (j + 1) / (r_j + 1)

  where ``r_j`` is the 0-based rank of the ``j``-th positive (0-based ``j``) and ``P`` the number of
  positives. ``trapezoid=False`` gives the plain (non-interpolated) AP, the mean of ``p1_j``.
* :func:`oxford_map`: Oxford5k / Paris6k (``good`` + ``ok`` positive, ``junk`` ignored).
* :func:`revisited_map`: ROxford5k / RParis6k, Easy / Medium / Hard mAP and mP@k as revisitop's
  ``compute_map``: Easy = ``easy`` positive, ``junk`` + ``hard`` ignored; Medium = ``easy`` + ``hard``
  positive, ``junk`` ignored; Hard = ``hard`` positive, ``junk`` + ``easy`` ignored. P@k is taken at
  ``min(k, rank of the last positive)`` (revisitop's definition) after junk removal. A query without a
  positive has AP ``nan`` and is left out of the means.
* :func:`recall_at_n`: Recall@N for place recognition (Pittsburgh / Tokyo 24/7): a query is correct at
  N when one of its first N results lies within ``threshold_m`` of it; with ``db_groups`` the ranking
  is first reduced to distinct panoramas (the first-ranked image of each group stands for it).
* :func:`label_map`: mAP where every other image with the query's label is positive;
  :func:`evaluate_ranked_with_labels` the same (plus Recall@N) for ranked names per query.

Readers: :func:`read_revisited_gnd` (``gnd_roxford5k.pkl``, with a restricted unpickler),
:func:`read_netvlad_dbstruct` (NetVLAD ``.mat`` ``dbStruct``), :func:`read_labels_csv`.

Shapes: ``ranks`` is ``(Q, K)`` database indices, best first, one row per query (revisitop stores the
transpose, ``(N, Q)``). Metrics are shares in ``[0, 1]``; tables show percent.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import pickle
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.atomic import write_json

logger = logging.getLogger(__name__)

DEFAULT_KAPPAS: tuple[int, ...] = (1, 5, 10)
DEFAULT_NS: tuple[int, ...] = (1, 5, 10, 20)


# ----------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class RetrievalResults:
    """Result of a retrieval evaluation.

    Attributes:
        protocols: ``{protocol: {metric: share in [0, 1]}}``, e.g. ``{"easy": {"mAP": .., "mP@1": ..}}``
            or ``{"recall": {"R@1": ..}}``; ``nan`` when no query could be scored.
        per_query: ``{protocol: (Q,) array}``: AP of each query (``nan`` = no positive), or for
            Recall@N the 1-based position of the first correct result (``nan`` = none in the ranking).
        num_queries: rows of ``ranks``.
        config: how the evaluation was run.
    """

    protocols: dict[str, dict[str, float]]
    per_query: dict[str, np.ndarray]
    num_queries: int
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable dict; ``nan`` becomes ``None``."""
        return {
            "protocols": {
                p: {k: _finite_or_none(v) for k, v in m.items()} for p, m in self.protocols.items()
            },
            "per_query": {p: [_finite_or_none(v) for v in arr] for p, arr in self.per_query.items()},
            "num_queries": self.num_queries,
            "config": dict(self.config),
        }

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_json` atomically to ``path``; returns the path."""
        path = Path(path)
        write_json(path, self.to_json())
        logger.info("wrote retrieval results to %s", path)
        return path

    def format_table(self) -> str:
        """A printable table: one row per protocol, one column per metric, values in percent."""
        keys: list[str] = []
        for metrics in self.protocols.values():
            keys.extend(k for k in metrics if k not in keys)
        header = ["protocol", *keys]
        rows = [
            [name, *(_percent(metrics.get(k, math.nan)) for k in keys)]
            for name, metrics in self.protocols.items()
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            return " | ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

        rule = "-+-".join("-" * w for w in widths)
        return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _percent(x: float) -> str:
    return f"{100 * x:.2f}" if math.isfinite(x) else "-"


# ----------------------------------------------------------------------------------------------------
# average precision and mAP


def average_precision(
    ranked_positive: np.ndarray | Sequence[bool],
    num_positives: int,
    ranked_junk: np.ndarray | Sequence[bool] | None = None,
    trapezoid: bool = True,
) -> float:
    """AP of one ranked list (Oxford/Paris ``compute_ap``; see the module docstring).

    Args:
        ranked_positive: ``(K,)`` bool, whether the result at each rank is a positive.
        num_positives: positives in the whole database (``>= 1``); positives missing from the
            ranking count as never retrieved.
        ranked_junk: ``(K,)`` bool, results removed from the ranking before scoring (a result flagged
            both positive and junk counts as positive).
        trapezoid: ``True`` for the Oxford trapezoid rule, ``False`` for plain AP.

    Returns:
        AP in ``[0, 1]``.

    Raises:
        ValueError: ``num_positives < 1``, fewer than the positives ranked, or mismatched shapes.
    """
    pos = np.asarray(ranked_positive, dtype=bool).ravel()
    if ranked_junk is not None:
        junk = np.asarray(ranked_junk, dtype=bool).ravel()
        if junk.shape != pos.shape:
            raise ValueError(f"ranked_junk has shape {junk.shape}, ranked_positive {pos.shape}")
        pos = pos[pos | ~junk]
    ranks = np.flatnonzero(pos).astype(np.float64)  # 0-based ranks of the positives, junk removed
    if num_positives < 1:
        raise ValueError(f"num_positives must be >= 1, got {num_positives}")
    if len(ranks) > num_positives:
        raise ValueError(f"{len(ranks)} positives ranked but num_positives is {num_positives}")
    j = np.arange(len(ranks), dtype=np.float64)
    p1 = (j + 1) / (ranks + 1)
    if not trapezoid:
        return float(p1.sum() / num_positives)
    p0 = np.where(ranks == 0, 1.0, j / np.maximum(ranks, 1))
    return float(((p0 + p1) / 2).sum() / num_positives)


def _check_ranks(ranks: np.ndarray | Sequence[Sequence[int]], num_queries: int | None = None) -> np.ndarray:
    arr = np.asarray(ranks)
    if arr.ndim != 2:
        raise ValueError(f"ranks must be (Q, K) database indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ranks must hold integer database indices, got dtype {arr.dtype}")
    if num_queries is not None and arr.shape[0] != num_queries:
        raise ValueError(f"ranks has {arr.shape[0]} rows but the ground truth {num_queries} queries")
    return arr.astype(np.int64, copy=False)


def _ids(values: Iterable[Any] | None) -> np.ndarray:
    if values is None:
        return np.empty(0, dtype=np.int64)
    return np.asarray(list(np.asarray(values).ravel()), dtype=np.int64)


def _map_with_junk(
    ranks: np.ndarray, positives: Sequence[np.ndarray], junk: Sequence[np.ndarray], kappas: Sequence[int]
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """revisitop ``compute_map`` over ``(Q, K)`` ranks: (mAP, aps (Q,), mP@k (len(kappas),), P@k (Q, k))."""
    nq = ranks.shape[0]
    aps = np.full(nq, np.nan)
    prs = np.full((nq, len(kappas)), np.nan)
    for i in range(nq):
        if len(positives[i]) == 0:
            continue
        is_pos = np.isin(ranks[i], positives[i])
        is_junk = np.isin(ranks[i], junk[i]) & ~is_pos
        aps[i] = average_precision(is_pos, len(np.unique(positives[i])), is_junk)
        pos_1based = np.flatnonzero(is_pos[~is_junk]) + 1
        for c, k in enumerate(kappas):
            if len(pos_1based) == 0:
                prs[i, c] = 0.0
                continue
            kq = min(int(pos_1based.max()), int(k))
            prs[i, c] = np.count_nonzero(pos_1based <= kq) / kq
    scored = ~np.isnan(aps)
    if not scored.any():
        return math.nan, aps, np.full(len(kappas), np.nan), prs
    return float(aps[scored].mean()), aps, prs[scored].mean(axis=0), prs


def _check_kappas(kappas: Iterable[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in kappas)
    if any(k < 1 for k in out):
        raise ValueError(f"kappas must be >= 1, got {out}")
    return out


def oxford_map(
    ranks: np.ndarray | Sequence[Sequence[int]], gnd: Sequence[Mapping[str, Iterable[int]]]
) -> RetrievalResults:
    """mAP on Oxford5k / Paris6k: ``good`` and ``ok`` positive, ``junk`` ignored.

    Args:
        ranks: ``(Q, K)`` database indices, best first.
        gnd: one dict per query with ``"good"``, ``"ok"`` and ``"junk"`` lists of database indices
            (a missing key is an empty list).

    Returns:
        Results with protocol ``"oxford"`` (metric ``"mAP"``) and its per-query APs.
    """
    arr = _check_ranks(ranks, len(gnd))
    positives = [np.union1d(_ids(g.get("good")), _ids(g.get("ok"))) for g in gnd]
    junk = [_ids(g.get("junk")) for g in gnd]
    m, aps, _, _ = _map_with_junk(arr, positives, junk, ())
    return RetrievalResults(
        protocols={"oxford": {"mAP": m}},
        per_query={"oxford": aps},
        num_queries=arr.shape[0],
        config={"protocol": "Oxford5k/Paris6k: good+ok positive, junk ignored; trapezoidal AP"},
    )


def revisited_map(
    ranks: np.ndarray | Sequence[Sequence[int]],
    gnd: Sequence[Mapping[str, Iterable[int]]],
    kappas: Iterable[int] = DEFAULT_KAPPAS,
) -> RetrievalResults:
    """Easy / Medium / Hard mAP and mP@k on ROxford5k / RParis6k (revisitop protocol).

    Args:
        ranks: ``(Q, K)`` database indices, best first.
        gnd: one dict per query with ``"easy"``, ``"hard"`` and ``"junk"`` lists of database indices.
        kappas: the ``k`` of mP@k.

    Returns:
        Results with protocols ``"easy"``, ``"medium"``, ``"hard"``, each with ``"mAP"`` and
        ``"mP@k"`` for every ``k``.
    """
    ks = _check_kappas(kappas)
    arr = _check_ranks(ranks, len(gnd))
    easy = [_ids(g.get("easy")) for g in gnd]
    hard = [_ids(g.get("hard")) for g in gnd]
    junk = [_ids(g.get("junk")) for g in gnd]
    setups = {
        "easy": (easy, [np.union1d(j, h) for j, h in zip(junk, hard, strict=True)]),
        "medium": ([np.union1d(e, h) for e, h in zip(easy, hard, strict=True)], junk),
        "hard": (hard, [np.union1d(j, e) for j, e in zip(junk, easy, strict=True)]),
    }
    protocols: dict[str, dict[str, float]] = {}
    per_query: dict[str, np.ndarray] = {}
    for name, (pos, jnk) in setups.items():
        m, aps, mpr, _ = _map_with_junk(arr, pos, jnk, ks)
        protocols[name] = {"mAP": m, **{f"mP@{k}": float(v) for k, v in zip(ks, mpr, strict=True)}}
        per_query[name] = aps
    return RetrievalResults(
        protocols=protocols,
        per_query=per_query,
        num_queries=arr.shape[0],
        config={
            "protocol": "revisitop: Easy = easy positive, junk+hard ignored; Medium = easy+hard "
            "positive, junk ignored; Hard = hard positive, junk+easy ignored; trapezoidal AP; "
            "P@k at min(k, rank of the last positive)",
            "kappas": list(ks),
        },
    )


def label_map(
    ranks: np.ndarray | Sequence[Sequence[int]],
    labels_db: Sequence[Hashable],
    labels_q: Sequence[Hashable],
    exclude_self: bool = False,
    trapezoid: bool = True,
) -> RetrievalResults:
    """mAP with labels: every database image with the query's label is positive.

    Args:
        ranks: ``(Q, K)`` database indices, best first.
        labels_db: ``(N,)`` label of each database image.
        labels_q: ``(Q,)`` label of each query.
        exclude_self: queries are the database (query ``i`` is database image ``i``): the query
            itself is neither positive nor counted in the ranking.
        trapezoid: see :func:`average_precision`.

    Returns:
        Results with protocol ``"labels"`` (``"mAP"``); a query whose label has no other image has AP
        ``nan`` and is left out of the mean.
    """
    arr = _check_ranks(ranks, len(labels_q))
    db = list(labels_db)
    if exclude_self and len(db) != len(labels_q):
        raise ValueError(f"exclude_self needs queries = database, got {len(labels_q)} and {len(db)}")
    if arr.size and (arr.min() < 0 or arr.max() >= len(db)):
        raise ValueError(f"ranks hold indices outside [0, {len(db)})")
    by_label: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(db):
        by_label.setdefault(lab, []).append(i)
    aps = np.full(arr.shape[0], np.nan)
    for i, lab in enumerate(labels_q):
        members = set(by_label.get(lab, ()))
        if exclude_self:
            members.discard(i)
        if not members:
            continue
        row = arr[i]
        is_junk = row == i if exclude_self else np.zeros(len(row), dtype=bool)
        is_pos = np.isin(row, list(members))
        aps[i] = average_precision(is_pos, len(members), is_junk, trapezoid=trapezoid)
    scored = ~np.isnan(aps)
    m = float(aps[scored].mean()) if scored.any() else math.nan
    return RetrievalResults(
        protocols={"labels": {"mAP": m}},
        per_query={"labels": aps},
        num_queries=arr.shape[0],
        config={
            "protocol": "same label positive" + ("; the query itself ignored" if exclude_self else ""),
            "ap": "trapezoid" if trapezoid else "plain",
            "num_without_positive": int((~scored).sum()),
        },
    )


# ----------------------------------------------------------------------------------------------------
# Recall@N


def distinct_ranking(row: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Keep the first-ranked image of every group: ``(K,)`` indices -> ``(K',)`` indices, in order."""
    _, first = np.unique(groups[row], return_index=True)
    return row[np.sort(first)]


def recall_at_n(
    ranks: np.ndarray | Sequence[Sequence[int]],
    query_positions: np.ndarray,
    db_positions: np.ndarray,
    threshold_m: float = 25.0,
    ns: Iterable[int] = DEFAULT_NS,
    db_groups: Sequence[Hashable] | np.ndarray | None = None,
) -> RetrievalResults:
    """Recall@N with a distance threshold (NetVLAD protocol for Pittsburgh / Tokyo 24/7).

    Args:
        ranks: ``(Q, K)`` database indices, best first.
        query_positions: ``(Q, D)`` positions (e.g. UTM easting / northing, metres).
        db_positions: ``(N, D)`` positions.
        threshold_m: a result is correct when its distance to the query is ``<= threshold_m``.
        ns: the ``N`` of Recall@N.
        db_groups: ``(N,)`` panorama (place) id of each database image; when given, only the
            first-ranked image of each panorama is kept, so the first N results are N distinct
            panoramas.

    Returns:
        Results with protocol ``"recall"`` (``"R@N"`` for each N, over all queries, including those
        without any database image within the threshold); per query the 1-based position of the first
        correct result (``nan`` when none is in the ranking). ``config`` records the number of queries
        with no database image within the threshold.
    """
    arr = _check_ranks(ranks, None)
    q = np.asarray(query_positions, dtype=np.float64)
    d = np.asarray(db_positions, dtype=np.float64)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1] or q.shape[0] != arr.shape[0]:
        raise ValueError(
            f"positions must be (Q, D) and (N, D) with Q = {arr.shape[0]}, got {q.shape}, {d.shape}"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= len(d)):
        raise ValueError(f"ranks hold indices outside [0, {len(d)})")
    ns_t = _check_kappas(ns)
    if not (math.isfinite(threshold_m) and threshold_m >= 0):
        raise ValueError(f"threshold_m must be finite and >= 0, got {threshold_m}")
    groups = None
    if db_groups is not None:
        groups = np.asarray(db_groups)
        if groups.shape != (len(d),):
            raise ValueError(f"db_groups must be ({len(d)},), got {groups.shape}")

    first_hit = np.full(arr.shape[0], np.nan)
    num_without = 0
    for i in range(arr.shape[0]):
        dist_all = np.linalg.norm(d - q[i], axis=1)
        if not (dist_all <= threshold_m).any():
            num_without += 1
        row = arr[i] if groups is None else distinct_ranking(arr[i], groups)
        hits = np.flatnonzero(dist_all[row] <= threshold_m)
        if len(hits):
            first_hit[i] = hits[0] + 1
    nq = arr.shape[0]
    recall = {f"R@{n}": (float(np.count_nonzero(first_hit <= n)) / nq if nq else math.nan) for n in ns_t}
    return RetrievalResults(
        protocols={"recall": recall},
        per_query={"recall": first_hit},
        num_queries=nq,
        config={
            "protocol": "correct when distance <= threshold_m"
            + ("; ranking reduced to distinct panoramas" if groups is not None else ""),
            "threshold_m": float(threshold_m),
            "ns": list(ns_t),
            "num_without_positive": num_without,
        },
    )


# ----------------------------------------------------------------------------------------------------
# readers


@dataclass(frozen=True)
class NetVLADDbStruct:
    """A NetVLAD ``dbStruct`` (``pitts30k_test.mat``, ``tokyo247.mat`` ...).

    Attributes:
        which_set: ``"train"`` / ``"val"`` / ``"test"`` (empty when absent).
        db_images: ``(N,)`` database image names.
        db_positions: ``(N, 2)`` UTM positions (metres).
        query_images: ``(Q,)`` query image names.
        query_positions: ``(Q, 2)`` UTM positions.
        pos_dist_thr: positive distance threshold (metres; 25 for Pittsburgh and Tokyo).
    """

    which_set: str
    db_images: list[str]
    db_positions: np.ndarray
    query_images: list[str]
    query_positions: np.ndarray
    pos_dist_thr: float


def _mat_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [
        str(np.asarray(v).ravel()[0]) if not isinstance(v, str) else v
        for v in np.asarray(value, dtype=object).ravel()
    ]


def _mat_positions(path: Path, value: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1 and n == 1 and arr.size == 2:
        arr = arr.reshape(2, 1)
    if arr.ndim != 2 or 2 not in arr.shape:
        raise InputError(path, f"dbStruct.{name} must be 2 x {n}, got shape {arr.shape}")
    if arr.shape == (2, n):  # MATLAB layout: one column per image
        arr = arr.T
    if arr.shape != (n, 2):
        raise InputError(path, f"dbStruct.{name} has shape {arr.shape}, expected 2 x {n}")
    return np.ascontiguousarray(arr)


def read_netvlad_dbstruct(path: str | Path) -> NetVLADDbStruct:
    """Read a NetVLAD ``.mat`` file holding a ``dbStruct`` (``dbImageFns``/``dbImage``, ``utmDb``,
    ``qImageFns``/``qImage``, ``utmQ``, ``posDistThr``).

    Raises:
        InputError: the file is missing, unreadable, or lacks a field.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "NetVLAD .mat file not found")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, simplify_cells=True)
    except Exception as exc:  # scipy raises many kinds on a bad file
        raise InputError(path, f"not a readable MATLAB .mat file ({exc})") from exc
    s = mat.get("dbStruct")
    if not isinstance(s, dict):
        raise InputError(path, "no dbStruct struct in the .mat file")

    def pick(*names: str) -> Any:
        for n in names:
            if n in s:
                return s[n]
        raise InputError(path, f"dbStruct has no field {' / '.join(names)} (fields: {sorted(s)})")

    db_images = _mat_strings(pick("dbImageFns", "dbImage"))
    q_images = _mat_strings(pick("qImageFns", "qImage"))
    try:
        thr = float(np.asarray(pick("posDistThr")).ravel()[0])
    except (TypeError, ValueError, IndexError) as exc:
        raise InputError(path, "dbStruct.posDistThr is not a number") from exc
    which = s.get("whichSet", "")
    return NetVLADDbStruct(
        which_set=which if isinstance(which, str) else "",
        db_images=db_images,
        db_positions=_mat_positions(path, pick("utmDb"), len(db_images), "utmDb"),
        query_images=q_images,
        query_positions=_mat_positions(path, pick("utmQ"), len(q_images), "utmQ"),
        pos_dist_thr=thr,
    )


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes use it, limited to latin-1."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _plain_bytes(*args: Any) -> bytes:
    """``bytes`` as protocol-2 pickles of ``b""`` use it; ``bytes(n)`` (allocation) is refused."""
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError("bytes(int) is not allowed")
    return bytes(*args)


def _numpy_allowed() -> dict[tuple[str, str], Any]:
    reconstruct = np.array([0]).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.arange(2).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = frombuffer
    for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "bool_"):  # fmt: skip
        allowed[("numpy", name)] = getattr(np, name)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Only builtin containers / scalars (pickle opcodes need no global for them), ``set`` /
    ``frozenset`` / ``bytes``, latin-1 ``_codecs.encode`` and numpy arrays / scalars / dtypes."""

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._ALLOWED is None:
            _RestrictedUnpickler._ALLOWED = {
                ("builtins", "set"): set,
                ("builtins", "frozenset"): frozenset,
                ("__builtin__", "set"): set,
                ("__builtin__", "frozenset"): frozenset,
                ("builtins", "bytes"): _plain_bytes,
                ("__builtin__", "bytes"): _plain_bytes,
                ("_codecs", "encode"): _latin1_encode,
                **_numpy_allowed(),
            }
        obj = _RestrictedUnpickler._ALLOWED.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return obj


def _check_plain(path: Path, value: Any, where: str = "") -> None:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise InputError(path, f"object array at {where or 'top level'} is not allowed")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_plain(path, k, where)
            _check_plain(path, v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            _check_plain(path, v, f"{where}[{i}]")
    elif not isinstance(value, (str, bytes, int, float, complex, bool, type(None), np.generic)):
        raise InputError(path, f"unexpected {type(value).__name__} at {where or 'top level'}")


def _int_list(path: Path, value: Any, where: str) -> list[int]:
    arr = np.asarray(value if value is not None else [])
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(path, f"{where} must hold integer image indices, got {arr.dtype}")
    return [int(v) for v in arr.ravel()]


def read_revisited_gnd(path: str | Path) -> dict[str, Any]:
    """Read a revisitop ground truth (``gnd_roxford5k.pkl``, ``gnd_rparis6k.pkl``) safely.

    The pickle is read with an unpickler that only builds builtin containers and scalars and numpy
    arrays (no object arrays); any other global (``os.system`` ...) is refused before it is called.

    Returns:
        ``{"imlist": [str], "qimlist": [str], "gnd": [{"bbx": [float] | None, "easy": [int],
        "hard": [int], "junk": [int]}]}``, one ``gnd`` entry per query.

    Raises:
        InputError: the file is missing, not such a pickle, or holds anything not allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "ground-truth pickle not found")
    try:
        data = _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise InputError(path, f"refused or malformed pickle: {exc}") from exc
    except Exception as exc:  # truncated / corrupt streams raise EOFError, ValueError ...
        raise InputError(path, f"malformed pickle ({type(exc).__name__}: {exc})") from exc
    _check_plain(path, data)
    if not isinstance(data, dict) or not {"imlist", "qimlist", "gnd"} <= set(data):
        raise InputError(path, "expected a dict with 'imlist', 'qimlist' and 'gnd'")
    imlist = [str(v) for v in data["imlist"]]
    qimlist = [str(v) for v in data["qimlist"]]
    if not isinstance(data["gnd"], (list, tuple)) or len(data["gnd"]) != len(qimlist):
        raise InputError(path, f"'gnd' must be a list of {len(qimlist)} dicts, one per query")
    gnd = []
    for i, g in enumerate(data["gnd"]):
        if not isinstance(g, dict):
            raise InputError(path, f"gnd[{i}] is not a dict")
        entry: dict[str, Any] = {}
        bbx = g.get("bbx")
        entry["bbx"] = None if bbx is None else [float(v) for v in np.asarray(bbx, dtype=np.float64).ravel()]
        for key in ("easy", "hard", "junk"):
            if key not in g:
                raise InputError(path, f"gnd[{i}] has no {key!r} list")
            ids = _int_list(path, g[key], f"gnd[{i}][{key!r}]")
            if any(v < 0 or v >= len(imlist) for v in ids):
                raise InputError(path, f"gnd[{i}][{key!r}] holds indices outside [0, {len(imlist)})")
            entry[key] = ids
        gnd.append(entry)
    return {"imlist": imlist, "qimlist": qimlist, "gnd": gnd}


def read_labels_csv(path: str | Path) -> dict[str, str]:
    """Read a ``path,landmark,...`` CSV (header required; extra columns ignored).

    Returns:
        ``{image path: label}`` in file order.

    Raises:
        InputError: missing file, missing column, empty or duplicate path.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "labels CSV not found")
    labels: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "path" not in fields or "landmark" not in fields:
            raise InputError(path, f"header must name 'path' and 'landmark' columns, got {fields}")
        for line, row in enumerate(reader, start=2):
            name, label = (row.get("path") or "").strip(), (row.get("landmark") or "").strip()
            if not name or not label:
                raise InputError(path, f"line {line}: empty path or landmark")
            if name in labels:
                raise InputError(path, f"line {line}: duplicate path {name!r}")
            labels[name] = label
    return labels


def evaluate_ranked_with_labels(
    ranked: Mapping[str, Sequence[str]],
    labels: Mapping[str, Hashable],
    database: Sequence[str] | None = None,
    ns: Iterable[int] = DEFAULT_KAPPAS,
) -> RetrievalResults:
    """mAP and Recall@N of ranked database names per query against image labels.

    Every database image with the query's label, other than the query itself, is a positive; positives not
    ranked for a query count as never retrieved (so rank enough images per query for a full mAP). The query
    itself is dropped from its ranking before scoring. Queries without a label, or whose label has no other
    image, are left out of the mean and of Recall@N (their AP is ``nan``).

    Args:
        ranked: ``{query: [database names, best first]}`` (e.g. :func:`visloc.io.pairs.read_ranked_pairs`).
        labels: ``{image name: label}`` (:func:`read_labels_csv`).
        database: the names that could be retrieved (a map's images); default: every labelled image.
        ns: the ``N`` of Recall@N (a scored query is correct at N when a positive is among its first N).

    Returns:
        Results with protocol ``"labels"`` (``"mAP"`` and ``"R@N"`` for each N, shares of the scored
        queries) and the AP of each query in ``ranked`` order.
    """
    ns_t = _check_kappas(ns)
    names = list(database) if database is not None else sorted(labels)
    counts: dict[Hashable, int] = {}
    for name in names:
        if name in labels:
            counts[labels[name]] = counts.get(labels[name], 0) + 1
    aps, first_hit = [], []
    for query, dbs in ranked.items():
        label = labels.get(query)
        positives = counts.get(label, 0) - int(query in names and label is not None) if label is not None else 0
        hits = [labels.get(db) == label for db in dbs if db != query]
        aps.append(average_precision(np.array(hits, dtype=bool), positives) if positives > 0 else float("nan"))
        first_hit.append(hits.index(True) + 1 if positives > 0 and True in hits else math.inf)
    per_query = np.array(aps, dtype=np.float64)
    scored_mask = np.isfinite(per_query)
    scored = per_query[scored_mask]
    first = np.array(first_hit, dtype=np.float64)[scored_mask]
    recall = {f"R@{n}": float(np.count_nonzero(first <= n)) / len(first) if len(first) else float("nan")
              for n in ns_t}
    return RetrievalResults(
        protocols={"labels": {"mAP": float(scored.mean()) if len(scored) else float("nan"), **recall}},
        per_query={"labels": per_query},
        num_queries=len(per_query),
        config={"queries": list(ranked), "scored_queries": int(len(scored)), "ns": list(ns_t),
                "protocol": "every other database image with the query's label is positive; unlisted "
                            "positives count as never retrieved; AP as Oxford's compute_ap (trapezoid); "
                            "R@N over the scored queries"},
    )


def evaluate_pairs_with_labels(
    pairs_path: str | Path, labels: Mapping[str, Hashable], database: Sequence[str] | None = None
) -> RetrievalResults:
    """mAP and Recall@1/5/10 of a ranked pairs file (``visloc retrieve``, hloc) against image labels.

    The pairs file's rankings scored by :func:`evaluate_ranked_with_labels` (see there for the protocol).

    Args:
        pairs_path: ``query db`` per line, each query's images best first.
        labels: ``{image name: label}`` (:func:`read_labels_csv`).
        database: the names that could be retrieved (a map's images); default: every labelled image.

    Returns:
        Results with protocol ``"labels"`` (``"mAP"``, ``"R@1"``, ``"R@5"``, ``"R@10"``) and the AP of each
        query; ``config["pairs"]`` names the file.
    """
    from ..io.pairs import read_ranked_pairs

    results = evaluate_ranked_with_labels(read_ranked_pairs(pairs_path), labels, database)
    return RetrievalResults(protocols=results.protocols, per_query=results.per_query,
                            num_queries=results.num_queries, config={"pairs": str(pairs_path), **results.config})
