"""Pairs files: ``query db`` per line, ranked (hloc). Scores go to a JSON sidecar when present."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError
from .atomic import atomic_open, write_json
from .text import data_lines


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    pairs = []
    for lineno, parts in data_lines(path, "pairs file"):
        if len(parts) != 2:
            raise InputError(path, f"line {lineno}: expected 'name0 name1', got {len(parts)} fields")
        pairs.append((parts[0], parts[1]))
    return pairs


def read_ranked_pairs(path: str | Path) -> dict[str, list[str]]:
    """``{query: [database names, best first]}`` of a ranked pairs file (:func:`read_pairs`, grouped in file
    order)."""
    ranked: dict[str, list[str]] = {}
    for query, db in read_pairs(path):
        ranked.setdefault(query, []).append(db)
    return ranked


def scores_sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".scores.json")


def write_pairs(
    path: str | Path, pairs: Iterable[tuple[str, str]], scores: Iterable[float] | None = None
) -> None:
    """Write ranked pairs atomically; with ``scores``, also ``<path>.scores.json`` (same order).

    Without scores, a sidecar left by an earlier run is removed, so it cannot describe other pairs.
    """
    pairs = list(pairs)
    if scores is not None:
        scores = [float(s) for s in scores]
        if len(scores) != len(pairs):
            raise ValueError(f"one score per pair is required ({len(scores)} scores, {len(pairs)} pairs)")
    with atomic_open(path) as f:
        for q, d in pairs:
            f.write(f"{q} {d}\n")
    if scores is None:
        scores_sidecar(path).unlink(missing_ok=True)
    else:
        write_json(scores_sidecar(path), {"pairs": [list(p) for p in pairs], "scores": scores})


def read_pair_scores(path: str | Path) -> dict[tuple[str, str], float]:
    side = scores_sidecar(path)
    if not side.is_file():
        raise InputError(side, "scores sidecar does not exist")
    try:
        data = json.loads(side.read_text())
        return {(a, b): float(s) for (a, b), s in zip(data["pairs"], data["scores"], strict=True)}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(side, f"malformed scores sidecar ({e})") from None
