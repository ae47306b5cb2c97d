"""Recall@N (and mAP) before and after each stage of ``visloc verify``, side by side.

``visloc verify PAIRS ... --out OUT`` writes ``OUT.verification.json``: per query every candidate with its
``retrieval_rank`` (0-based, in the retrieval list), ``first_stage_rank`` (0-based after sorting the shortlist
by ``S`` or ``|I|``; ``null`` beyond the shortlist) and the candidates in the final order. From it
:func:`stage_rankings` rebuilds three rankings of every query:

* ``retrieval``: by ``retrieval_rank``;
* ``first stage``: the shortlist by ``first_stage_rank``, then the rest in retrieval order;
* ``second stage``: the final order as stored (left out when the run had ``second_stage = 0``, where it is
  the first stage).

:func:`evaluate_stages` scores each ranking with one scorer (:func:`label_scorer`: labels CSV, mAP and
Recall@N; :func:`place_scorer`: poses, place Recall@N), :func:`format_stage_table` prints them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .place_recall import DEFAULT_NS, PlaceGroundTruth, first_correct_ranks
from .retrieval import RetrievalResults, evaluate_ranked_with_labels

#: The stages, in pipeline order.
STAGES: tuple[str, ...] = ("retrieval", "first stage", "second stage")
SIDECAR_SUFFIX = ".verification.json"

Ranked = Mapping[str, Sequence[str]]
ScoreFn = Callable[[Ranked], Mapping[str, float]]


def verification_log_path(path: str | Path) -> Path:
    """The ``.verification.json`` of ``path``: ``path`` itself when it ends so, else ``path.verification.json``
    (``path`` being the re-ranked pairs file ``OUT`` of ``visloc verify``)."""
    path = Path(path)
    return path if path.name.endswith(SIDECAR_SUFFIX) else path.with_name(path.name + SIDECAR_SUFFIX)


def _rank(path: Path, query: str, c: dict, key: str, optional: bool) -> int | None:
    value = c.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(path, f"query {query!r}: candidate {c.get('name')!r} has no valid {key!r}")
    return value


def _query_rankings(path: Path, query: str, candidates: Any) -> tuple[list[str], list[str], list[str]]:
    """(retrieval, first stage, final) names of one query's candidates (validated)."""
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise InputError(path, f"query {query!r}: expected a list of candidate objects")
    names = [c.get("name") for c in candidates]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise InputError(path, f"query {query!r}: candidate names missing or repeated")
    retrieval = [_rank(path, query, c, "retrieval_rank", False) for c in candidates]
    first = [_rank(path, query, c, "first_stage_rank", True) for c in candidates]
    if len(set(retrieval)) != len(retrieval):
        raise InputError(path, f"query {query!r}: repeated retrieval_rank")
    shortlisted = [r for r in first if r is not None]
    if len(set(shortlisted)) != len(shortlisted):
        raise InputError(path, f"query {query!r}: repeated first_stage_rank")
    by_retrieval = [n for _, n in sorted(zip(retrieval, names, strict=True))]
    head = [n for _, n in sorted((r, n) for r, n in zip(first, names, strict=True) if r is not None)]
    in_head = set(head)
    return by_retrieval, head + [n for n in by_retrieval if n not in in_head], list(names)


def stage_rankings(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """The ranking of every query after each stage of a ``visloc verify`` run.

    Args:
        path: the run's ``OUT.verification.json``, or ``OUT`` (the re-ranked pairs file beside it).

    Returns:
        ``{"retrieval": {query: names}, "first stage": {...}, "second stage": {...}}`` in that order, queries
        in file order (skipped queries are not in the file); ``"second stage"`` is left out when the run's
        ``config.rerank.second_stage`` is 0.

    Raises:
        InputError: the file is missing, not JSON, or not laid out as ``visloc verify`` writes it.
    """
    log = verification_log_path(path)
    if not log.is_file():
        raise InputError(log, "verification log not found (written by `visloc verify ... --out OUT` beside OUT)")
    try:
        data = json.loads(log.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(log, f"not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise InputError(log, "expected an object with a 'results' object (query -> candidates)")
    rerank: Any = data
    for key in ("signature", "config", "rerank"):  # absent: keep the second stage
        rerank = rerank.get(key) if isinstance(rerank, dict) else None
    second = rerank.get("second_stage") if isinstance(rerank, dict) else None
    out: dict[str, dict[str, list[str]]] = {s: {} for s in STAGES}
    for query, candidates in data["results"].items():
        for stage, ranking in zip(STAGES, _query_rankings(log, query, candidates), strict=True):
            out[stage][query] = ranking
    if second == 0:
        del out["second stage"]
    return out


def evaluate_stages(rankings: Mapping[str, Ranked], score_fn: ScoreFn) -> dict[str, dict[str, float]]:
    """Score every stage's ranking with ``score_fn`` (``{query: names} -> {metric: value}``).

    Returns:
        ``{stage: {metric: value}}`` in the order of ``rankings``.
    """
    return {stage: {k: float(v) for k, v in score_fn(ranked).items()} for stage, ranked in rankings.items()}


def label_scorer(labels: Mapping[str, Hashable], database: Sequence[str] | None = None,
                 ns: Iterable[int] = DEFAULT_NS) -> ScoreFn:
    """A scorer with labels (:func:`~visloc.evaluation.retrieval.evaluate_ranked_with_labels`).

    Returns:
        ``ranked -> {"R@N": share, ..., "mAP": share}`` (``nan`` when no query can be scored).
    """
    ns_t = tuple(ns)

    def score(ranked: Ranked) -> dict[str, float]:
        metrics = evaluate_ranked_with_labels(ranked, labels, database, ns_t).protocols["labels"]
        return {**{f"R@{n}": metrics[f"R@{n}"] for n in ns_t}, "mAP": metrics["mAP"]}

    return score


def place_scorer(truth: PlaceGroundTruth, ns: Iterable[int] = DEFAULT_NS) -> ScoreFn:
    """A scorer with place ground truth (:meth:`PlaceGroundTruth.recall`; a query of ``truth`` missing from
    the ranking is a miss).

    Returns:
        ``ranked -> {"R@N": share, ...}``.
    """
    ns_t = tuple(ns)
    return lambda ranked: {f"R@{n}": v for n, v in truth.recall(ranked, ns_t).items()}


def place_results(ranked: Ranked, truth: PlaceGroundTruth, ns: Iterable[int] = DEFAULT_NS) -> RetrievalResults:
    """Place Recall@N of ranked database names per query, as :class:`RetrievalResults`.

    Returns:
        Protocol ``"place"`` with ``"R@N"`` over every query of ``truth`` (missing or without a correct
        image: a miss); per query (``truth`` order) the 1-based position of the first correct result
        (``nan``: none ranked).
    """
    ns_t = tuple(int(n) for n in ns)
    positives = truth.positive_names()
    first = first_correct_ranks([list(ranked.get(q, [])) for q in truth.query_names],
                                [positives[q] for q in truth.query_names])
    return RetrievalResults(
        protocols={"place": {f"R@{n}": v for n, v in truth.recall(ranked, ns_t).items()}},
        per_query={"place": np.where(np.isfinite(first), first, np.nan)},
        num_queries=len(truth.query_names),
        config={"queries": truth.query_names, "ranked_queries": sum(q in ranked for q in truth.query_names),
                "without_positive": sum(not p for p in truth.positives), "ns": list(ns_t),
                "protocol": "correct: same scene, centre within 1 m, viewing direction within 45 deg"},
    )


def stages_to_json(stages: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float | None]]:
    """``{stage: {metric: value}}`` with ``nan`` as ``None`` (JSON has no NaN)."""
    return {s: {k: (float(v) if math.isfinite(v) else None) for k, v in m.items()} for s, m in stages.items()}


def format_stage_table(stages: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table: one row per stage, one column per metric (first appearance order), in percent.

    Returns:
        ``| stage | R@1 | ... | mAP |`` with a separator row and one row per stage; ``-`` for ``nan``.
    """
    keys: list[str] = []
    for metrics in stages.values():
        keys.extend(k for k in metrics if k not in keys)
    lines = ["| stage | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for stage, metrics in stages.items():
        cells = [f"{100 * v:.2f}" if math.isfinite(v := metrics.get(k, math.nan)) else "-" for k in keys]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "STAGES",
    "evaluate_stages",
    "format_stage_table",
    "label_scorer",
    "place_results",
    "place_scorer",
    "stage_rankings",
    "stages_to_json",
    "verification_log_path",
]
