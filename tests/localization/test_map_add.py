"""``visloc map add``: images added to a finished map equal what a build computes for them, with the map's fitted
state; the map stays consistent through interruptions, and a rerun adds nothing.

The main map holds every fourth training frame of the tiny world; the other three quarters are added. Truths
come from elsewhere: the full training map (``tiny_map``: the extractor's output and the depth points do not
depend on the fit), the VLAD codebook of the quarter map applied by hand, and the world's ground truth."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from visloc.cli import app
from visloc.datasets import FrameSet, load_frames
from visloc.errors import ConfigError, InputError
from visloc.evaluation import evaluate_localization
from visloc.io.h5 import list_h5_names
from visloc.io.poses import read_poses
from visloc.localization import AddSummary, LocalizeConfig, Map, add_to_map, build_map, extend, localize
from visloc.localization import map as M
from visloc.retrieval import GlobalIndex, global_descriptors
from visloc.retrieval.large_index import LargeIndexConfig, build_ondisk, trained_part

VISLOC = Path(sys.executable).with_name("visloc")


class Killed(BaseException):
    """Stands for a kill (Ctrl-C, SIGKILL) at a chosen point of a run."""


def _subset(frames: FrameSet, chosen: list) -> FrameSet:
    return FrameSet(frames.root, list(chosen), format=frames.format)


def _first(train: FrameSet) -> FrameSet:
    """Every fourth training frame: the map's images."""
    return _subset(train, train.frames[0::4])


def _rest(train: FrameSet) -> FrameSet:
    """The other training frames: the images added."""
    return _subset(train, [f for i, f in enumerate(train.frames) if i % 4])


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _lines(path: Path) -> dict[str, str]:
    return {line.split()[0]: line for line in path.read_text().splitlines() if line.strip()}


@pytest.fixture(scope="module")
def train(tiny_world: Path) -> FrameSet:
    return load_frames(tiny_world, split="train")


@pytest.fixture(scope="module")
def quarter(train: FrameSet, tiny_map_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quarter") / "map"
    build_map(_first(train), out, tiny_map_config)
    return out


@pytest.fixture(scope="module")
def extended(quarter: Path, train: FrameSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AddSummary]:
    out = tmp_path_factory.mktemp("extended") / "map"
    shutil.copytree(quarter, out)
    return out, add_to_map(out, _rest(train))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_added_images_are_in_every_file_once(extended, quarter: Path, train: FrameSet) -> None:
    root, summary = extended
    first, rest = _first(train).names, _rest(train).names
    assert (summary.num_added, summary.num_images, summary.num_present, summary.skipped) == (36, 48, 0, [])
    assert summary.points == "depth"
    m = Map(root)
    try:
        assert m.names == first + rest
        for file in (M.LOCAL_FEATURES, M.GLOBAL_FEATURES, M.POINTS3D):
            assert sorted(list_h5_names(root / file)) == sorted(m.names), file
        assert list(m.poses) == m.names and list(m.cameras) == m.names
        assert len(m.index) == m.index.index.ntotal == 48
        assert set(m.scenes) == set(m.image_paths) == set(m.names)
    finally:
        m.close()
    for file in (M.POSES, M.CAMERAS):  # the map's own lines are kept byte for byte
        assert (root / file).read_text().startswith((quarter / file).read_text()), file
    manifest = json.loads((root / M.MANIFEST).read_text())
    assert manifest["additions"][0]["num_images"] == 36 and manifest["additions"][0]["skipped"] == []
    assert not (root / M.ADD_STAGING).exists() and not (root / extend.ADD_LOCK).exists()


def test_added_features_points_poses_equal_a_full_build(extended, quarter: Path, tiny_map: Path) -> None:
    """Local features, depth points, poses and cameras do not depend on the fit: those of the added images
    equal the full training map's, and the first images keep their own."""
    root, _ = extended
    ext, full, q = Map(root), Map(tiny_map), Map(quarter)
    try:
        assert sorted(ext.names) == sorted(full.names)
        for n in ext.names:
            a, b = ext.local_features(n), full.local_features(n)
            np.testing.assert_array_equal(a.keypoints, b.keypoints)
            np.testing.assert_array_equal(a.descriptors, b.descriptors)
            np.testing.assert_array_equal(a.scores, b.scores)
            np.testing.assert_array_equal(ext.points3D(n), full.points3D(n))
        for n in q.names:
            np.testing.assert_array_equal(ext.global_descriptor(n), q.global_descriptor(n))
    finally:
        for m in (ext, full, q):
            m.close()
    for file in (M.POSES, M.CAMERAS):
        assert _lines(root / file) == _lines(tiny_map / file), file


def test_added_global_descriptors_use_the_maps_fitted_codebook(extended, quarter: Path, tiny_map: Path,
                                                               train: FrameSet) -> None:
    root, _ = extended
    assert (root / M.GLOBAL_STATE).read_bytes() == (quarter / M.GLOBAL_STATE).read_bytes()  # not refitted
    with np.load(quarter / M.GLOBAL_STATE) as state:
        centroids = state["centroids"]
    with np.load(tiny_map / M.GLOBAL_STATE) as state:  # a refit on all images gives another codebook
        assert not np.array_equal(state["centroids"], centroids)
    vlad = global_descriptors.create("vlad").load_state(centroids=centroids)
    m = Map(root)
    try:
        rest = _rest(train).names
        stored = np.stack([m.global_descriptor(n) for n in rest])
        by_hand = np.stack([vlad(None, m.local_features(n)) for n in rest]).astype(np.float32)
        np.testing.assert_array_equal(stored, by_hand)
        rows = [m.names.index(n) for n in rest]
        np.testing.assert_allclose(m.index.vectors(rows), _unit(by_hand), rtol=0, atol=1e-6)
        # each added image's own descriptor finds it first
        _, found = m.index.search(_unit(by_hand), 1)
        assert [m.names[i] for i in found[:, 0]] == rest
    finally:
        m.close()


def test_localization_on_the_extended_map_is_at_least_as_accurate(extended, quarter: Path, tiny_world: Path,
                                                                  tmp_path: Path) -> None:
    truth = load_frames(tiny_world, split="test").poses()
    runs = {}
    for name, root in (("quarter", quarter), ("extended", extended[0])):
        out = tmp_path / f"{name}.txt"
        summary = localize(root, tiny_world, out, LocalizeConfig(method="pnp"), split="test")
        runs[name] = (summary.num_localized, evaluate_localization(read_poses(out), truth))
    assert runs["extended"][0] >= runs["quarter"][0]
    for scene, stats in runs["extended"][1].scenes.items():
        before = runs["quarter"][1].scenes[scene]
        assert stats.median_t_m <= before.median_t_m, scene
        assert stats.median_R_deg <= before.median_R_deg, scene


def test_rerun_adds_nothing_and_leaves_the_map_untouched(extended, train: FrameSet) -> None:
    root, _ = extended
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.iterdir()}
    again = add_to_map(root, _rest(train))
    assert (again.num_added, again.num_present, again.num_images, again.skipped) == (0, 36, 48, [])
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.iterdir()} == before


def test_building_an_extended_map_again_is_refused_before_any_change(extended, train: FrameSet, tiny_map_config,
                                                                    tmp_path: Path) -> None:
    """A build over the extended folder from the map's own data set would write a manifest without the added
    images: refused, naming the manifest and the count, the map left as it was."""
    root, summary = extended
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.iterdir()}
    with pytest.raises(InputError, match=f"{summary.num_added} images added by `visloc map add`") as refused:
        build_map(_first(train), root, tiny_map_config)
    assert refused.value.path == root / M.MANIFEST
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.iterdir()} == before
    assert len(Map(root).names) == summary.num_images == 48


def test_interrupted_commit_is_completed_by_the_next_run(extended, quarter: Path, train: FrameSet, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, same_map) -> None:
    root = _copy(quarter, tmp_path / "map")
    moved: list[str] = []

    def replace(src: Path, dst: Path) -> None:  # killed after two of the staged files were moved in
        if len(moved) == 2:
            raise Killed
        moved.append(Path(dst).name)
        os.replace(src, dst)

    monkeypatch.setattr(extend, "os", SimpleNamespace(replace=replace))
    with pytest.raises(Killed):
        add_to_map(root, _rest(train))
    monkeypatch.undo()
    assert moved == [M.LOCAL_FEATURES, M.GLOBAL_FEATURES]
    with pytest.raises(InputError, match="interrupted"):  # names never disagree with the files: no manifest
        Map(root)
    again = add_to_map(root, _rest(train))
    assert (again.num_added, again.num_images) == (0, 48)
    same_map(root, extended[0])
    assert not (root / M.ADD_STAGING).exists()


def test_interruption_before_the_commit_leaves_the_map_as_it_was(extended, quarter: Path, train: FrameSet,
                                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 same_map) -> None:
    root = _copy(quarter, tmp_path / "map")

    def killed(*args, **kwargs) -> None:
        raise Killed

    monkeypatch.setattr(extend, "_stage_points", killed)
    with pytest.raises(Killed):
        add_to_map(root, _rest(train))
    monkeypatch.undo()
    same_map(root, quarter)
    assert (root / M.ADD_STAGING).is_dir()
    summary = add_to_map(root, _rest(train))  # resumes the staged extraction
    assert summary.num_added == 36
    same_map(root, extended[0])


def test_triangulated_points_of_added_images_equal_a_full_build(train: FrameSet, tiny_map_config,
                                                                tmp_path: Path) -> None:
    config = dataclasses.replace(tiny_map_config, points="triangulate")
    build_map(_first(train), tmp_path / "quarter", config)
    root = _copy(tmp_path / "quarter", tmp_path / "extended")
    assert add_to_map(root, _rest(train)).points == "triangulate"
    build_map(train, tmp_path / "full", config)
    ext, full, q = Map(root), Map(tmp_path / "full"), Map(tmp_path / "quarter")
    try:
        found = 0
        for n in _rest(train).names:  # a point depends only on its image's pairs, which the build also forms;
            # the map's own poses come from poses.txt (10 significant digits), the build's from the reader
            np.testing.assert_allclose(ext.points3D(n), full.points3D(n), rtol=1e-6, atol=1e-6)
            found += int(np.isfinite(ext.points3D(n)[:, 0]).sum())
        assert found > 0
        for n in q.names:  # the first images keep theirs
            np.testing.assert_array_equal(ext.points3D(n), q.points3D(n))
    finally:
        for m in (ext, full, q):
            m.close()


@pytest.mark.parametrize("where", ["ivfpq", "ondisk"])
def test_approximate_indexes_encode_the_new_images_with_their_quantizers(train: FrameSet, tiny_map_config,
                                                                         tmp_path: Path, where: str) -> None:
    """The extended index answers as an index with the same trained quantizers fed every vector in row order."""
    index = {"kind": "ivfpq", "nlist": 2, "m": 64, "nbits": 3, "nprobe": 2} if where == "ivfpq" else {}
    root = tmp_path / "map"
    build_map(_first(train), root, dataclasses.replace(tiny_map_config, index=index))
    old = Map(root)
    first_names, first_vectors = old.names, old.index.vectors(range(len(old.names)))
    old.close()
    if where == "ondisk":
        (root / M.GLOBAL_INDEX).unlink()
        build_ondisk([first_vectors], root / M.GLOBAL_INDEX, LargeIndexConfig(nlist=2, m=64, nbits=3, pca_dim=0,
                                                                              nprobe=2), sample=first_vectors)
    before = GlobalIndex.load(root / M.GLOBAL_INDEX, first_names)
    old_lists = before.lists_file
    reference = trained_part(before.index)  # the quantizers without the (in-memory or mapped) lists
    del before
    add_to_map(root, _rest(train))
    m = Map(root)
    try:
        assert m.index.kind == "ivfpq" and len(m.index) == 48
        raw = np.stack([m.global_descriptor(n) for n in m.names[len(first_names):]])
        vectors = np.concatenate([first_vectors, _unit(raw)])
        reference.add(vectors)
        expected = GlobalIndex.from_faiss(reference, m.names).search(vectors, 5)
        got = m.index.search(vectors, 5)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
        lists = m.index.lists_file
        if where == "ondisk":  # extended on disk: the next generation's lists file replaced the old one
            assert lists is not None and old_lists is not None and lists.name != old_lists.name
            assert sorted(p.name for p in root.glob("*.ivfdata")) == [lists.name]
        else:
            assert lists is None
    finally:
        m.close()


def test_a_whitened_cnn_map_indexes_the_new_images_with_its_fitted_whitening(train: FrameSet, tiny_map_config,
                                                                            tmp_path: Path) -> None:
    """The raw network vectors do not depend on the fit (they equal a full build's); the index holds them
    whitened with the map's PCA, which is not refitted."""
    import torch

    from visloc.models.checkpoint import save_model
    from visloc.models.retrieval_net import RetrievalNet, RetrievalNetConfig
    from visloc.retrieval.whitening import apply_whitening

    torch.manual_seed(0)
    net = RetrievalNet(RetrievalNetConfig(pooling="gem", whitening_dim=16))
    model = save_model(tmp_path / "net.pt", net, net.config)
    config = dataclasses.replace(tiny_map_config, global_descriptor="cnn", global_options={
        "model": str(model), "image_size": 128, "whitening": "pca"})
    first, added = _first(train).frames, _rest(train).frames[:12]
    build_map(_subset(train, first), tmp_path / "quarter", config)
    root = _copy(tmp_path / "quarter", tmp_path / "extended")
    assert add_to_map(root, _subset(train, added)).num_added == 12
    build_map(_subset(train, first + added), tmp_path / "full", config)
    assert (root / M.GLOBAL_STATE).read_bytes() == (tmp_path / "quarter" / M.GLOBAL_STATE).read_bytes()
    with np.load(root / M.GLOBAL_STATE) as state:
        mean, projection = state["whitening_mean"], state["whitening_projection"]
    ext, full = Map(root), Map(tmp_path / "full")
    try:
        names = [f.name for f in added]
        raw = np.stack([ext.global_descriptor(n) for n in names])
        np.testing.assert_array_equal(raw, np.stack([full.global_descriptor(n) for n in names]))
        whitened = _unit(apply_whitening(raw, mean, projection))
        rows = [ext.names.index(n) for n in names]
        np.testing.assert_allclose(ext.index.vectors(rows), whitened, atol=1e-5)
        _, found = ext.index.search(whitened, 1)
        assert [ext.names[i] for i in found[:, 0]] == names
    finally:
        ext.close()
        full.close()


def test_unreadable_and_unposed_images_are_skipped_and_the_rest_added(quarter: Path, train: FrameSet,
                                                                      tmp_path: Path) -> None:
    root = _copy(quarter, tmp_path / "map")
    rest = _rest(train).frames[:4]
    broken = tmp_path / "broken.png"
    broken.write_bytes(rest[0].image_path.read_bytes()[:200])  # a truncated PNG
    frames = [dataclasses.replace(rest[0], image_path=broken), dataclasses.replace(rest[1], pose=None), *rest[2:]]
    summary = add_to_map(root, _subset(train, frames))
    assert summary.num_added == 2 and summary.num_images == 14
    assert sorted(s.name for s in summary.skipped) == sorted([rest[0].name, rest[1].name])
    assert any(str(broken) in str(s) for s in summary.skipped)
    m = Map(root)
    try:
        assert m.names == _first(train).names + [f.name for f in rest[2:]]
        for file in (M.LOCAL_FEATURES, M.GLOBAL_FEATURES, M.POINTS3D):
            assert sorted(list_h5_names(root / file)) == sorted(m.names), file
        assert len(m.index) == 14
    finally:
        m.close()
    manifest = (root / M.MANIFEST).read_bytes()
    nothing = add_to_map(root, _subset(train, frames[:1]))  # none readable: nothing added, not an error
    assert (nothing.num_added, nothing.num_images, [s.name for s in nothing.skipped]) == (0, 14, [rest[0].name])
    assert (root / M.MANIFEST).read_bytes() == manifest and not (root / M.ADD_STAGING).exists()


def test_a_retrieval_only_map_takes_images_without_poses(train: FrameSet, tiny_map_config, tmp_path: Path) -> None:
    unposed = [dataclasses.replace(f, pose=None) for f in train.frames[:8]]
    root = tmp_path / "map"
    build_map(_subset(train, unposed[:4]), root, tiny_map_config)
    summary = add_to_map(root, _subset(train, unposed[4:]))
    assert (summary.num_added, summary.points) == (4, "none")
    m = Map(root)
    try:
        assert m.names == [f.name for f in unposed] and not m.has_poses and not m.has_points
        assert len(m.index) == 8 and list(m.cameras) == m.names
    finally:
        m.close()
    assert (root / M.POSES).read_text() == ""


def test_bad_maps_and_inputs_are_refused_before_any_work(quarter: Path, train: FrameSet, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such map folder") as err:
        add_to_map(tmp_path / "nothing", _rest(train))
    assert str(tmp_path / "nothing") in str(err.value)
    incomplete = _copy(quarter, tmp_path / "incomplete")
    (incomplete / M.MANIFEST).unlink()
    with pytest.raises(InputError, match="not a complete visloc map"):
        add_to_map(incomplete, _rest(train))
    augmented = _copy(quarter, tmp_path / "dba")
    manifest = json.loads((augmented / M.MANIFEST).read_text())
    manifest["config"]["index"] = {"dba_k": 2}
    (augmented / M.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="dba_k=2"):
        add_to_map(augmented, _rest(train))
    no_depth = _copy(quarter, tmp_path / "no_depth")
    with pytest.raises(InputError, match="registered depth"):
        add_to_map(no_depth, _subset(train, [dataclasses.replace(f, depth_path=None) for f in _rest(train).frames]))
    for root in (incomplete, augmented, no_depth):
        assert not (root / M.ADD_STAGING).exists() and not (root / extend.ADD_LOCK).exists()


def test_cli_adds_the_odd_frames_to_a_map_of_the_even_ones(tiny_world: Path, tiny_map_config, tmp_path: Path) -> None:
    root = tmp_path / "map"
    build_map(tiny_world, root, tiny_map_config, split="even")
    runner = CliRunner()
    result = runner.invoke(app, ["map", "add", str(root), str(tiny_world), "--split", "odd"])
    assert result.exit_code == 0, result.output
    assert f"added 30 images (depth points) to {root}, now 60; 0 already in it, 0 skipped" in result.output
    m = Map(root)
    try:
        assert m.names == load_frames(tiny_world, split="even").names + load_frames(tiny_world, split="odd").names
    finally:
        m.close()
    again = runner.invoke(app, ["map", "add", str(root), str(tiny_world), "--split", "all"])
    assert again.exit_code == 0, again.output
    assert f"added 0 images (depth points) to {root}, now 60; 60 already in it, 0 skipped" in again.output


def test_installed_command_on_a_missing_map_exits_2_naming_it(tiny_world: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_map"
    done = subprocess.run([str(VISLOC), "map", "add", str(missing), str(tiny_world)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"{missing}: no such map folder" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
