"""``visloc localize --method relpose | unified``: a map whose global descriptor is the relative-pose
encoder, regression of the retrieved pairs, the original fusion, and the unified estimate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visloc.datasets import load_frames
from visloc.errors import ConfigError
from visloc.geometry import pose_error
from visloc.geometry.relative_pose import relative_pose_label
from visloc.io.images import read_image
from visloc.localization import (
    LocalizeConfig,
    Localizer,
    Map,
    MapConfig,
    RelPoseEstimatorConfig,
    RetrievalConfig,
    UnifiedConfig,
    build_map,
)
from visloc.models.backbones import BackboneConfig
from visloc.models.relpose import RelPoseConfig
from visloc.training.pairs import PairSamplingConfig
from visloc.training.relpose import tiny_relpose_config, train_relpose

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def relpose_model(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A barely trained tiny model: these tests check the wiring, not the accuracy."""
    model = RelPoseConfig(BackboneConfig("tiny", "none", allow_random_init=True), hidden=64, dropout=0.0)
    config = tiny_relpose_config(model=model, epochs=1, resize=72, crop=64, batch_size=8, num_workers=0,
                                 pairs=PairSamplingConfig(max_pairs_per_scene=16), val_split=None,
                                 cache_images=True, progress=False)
    out = tmp_path_factory.mktemp("relpose")
    train_relpose(tiny_world, out, config)
    return out / "model.pt"


@pytest.fixture(scope="module")
def relpose_map(tiny_world: Path, relpose_model: Path, tiny_map_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("relpose_map") / "map"
    config = MapConfig(extractor_options=tiny_map_config.extractor_options, global_descriptor="relpose",
                       global_options={"model": str(relpose_model)})
    build_map(tiny_world, out, config, split="train")
    return out


def test_map_stores_raw_encoder_descriptors(relpose_map: Path) -> None:
    m = Map(relpose_map)
    encoder = m.make_global_descriptor()
    name = m.names[3]
    raw = encoder(read_image(m.image_paths[name]))
    np.testing.assert_allclose(m.global_descriptor(name), raw, rtol=1e-5, atol=1e-6)
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3  # raw, not normalised: the regression head needs it
    scores, idx = m.index.search(raw[None] / np.linalg.norm(raw), 1)
    assert m.names[idx[0][0]] == name and scores[0][0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("fusion", ["original", "metric"])
def test_oracle_regression_recovers_exact_poses(tiny_world: Path, relpose_map: Path, monkeypatch, fusion) -> None:
    """With the network replaced by the exact labels, regression + fusion must give the true pose: this
    checks label conventions, translation frames and the fusion wiring end to end."""
    # exact labels of whatever the barely trained encoder retrieves, large rotations included: no plausibility gate
    config = RelPoseEstimatorConfig(fusion=fusion, max_relative_rotation_deg=180.0)
    localizer = Localizer(Map(relpose_map), LocalizeConfig("relpose", config))
    frame = localizer.map.descriptor.translation_frame
    queries = load_frames(tiny_world, split="test").frames[:4]
    current = {}

    def oracle(query, map_):
        labels = [relative_pose_label(map_.poses[db], current["pose"], frame) for db in query.retrieved]
        return np.stack([t for t, _ in labels]), np.stack([q for _, q in labels])

    monkeypatch.setattr(localizer.estimator, "regress", oracle)
    for f in queries:
        current["pose"] = f.pose
        r = localizer.localize_image(read_image(f.image_path), f.camera, f.name)
        assert r.pose is not None, (f.name, r.status, r.retrieved)
        dt, dR = pose_error(r.pose, f.pose)
        assert dt < 1e-6 and dR < 1e-4, (f.name, dt, dR)
        assert r.support  # every ray agrees


def test_implausible_regressed_rotations_are_not_localized(tiny_world: Path, relpose_map: Path, monkeypatch) -> None:
    """A model that regresses 70 degree relative rotations to images retrieved for sharing the query's view
    (an undertrained one does) is not trusted: those images leave the fusion, and with none left the query is
    not localized."""
    localizer = Localizer(Map(relpose_map), LocalizeConfig("relpose"))
    f = load_frames(tiny_world, split="test").frames[0]
    half = np.radians(70.0) / 2
    turned = np.array([np.cos(half), 0.0, 0.0, np.sin(half)])

    def regress(query, map_):
        n = len(query.retrieved)
        return np.zeros((n, 3)), np.tile(turned, (n, 1))

    monkeypatch.setattr(localizer.estimator, "regress", regress)
    r = localizer.localize_image(read_image(f.image_path), f.camera, f.name)
    assert r.pose is None and "exceeds 45 deg" in r.status

    def one_plausible(query, map_):
        t, q = regress(query, map_)
        q[2] = (1.0, 0.0, 0.0, 0.0)
        return t, q

    monkeypatch.setattr(localizer.estimator, "regress", one_plausible)
    r = localizer.localize_image(read_image(f.image_path), f.camera, f.name)
    assert r.pose is not None and r.support == [r.retrieved[2]]


def test_unified_prefers_agreeing_geometry_and_falls_back(tiny_world: Path, relpose_map: Path, monkeypatch) -> None:
    queries = load_frames(tiny_world, split="test").frames[:3]
    # the barely trained model regresses large rotations: leave the plausibility gate out of this wiring test
    wiring = RelPoseEstimatorConfig(max_relative_rotation_deg=180.0)
    localizer = Localizer(Map(relpose_map), LocalizeConfig("unified", UnifiedConfig(
        relpose=wiring, strong_inliers=10**6, gate_m=100.0, gate_deg=180.0, support_images=10**6)))
    for f in queries:
        r = localizer.localize_image(read_image(f.image_path), f.camera, f.name)
        assert r.extra["chosen"] == "geometry" and r.extra["reason"] == "agrees with the prior"
        assert pose_error(r.pose, f.pose)[0] < 0.02
    # a prior gate nothing passes: geometry is still kept when several retrieved images support it
    gated = Localizer(Map(relpose_map), LocalizeConfig("unified", UnifiedConfig(
        relpose=wiring, strong_inliers=10**6, gate_m=0.0, gate_deg=0.0)))
    f = queries[0]
    r = gated.localize_image(read_image(f.image_path), f.camera, f.name)
    assert len(r.support) >= 2 and r.extra["chosen"] == "geometry" and "supporting images" in r.extra["reason"]
    assert pose_error(r.pose, f.pose)[0] < 0.02
    single = Localizer(Map(relpose_map), LocalizeConfig("unified", UnifiedConfig(
        relpose=wiring, strong_inliers=10**6, gate_m=0.0, gate_deg=0.0, support_images=10**6)))
    r = single.localize_image(read_image(f.image_path), f.camera, f.name)
    assert r.extra["chosen"] == "relpose" and "from the prior with weak support" in r.extra["reason"]
    # geometry failing (no 2D-3D match survives) -> the regressed pose is reported
    monkeypatch.setattr(localizer, "matcher", lambda feats, db, points_only=False: (np.zeros((0, 2), int), np.zeros(0)))
    f = queries[0]
    r = localizer.localize_image(read_image(f.image_path), f.camera, f.name)
    assert r.extra["chosen"] == "relpose" and r.pose is not None
    assert r.extra["geometry"] is None and "geometry failed" in r.extra["reason"]


def test_regression_methods_need_a_relpose_map(tiny_map: Path) -> None:
    with pytest.raises(ConfigError, match="relpose global descriptor"):
        Localizer(Map(tiny_map), LocalizeConfig(method="relpose"))


def test_correlation_head_map_stores_its_feature_map_and_searches_the_pooled_part(
    tiny_world: Path, tiny_map_config, tmp_path: Path
) -> None:
    import torch

    from visloc.models import RelPoseNet, save_model

    torch.manual_seed(0)
    config = RelPoseConfig(BackboneConfig("tiny", "none", allow_random_init=True), head="correlation", hidden=16,
                           correlation_grid=(6, 6))
    net = RelPoseNet(config).eval()
    model = save_model(tmp_path / "corr.pt", net, config)
    out = tmp_path / "map"
    build_map(tiny_world, out, MapConfig(extractor_options=tiny_map_config.extractor_options,
                                         global_descriptor="relpose", global_options={"model": str(model)}),
              split="train")
    m = Map(out)
    encoder = m.make_global_descriptor()
    name = m.names[2]
    raw = encoder(read_image(m.image_paths[name]))
    assert raw.shape == (net.descriptor_dim,) == (256 + 64 * 36,)
    np.testing.assert_allclose(m.global_descriptor(name), raw, rtol=1e-5, atol=1e-6)
    # the index holds the normalised pooled part only (the feature map is for the regression head)
    pooled = raw[: net.global_dim] / np.linalg.norm(raw[: net.global_dim])
    scores, idx = m.index.search(pooled[None].astype(np.float32), 1)
    assert m.names[idx[0][0]] == name and scores[0][0] == pytest.approx(1.0, abs=1e-5)
    # a database image as query retrieves itself first, and regression + fusion runs on the stored maps
    frame = next(f for f in load_frames(tiny_world, split="train").frames if f.name == name)
    r = Localizer(m, LocalizeConfig("relpose", RelPoseEstimatorConfig(fusion="metric", max_relative_rotation_deg=180.0))).localize_image(
        read_image(frame.image_path), frame.camera, name)
    assert r.retrieved[0] == name and r.pose is not None
    # dense re-ranking of a 10-image shortlist: the image itself has the most mutual nearest neighbours
    dense = encoder.rerank_scores(np.stack([m.global_descriptor(n) for n in m.names[:10]]), raw)
    assert dense.shape == (10,) and dense[2] == dense.max() and dense[2] > 0
    reranked = Localizer(m, LocalizeConfig("relpose", RelPoseEstimatorConfig(fusion="metric", max_relative_rotation_deg=180.0),
                                           RetrievalConfig(num_retrieved=3, rerank=10)))
    r = reranked.localize_image(read_image(frame.image_path), frame.camera, name)
    assert r.retrieved[0] == name and len(r.retrieved) == 3
    assert r.retrieval_scores == sorted(r.retrieval_scores, reverse=True)
    # the re-ranking belongs to the map's descriptor: the geometric method on this map uses it too
    pnp = Localizer(m, LocalizeConfig("pnp", retrieval=RetrievalConfig(num_retrieved=3, rerank=10)))
    r = pnp.localize_image(read_image(frame.image_path), frame.camera, name)
    assert r.retrieved[0] == name and r.retrieval_scores[0] == dense.max()
    with pytest.raises(ConfigError, match="rerank"):
        RetrievalConfig(rerank=-1)
