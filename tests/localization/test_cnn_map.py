"""Maps of the ``cnn`` global descriptor (PCA whitening fitted on the database and kept in
``global_state.npz``), query boxes (``visloc retrieve --boxes``) and the IVF-PQ index option of map build."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from visloc.cli import app
from visloc.errors import ConfigError, InputError, VislocError
from visloc.io.images import read_image
from visloc.io.pairs import read_pairs
from visloc.localization import Map, MapConfig, RetrievalConfig, Retriever, build_map, retrieve
from visloc.localization.retrieve import read_boxes
from visloc.models.checkpoint import save_model
from visloc.models.retrieval_net import RetrievalNet, RetrievalNetConfig
from visloc.retrieval.whitening import apply_whitening

runner = CliRunner()
NUM = 6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = RetrievalNet(RetrievalNetConfig(pooling="gem", whitening_dim=16))
    return save_model(tmp_path_factory.mktemp("cnn_net") / "net.pt", net, net.config)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six blocky random photos (SIFT finds corners, the network tells them apart)."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(NUM):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(np.kron(small, np.ones((8, 8, 1), np.uint8))).save(root / f"im{i}.png")
    return root


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _error(args: list[str]) -> VislocError:
    result = runner.invoke(app, args)
    assert isinstance(result.exception, VislocError), (result.output, repr(result.exception))
    return result.exception


@pytest.fixture(scope="module")
def cnn_map(photos: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cnn_map") / "map"
    _ok(["map", "build", str(photos), "--out", str(out), "--points", "none", "--extractor-set", "max_keypoints=64",
         "--global-descriptor", "cnn", "--global-set", f"model={checkpoint}", "--global-set", "image_size=128",
         "--global-set", "whitening=pca", "--global-set", "scales=1,0.75"])
    return out


def test_cnn_map_whitens_database_and_queries_alike_and_finds_each_photo(cnn_map: Path, photos: Path,
                                                                         tmp_path: Path) -> None:
    m = Map(cnn_map)
    assert m.config.global_descriptor == "cnn" and m.config.index == {} and m.index.kind == "flat"
    assert m.descriptor.config.scales == (1.0, 0.75)  # the command line's list, through map.json and back
    with np.load(cnn_map / "global_state.npz", allow_pickle=False) as f:
        mean, projection = f["whitening_mean"], f["whitening_projection"]
    assert projection.shape == (NUM - 1, 16)  # at most N - 1 dimensions for N images
    raw = np.stack([m.global_descriptor(n) for n in m.names])
    assert raw.shape == (NUM, 16)  # the map keeps the raw vectors, the index their whitened form
    indexed = m.index.index.reconstruct_n(0, NUM)
    np.testing.assert_allclose(indexed, apply_whitening(raw, mean, projection), atol=1e-5)
    # a query is whitened with the same state: each photo's own copy comes first
    queries = tmp_path / "queries"
    queries.mkdir()
    for p in sorted(photos.iterdir()):
        (queries / p.name).write_bytes(p.read_bytes())
    pairs = tmp_path / "pairs.txt"
    retrieve(m, queries, pairs, RetrievalConfig(num_retrieved=2))
    ranked = read_pairs(pairs)
    assert len(ranked) == 2 * NUM and all(q == d for q, d in ranked[::2])
    retriever = Retriever(m)
    q = retriever.describe(read_image(photos / "im2.png"))
    np.testing.assert_allclose(q, raw[m.names.index("im2.png")], atol=1e-5)
    names, scores = retriever(q)
    assert names[0] == "im2.png" and scores[0] == pytest.approx(1.0, abs=1e-4)


def test_query_boxes_from_a_file_and_their_errors(cnn_map: Path, photos: Path, tmp_path: Path) -> None:
    boxes = tmp_path / "boxes.txt"
    boxes.write_text("# name x0 y0 x1 y1\nim1.png 10 10 90 80\n\nim3.png 0 0 64 48.5\n")
    assert read_boxes(boxes) == {"im1.png": (10.0, 10.0, 90.0, 80.0), "im3.png": (0.0, 0.0, 64.0, 48.5)}
    pairs = tmp_path / "pairs.txt"
    _ok(["retrieve", str(cnn_map), str(photos), "--out", str(pairs), "--num", "3", "--boxes", str(boxes)])
    assert len(read_pairs(pairs)) == 3 * NUM
    # the boxed queries are described with their box (Python API: Retriever.describe(box=...))
    m = Map(cnn_map)
    retriever = Retriever(m, RetrievalConfig(num_retrieved=3))
    image = read_image(photos / "im1.png")
    boxed = retriever.describe(image, box=(10, 10, 90, 80))
    assert not np.allclose(boxed, retriever.describe(image), atol=1e-4)
    assert [q for q, _ in read_pairs(pairs)][3:6] == ["im1.png"] * 3
    assert [d for q, d in read_pairs(pairs) if q == "im1.png"] == retriever(boxed)[0]

    for text, problem in (("im1.png 1 2 3\n", "line 1: expected 'name x0 y0 x1 y1'"),
                          ("# ok\nim1.png 1 2 x 4\n", "line 2: box coordinates must be numbers"),
                          ("im1.png 1 2 3 4\nim2.png 5 5 1 9\n", "line 2: a box needs finite x0 < x1"),
                          ("im1.png 1 2 3 4\nim1.png 1 2 3 4\n", "line 2: a second box")):
        boxes.write_text(text)
        err = _error(["retrieve", str(cnn_map), str(photos), "--out", str(tmp_path / "p.txt"), "--boxes", str(boxes)])
        assert isinstance(err, InputError) and err.path == boxes and problem in err.problem, err
    err = _error(["retrieve", str(cnn_map), str(photos), "--out", str(tmp_path / "p.txt"),
                  "--boxes", str(tmp_path / "missing.txt")])
    assert isinstance(err, InputError) and err.path == tmp_path / "missing.txt"
    boxes.write_text("im1.png 500 500 600 600\n")  # outside the 128 x 96 image
    err = _error(["retrieve", str(cnn_map), str(photos), "--out", str(tmp_path / "p.txt"), "--boxes", str(boxes)])
    assert isinstance(err, InputError) and err.path == boxes and "im1.png" in err.problem
    assert not (tmp_path / "p.txt").exists()


def test_boxes_with_another_descriptor_are_a_clear_error(photos: Path, tmp_path: Path) -> None:
    build_map(photos, tmp_path / "vlad", MapConfig(extractor_options={"max_keypoints": 64}, points="none",
                                                   global_options={"num_clusters": 4}))
    boxes = tmp_path / "boxes.txt"
    boxes.write_text("im1.png 10 10 90 80\n")
    err = _error(["retrieve", str(tmp_path / "vlad"), str(photos), "--out", str(tmp_path / "p.txt"),
                  "--boxes", str(boxes)])
    assert isinstance(err, ConfigError) and "cnn global descriptor" in str(err) and "'vlad'" in str(err)
    with pytest.raises(ConfigError, match="cnn global descriptor"):
        Retriever(Map(tmp_path / "vlad")).describe(read_image(photos / "im1.png"), box=(0, 0, 10, 10))


def test_ivfpq_index_is_built_saved_and_loaded(photos: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "ivf"
    _ok(["map", "build", str(photos), "--out", str(out), "--points", "none", "--extractor-set", "max_keypoints=64",
         "--global-descriptor", "cnn", "--global-set", f"model={checkpoint}", "--global-set", "image_size=128",
         "--index", "ivfpq", "--index-option", "nlist=2", "--index-option", "m=4", "--index-option", "nbits=2",
         "--index-option", "nprobe=2"])
    m = Map(out)
    assert m.config.index == {"kind": "ivfpq", "nlist": 2, "m": 4, "nbits": 2, "nprobe": 2}
    assert m.index.kind == "ivfpq" and m.index.nprobe == 2 and len(m.index) == NUM
    assert isinstance(faiss.read_index(str(out / "global_index.faiss")), faiss.IndexIVFPQ)
    names, _ = Retriever(m, RetrievalConfig(num_retrieved=1))(m.global_descriptor("im4.png"))
    assert len(names) == 1
    # too few images for the lists: a clear error before any work
    err = _error(["map", "build", str(photos), "--out", str(tmp_path / "few"), "--points", "none",
                  "--index", "ivfpq", "--index-option", "nlist=16"])
    assert isinstance(err, ConfigError) and "6 database images are too few" in str(err) and "nlist=16" in str(err)
    assert not (tmp_path / "few" / "local_features.h5").exists()
    for args, problem in ((["--index", "hnsw"], "index kind"), (["--index-option", "lists=4"], "unknown key")):
        err = _error(["map", "build", str(photos), "--out", str(tmp_path / "bad"), "--points", "none", *args])
        assert isinstance(err, ConfigError) and problem in str(err)


def test_maps_built_without_an_index_setting_load_as_flat(cnn_map: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(cnn_map, old)
    manifest = json.loads((old / "map.json").read_text())
    del manifest["config"]["index"]
    (old / "map.json").write_text(json.dumps(manifest))
    m = Map(old)
    assert m.config.index == {} and m.config.index_config().kind == "flat" and m.index.kind == "flat"
