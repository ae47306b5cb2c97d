"""Average query expansion in the retrieval stage and database-side augmentation in the map's index."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from visloc.datasets import load_frames
from visloc.errors import ConfigError
from visloc.io.images import read_image
from visloc.localization import Map, MapConfig, RetrievalConfig, build_map
from visloc.localization.map import index_vectors
from visloc.localization.retrieve import Retriever
from visloc.retrieval.expansion import aqe, dba

pytestmark = pytest.mark.e2e


def test_query_expansion_is_search_with_the_averaged_descriptor(tiny_world: Path, tiny_map: Path) -> None:
    """The retriever's AQE equals: search, average the query with its top-k indexed vectors by hand
    (numpy), search again -- and differs from the plain ranking's scores."""
    the_map = Map(tiny_map)
    plain = Retriever(the_map, RetrievalConfig(num_retrieved=6, rerank=0))
    expanded = Retriever(the_map, RetrievalConfig(num_retrieved=6, rerank=0, query_expansion=2))
    db = the_map.index.vectors(np.arange(len(the_map.index)))
    frame = load_frames(tiny_world, split="test").frames[0]
    raw = plain.describe(read_image(frame.image_path))
    q = index_vectors(plain.descriptor, raw[None])[0]
    top2 = np.argsort(-(db @ q), kind="stable")[:2]
    q2 = q + db[top2].sum(0)
    q2 /= np.linalg.norm(q2)
    want = np.argsort(-(db @ q2), kind="stable")[:6]
    names, scores = expanded(raw, frame.name)
    assert names == [the_map.names[i] for i in want]
    np.testing.assert_allclose(scores, (db @ q2)[want], atol=1e-5)
    assert scores != plain(raw, frame.name)[1]


def test_database_side_augmentation_indexes_the_augmented_vectors(tiny_world: Path, tiny_map: Path,
                                                                  tiny_map_config: MapConfig, tmp_path: Path) -> None:
    config = dataclasses.replace(tiny_map_config, points="none", index={"dba_k": 2})
    build_map(tiny_world, tmp_path / "dba_map", config, split="train")
    plain, the_dba = Map(tiny_map), Map(tmp_path / "dba_map")
    assert the_dba.names == plain.names
    raw = np.stack([plain.global_descriptor(n) for n in plain.names])
    want = dba(index_vectors(plain.descriptor, raw), 2)
    np.testing.assert_allclose(the_dba.index.vectors(np.arange(len(the_dba.index))), want, atol=1e-5)
    assert not np.allclose(want, plain.index.vectors(np.arange(len(plain.index))), atol=1e-3)


def test_bad_expansion_settings() -> None:
    with pytest.raises(ConfigError, match="query_expansion"):
        RetrievalConfig(query_expansion=-1)
    with pytest.raises(ConfigError, match="dba_k"):
        MapConfig(index={"dba_k": -2}).index_config()


def test_aqe_helper_matches_the_retriever_formula() -> None:
    rng = np.random.default_rng(0)
    db = rng.normal(size=(5, 4)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:1] + 0.1
    out = aqe(q, db, np.array([[3, 1]]), 2)
    ref = q[0] + db[3] + db[1]
    np.testing.assert_allclose(out[0], ref / np.linalg.norm(ref), atol=1e-6)
