"""Position priors restrict retrieval: the names within a radius (pure function), FAISS searches restricted to
rows (flat, IVF-PQ, IVF-PQ with re-ranking) equal to filtering the full ranking, and the map's Retriever and
Localizer searching only the database images a prior leaves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from visloc.datasets import load_frames
from visloc.io.images import read_image
from visloc.localization import Localizer, Map
from visloc.localization.localize import NO_IMAGE_WITHIN_PRIOR
from visloc.localization.prior import MapPrior, names_within_radius
from visloc.localization.retrieve import RetrievalConfig, Retriever
from visloc.retrieval.index import GlobalIndex, IndexConfig


def test_names_within_radius_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    centres = {f"img{i:03d}": rng.uniform(-10, 10, 3) for i in range(200)}
    for position, radius, up in (([0, 0, 0], 4.0, None), ([3, -2, 50], 5.0, [0, 0, 1]), ([1, 1, 1], 2.5, [0, 1, 0])):
        prior = MapPrior(position, radius, up)
        got = names_within_radius(centres, prior)
        expected = []
        for name, c in centres.items():
            d = c - np.asarray(position, float)
            if up is not None:
                u = np.asarray(up, float) / np.linalg.norm(up)
                d = d - (d @ u) * u
            if np.linalg.norm(d) <= radius:
                expected.append(name)
        assert got == expected and 0 < len(got) < len(centres)
    assert names_within_radius(centres, MapPrior([100, 100, 100], 1.0)) == []


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("config", [
    IndexConfig(),
    IndexConfig(kind="ivfpq", nlist=4, m=8, nbits=6, nprobe=2, train_size=2000),
    IndexConfig(kind="ivfpq", nlist=4, m=8, nbits=8, nprobe=4, refine_m=8, train_size=2000),
], ids=["flat", "ivfpq", "ivfpqr"])
@pytest.mark.parametrize("num_rows", [0, 7, 300])
def test_restricted_index_search_equals_filtering_the_full_ranking(config: IndexConfig, num_rows: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    db, queries = _unit(rng.standard_normal((1200, 32))), _unit(rng.standard_normal((3, 32)))
    index = GlobalIndex.build(db, [str(i) for i in range(len(db))], config)
    rows = np.sort(rng.choice(len(db), num_rows, replace=False))
    k = 10
    scores, idx = index.search(queries, k, rows=rows)
    assert idx.shape == (3, k) and set(idx[idx >= 0].tolist()) <= set(rows.tolist())
    assert (idx >= 0).sum(axis=1).tolist() == [min(k, num_rows)] * 3
    # the exact ranking of the allowed rows by their indexed vectors
    vectors = index.vectors(np.arange(len(db)))
    for q in range(3):
        sims = vectors[rows] @ queries[q]
        order = np.argsort(-sims, kind="stable")[:k]
        assert idx[q, : len(order)].tolist() == rows[order].tolist()
        assert np.allclose(scores[q, : len(order)], sims[order], atol=1e-4)
    if config.kind == "ivfpq" and num_rows:
        # past the exhaustive limit: FAISS's selector (or, where refused, the whole ranking filtered)
        monkeypatch.setattr("visloc.retrieval.index.EXACT_RESTRICTED_ROWS", 0)
        index.nprobe = config.nlist  # every list: then it is the exact ranking of the indexed vectors
        _, i2 = index.search(queries, k, rows=rows)
        _, full_i = index.search(queries, len(db))
        for q in range(3):
            keep = [j for j in full_i[q] if j in set(rows.tolist())][:k]
            assert i2[q, : len(keep)].tolist() == keep
    # no rows: the plain search is untouched
    _, i0 = index.search(queries, k)
    assert (i0 >= 0).all()


@pytest.fixture(scope="module")
def query(tiny_world: Path):
    frame = load_frames(tiny_world, split="test").frames[0]
    return read_image(frame.image_path), frame


def test_retriever_within_equals_brute_force_filtering(tiny_map: Path, query) -> None:
    map_ = Map(tiny_map)
    centres = {n: map_.poses[n].center for n in map_.names}
    image, frame = query
    full = Retriever(map_, RetrievalConfig(num_retrieved=len(map_.names)))
    descriptor = full.describe(image)
    ranking, scores = full(descriptor, "q")
    assert sorted(ranking) == sorted(map_.names)
    retriever = Retriever(map_, RetrievalConfig(num_retrieved=5))
    assert retriever(descriptor, "q") == (ranking[:5], scores[:5])  # the default path is the same
    for radius in (0.5, 1.5, 3.0, 100.0):
        prior = MapPrior(frame.pose.center, radius)
        within = names_within_radius(centres, prior)
        names, sims = retriever(descriptor, "q", within=set(within))
        expected = [(n, s) for n, s in zip(ranking, scores, strict=True) if n in set(within)][:5]
        assert names == [n for n, _ in expected], radius
        assert np.allclose(sims, [s for _, s in expected], atol=1e-5)
        assert all(np.linalg.norm(centres[n] - frame.pose.center) <= radius for n in names)
    assert retriever(descriptor, "q", within=set()) == ([], [])
    assert retriever(descriptor, "q", within={"no/such/image.png"}) == ([], [])
    # exclude_self still drops the query's own name among the allowed ones
    own = map_.names[3]
    excl = Retriever(map_, dataclasses.replace(retriever.config, exclude_self=True))
    assert own not in excl(map_.global_descriptor(own), own, within={own, *map_.names[:10]})[0]


def test_localizer_within(tiny_map: Path, query) -> None:
    localizer = Localizer(tiny_map)
    image, frame = query
    centres = {n: localizer.map.poses[n].center for n in localizer.map.names}
    free = localizer.localize_image(image, frame.camera)
    near = localizer.localize_image(image, frame.camera, within=names_within_radius(
        centres, MapPrior(frame.pose.center, 2.0)))
    assert free.pose is not None and near.pose is not None
    assert all(np.linalg.norm(centres[n] - frame.pose.center) <= 2.0 for n in near.retrieved)
    assert np.linalg.norm(near.pose.center - frame.pose.center) < 0.1
    lost = localizer.localize_image(image, frame.camera, within=[])
    assert lost.pose is None and lost.status == NO_IMAGE_WITHIN_PRIOR and lost.retrieved == []
