"""Shortlist re-ranking: orders computed by hand from given verifications, S_L from feature maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from visloc.errors import ConfigError
from visloc.verification.rerank import RerankConfig, global_distance, local_similarity, rerank
from visloc.verification.scores import PairVerification, fused_score


def _v(inliers: int, consistent: int, score: float) -> PairVerification:
    i = np.zeros(100, bool)
    i[:inliers] = True
    c = np.zeros(100, bool)
    c[:consistent] = True
    return PairVerification(100, i, c, score)


VERIFIED = {"a": _v(10, 5, 0.01), "b": _v(50, 40, 0.30), "c": _v(80, 10, 0.05), "d": _v(40, 35, 0.30),
            "e": _v(0, 0, 0.0)}


def test_first_stage_orders_by_s_or_inliers_and_keeps_the_tail() -> None:
    names, scores = ["a", "b", "c", "d", "e", "f"], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    calls = []

    def verify(n: str) -> PairVerification:
        calls.append(n)
        return VERIFIED[n]

    out = rerank(names, scores, verify, RerankConfig(shortlist=5, first_stage="S"))
    assert calls == ["a", "b", "c", "d", "e"]  # f is beyond the shortlist
    assert [c.name for c in out] == ["b", "d", "c", "a", "e", "f"]  # S; b and d tie: retrieval order
    out = rerank(names, scores, verify, RerankConfig(shortlist=5, first_stage="inliers", second_stage=0))
    assert [c.name for c in out] == ["c", "b", "d", "a", "e", "f"]
    assert out[-1].verification is None and out[0].fused is None


@pytest.mark.parametrize("fusion", ["monotone", "paper"])
def test_second_stage_sorts_the_top_by_the_fused_score(fusion: str) -> None:
    names, scores = ["a", "b", "c", "d"], [0.9, 0.5, 0.7, 0.95]
    sim = {"a": 0.5, "b": 0.9, "c": 0.6, "d": 0.4}
    out = rerank(names, scores, VERIFIED.__getitem__, RerankConfig(shortlist=4, first_stage="S", second_stage=2, fusion=fusion),
                 similarity=lambda n, v: sim[n])
    # first stage by S: b (0.30), d (0.30, tie -> retrieval order: b before d), c, a; second stage on b, d
    f = {n: fused_score(sim[n], VERIFIED[n].score, global_distance(s), fusion) for n, s in zip(names, scores,
                                                                                              strict=True)}
    top = sorted(["b", "d"], key=lambda n: -f[n])
    assert [c.name for c in out] == [*top, "c", "a"]
    assert out[0].fused == pytest.approx(f[top[0]]) and out[2].fused is None
    assert out[0].to_json()["S_L"] == sim[top[0]]


def test_global_distance_and_config() -> None:
    assert global_distance(1.0) == 0.0 and global_distance(0.0) == pytest.approx(math.sqrt(2))
    assert global_distance(1.0000001) == 0.0
    for bad in (dict(shortlist=0), dict(second_stage=-1), dict(first_stage="x"), dict(fusion="x")):
        with pytest.raises(ConfigError):
            RerankConfig(**bad)
    with pytest.raises(ValueError):
        rerank(["a"], [0.1, 0.2], VERIFIED.__getitem__)


def test_local_similarity_samples_both_maps_at_the_matches() -> None:
    torch.manual_seed(0)
    f0 = torch.randn(8, 6, 10)  # a 60 x 100 image at stride 10
    f1 = torch.zeros(8, 3, 5)  # a 30 x 50 image at stride 10: cell (1, 2) holds f0's cell (4, 7)
    f1[:, 1, 2] = 3.0 * f0[:, 4, 7]
    f1[:, 0, 0] = -f0[:, 0, 0]
    # cell centres in pixel-centre coordinates: cell j covers pixels 10 j .. 10 j + 9, centre 10 j + 4.5
    p0 = np.array([[74.5, 44.5], [4.5, 4.5]], np.float32)
    p1 = np.array([[24.5, 14.5], [4.5, 4.5]], np.float32)
    assert local_similarity(f0, f1, p0[:1], p1[:1], (60, 100), (30, 50)) == pytest.approx(1.0, abs=1e-5)
    assert local_similarity(f0, f1, p0, p1, (60, 100), (30, 50)) == pytest.approx(0.0, abs=1e-5)
    assert local_similarity(f0, f1, p0[:0], p1[:0], (60, 100), (30, 50)) == 0.0
