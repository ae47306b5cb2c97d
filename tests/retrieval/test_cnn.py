"""The ``cnn`` global descriptor (`visloc.retrieval.cnn`): each query mode of Publication III against an
independent computation on the network's own pieces (a random tiny RetrievalNet saved in tmp_path)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import visloc.retrieval.cnn as cnn_module
from visloc.errors import ConfigError, InputError
from visloc.models.checkpoint import save_model
from visloc.models.pooling import l2n, mac, saliency_map, weighted_rmac
from visloc.models.preprocess import long_side_tensor
from visloc.models.retrieval_net import RetrievalNet, RetrievalNetConfig
from visloc.retrieval import global_descriptors
from visloc.retrieval.attention import saliency_boxes
from visloc.retrieval.cnn import CNNDescriptor, CNNDescriptorConfig
from visloc.retrieval.whitening import apply_whitening

SIZE = 128  # the test image's longer side: image_size=SIZE means no resize (ratio 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = RetrievalNet(RetrievalNetConfig(pooling="gem", whitening_dim=16))
    with torch.no_grad():  # BatchNorm statistics of a trained net, not the identity of a fresh one
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return save_model(tmp_path_factory.mktemp("cnn") / "net.pt", net, net.config)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return np.kron(small, np.ones((8, 8, 1), np.uint8))  # 96 x 128, blocky


def _desc(checkpoint: Path, **options) -> CNNDescriptor:
    return global_descriptors.create("cnn", **{"model": str(checkpoint), "image_size": SIZE, **options})


def _input(image: np.ndarray) -> torch.Tensor:
    return long_side_tensor(image, SIZE)[None]


def test_missing_shipped_model_is_a_clear_input_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cnn_module, "shipped_model", lambda name: tmp_path / name)
    with pytest.raises(InputError, match=r"retrieval_tiny_world\.pt: retrieval model not found"):
        CNNDescriptor()
    with pytest.raises(InputError, match=r"nope\.pt"):
        CNNDescriptor(CNNDescriptorConfig(model=str(tmp_path / "nope.pt")))


def test_config_is_checked_and_scales_parse() -> None:
    assert CNNDescriptorConfig(scales="0.5, 1,1.5").scales == (0.5, 1.0, 1.5)
    assert CNNDescriptorConfig(scales=2).scales == (2.0,)
    assert CNNDescriptorConfig(scales=[1, 0.5]).scales == (1.0, 0.5)
    for bad in ({"pooling": "max"}, {"query": "crop"}, {"database": "boxes"}, {"whitening": "lw"},
                {"scales": "a,b"}, {"scales": ()}, {"scales": (1.0, -1.0)}, {"image_size": -1},
                {"saliency_threshold": 1.0}):
        with pytest.raises(ConfigError):
            CNNDescriptorConfig(**bad)


def test_image_size_defaults_to_the_training_size(checkpoint: Path, tmp_path: Path) -> None:
    from visloc.models.checkpoint import load_model

    net = load_model(checkpoint)
    trained = save_model(tmp_path / "trained.pt", net, net.config, metrics={"preprocess": {"image_size": 96}})
    assert global_descriptors.create("cnn", model=str(trained)).image_size == 96
    assert global_descriptors.create("cnn", model=str(trained), image_size=64).image_size == 64
    assert global_descriptors.create("cnn", model=str(checkpoint)).image_size == 320  # none recorded


def test_model_pooling_is_the_network_and_no_box_is_the_full_query(checkpoint: Path, image: np.ndarray) -> None:
    d = _desc(checkpoint)
    with torch.no_grad():
        expected = d.net(_input(image))[0].numpy()
    np.testing.assert_allclose(d(image), expected, atol=1e-5)
    assert d(image).dtype == np.float32 and d(image).shape == (16,)
    for mode in cnn_module.QUERY_MODES:
        np.testing.assert_allclose(_desc(checkpoint, query=mode).describe_query(image), expected, atol=1e-5)


def test_attention_without_modulation_is_the_full_query_weighted_rmac(checkpoint: Path, image: np.ndarray) -> None:
    d = _desc(checkpoint, pooling="mac", query="attention_wrmac", lambda1=1.0, lambda2=0.0)
    with torch.no_grad():
        fmap = d.net.features(_input(image))
        expected = weighted_rmac(fmap, saliency_map(fmap), levels=3)[0].numpy()
    np.testing.assert_allclose(d.describe_query(image, (20, 10, 70, 60)), expected, atol=1e-5)
    # and the wrmac pooling of the database is the same descriptor
    np.testing.assert_allclose(_desc(checkpoint, pooling="wrmac")(image), expected, atol=1e-5)


def test_attention_query_against_a_hand_written_second_pass(checkpoint: Path, image: np.ndarray) -> None:
    box = (40, 20, 100, 70)  # tap stride 16, ratio 1: cells x 2.5 -> 2, 6.25 -> 6; y 1.25 -> 1, 4.375 -> 4
    d = _desc(checkpoint, pooling="mac", query="attention_wrmac")
    with torch.no_grad():
        f = d.net.features_until_tap(_input(image)).clamp(min=0)
        s = f.sum(1, keepdim=True)
        s = s / s.amax()
        f2 = f * (0.5 + 0.4 * s**4)
        f2[..., 1:4, 2:6] = f[..., 1:4, 2:6]
        last = d.net.features_from_tap(f2)
        expected = weighted_rmac(last, saliency_map(last), levels=3)[0].numpy()
        full = weighted_rmac(d.net.features(_input(image)), saliency_map(d.net.features(_input(image))), 3)[0]
    got = d.describe_query(image, box)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, full.numpy(), atol=1e-3)  # the attention changed the descriptor
    # "attention" pools the same second pass with the configured pooling (MAC here)
    np.testing.assert_allclose(_desc(checkpoint, pooling="mac", query="attention").describe_query(image, box),
                               l2n(mac(last))[0].numpy(), atol=1e-5)


def test_cropped_roi_is_the_description_of_the_cropped_image(checkpoint: Path, image: np.ndarray) -> None:
    box = (16, 8, 96, 72)
    crop = image[8:72, 16:96]
    got = _desc(checkpoint, query="cropped_roi").describe_query(image, box)
    # the crop keeps the scale of the resized query (Gordo et al.'s loader): describe it at its own size
    whole = global_descriptors.create("cnn", model=str(checkpoint), image_size=max(crop.shape[:2]))
    np.testing.assert_allclose(got, whole.describe_query(crop), atol=1e-5)


def test_cropped_activation_pools_the_sliced_last_map(checkpoint: Path, image: np.ndarray) -> None:
    box = (40, 20, 120, 90)  # last map stride 32: x 1.25 -> 1, 3.75 -> 4; y 0.625 -> 1, 2.8125 -> 3
    d = _desc(checkpoint, pooling="mac", query="cropped_activation")
    assert d.last_stride == 32 and d.tap_stride == 16
    with torch.no_grad():
        fmap = d.net.features(_input(image))
    np.testing.assert_allclose(d.describe_query(image, box), l2n(mac(fmap[..., 1:3, 1:4]))[0].numpy(), atol=1e-6)


def test_multiscale_is_the_normalised_sum_of_single_scales(checkpoint: Path, image: np.ndarray) -> None:
    multi = _desc(checkpoint, scales=(0.5, 1.0), query="attention_wrmac")
    singles = [global_descriptors.create("cnn", model=str(checkpoint), image_size=size) for size in (64, 128)]
    box = (30, 20, 90, 80)
    for describe, parts in ((multi, [s(image) for s in singles]),
                            (multi.describe_query, [s.describe_query(image) for s in singles])):
        total = np.sum(parts, axis=0)
        np.testing.assert_allclose(describe(image), total / np.linalg.norm(total), atol=1e-5)
    box_parts = [_desc(checkpoint, image_size=size, query="attention_wrmac").describe_query(image, box)
                 for size in (64, 128)]
    total = np.sum(box_parts, axis=0)
    np.testing.assert_allclose(multi.describe_query(image, box), total / np.linalg.norm(total), atol=1e-5)


def test_database_saliency_boxes_add_the_attended_descriptor_of_each_blob(checkpoint: Path, image: np.ndarray) -> None:
    d = _desc(checkpoint, pooling="mac", database="saliency_boxes", saliency_threshold=0.5)
    with torch.no_grad():
        tap = d.net.features_until_tap(_input(image))
        last = d.net.features_from_tap(tap)
    boxes = saliency_boxes(saliency_map(last)[0], tuple(tap.shape[-2:]), 0.5, 200)
    assert boxes
    query = _desc(checkpoint, pooling="mac", query="attention_wrmac")
    # ratio 1: a box of tap cells is the pixel box cells * 16
    parts = [_desc(checkpoint, pooling="mac")(image)]
    parts += [query.describe_query(image, tuple(16 * np.array(b, float))) for b in boxes]
    total = np.sum(parts, axis=0)
    np.testing.assert_allclose(d(image), total / np.linalg.norm(total), atol=1e-5)


def test_bad_boxes_are_value_errors(checkpoint: Path, image: np.ndarray) -> None:
    d = _desc(checkpoint)
    for box in ((10, 10, 5, 20), (0, 0, 10), (0, 0, np.nan, 5), (200, 200, 300, 300)):
        with pytest.raises(ValueError):
            d.describe_query(image, box)
    # a box over the border is clipped
    np.testing.assert_allclose(d.describe_query(image, (-50, -50, 500, 500)), d.describe_query(image, (0, 0, 128, 96)))


def test_pca_whitening_state_round_trips_and_whitens_queries_like_the_database(
        checkpoint: Path, tmp_path: Path, caplog) -> None:
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((30, 16)).astype(np.float32)
    d = _desc(checkpoint, whitening="pca", whitening_dim=8)
    assert d.fits_on_vectors and not _desc(checkpoint).fits_on_vectors
    with pytest.raises(RuntimeError, match="not fitted"):
        d.retrieval_part(raw)
    d.fit_vectors(raw)
    np.savez(tmp_path / "state.npz", **d.state())
    with np.load(tmp_path / "state.npz", allow_pickle=False) as f:
        e = _desc(checkpoint, whitening="pca", whitening_dim=8).load_state(**{k: f[k] for k in f.files})
    db, q = d.retrieval_part(raw), e.retrieval_part(raw[3:4] + 0.01)
    assert db.shape == (30, 8) and db.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(db, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(e.retrieval_part(raw), db, atol=1e-6)
    np.testing.assert_allclose(db, apply_whitening(raw, *d.state().values()), atol=1e-6)
    assert int(np.argmax(db @ q[0])) == 3
    # more dimensions than N - 1 are not asked of N vectors
    with caplog.at_level(logging.WARNING):
        few = _desc(checkpoint, whitening="pca", whitening_dim=16).fit_vectors(raw[:5])
    assert few.state()["whitening_projection"].shape == (4, 16) and "keeping 4" in caplog.text
    with pytest.raises(ConfigError, match="at least 2"):
        _desc(checkpoint, whitening="pca").fit_vectors(raw[:1])


def test_shipped_model_is_the_default_and_finds_the_room_of_each_test_frame(tiny_world: Path) -> None:
    """The shipped network (trained on the seed-0 world's rooms) describes the test frames of the tiny world
    (seed 3: rooms it never saw) close to database frames of their own room and place; truth from the poses
    (the place rule). A descriptor blind to content gets about 50 % of the rooms (two rooms)."""
    import json

    from visloc.datasets import load_frames
    from visloc.evaluation.place_recall import correct_database_images
    from visloc.io.images import read_image
    from visloc.settings import shipped_model

    d = global_descriptors.create("cnn")
    meta = json.loads(shipped_model("retrieval_tiny_world.pt").with_suffix(".json").read_text())
    assert d.path == shipped_model("retrieval_tiny_world.pt") and d.image_size == meta["image_size"]
    db, queries = load_frames(tiny_world, "train").frames, load_frames(tiny_world, "test").frames
    dv = np.stack([d(read_image(f.image_path)) for f in db])
    qv = np.stack([d.describe_query(read_image(f.image_path)) for f in queries])
    assert dv.shape[1] == 128 and np.allclose(np.linalg.norm(qv, axis=1), 1, atol=1e-5)
    top = np.argsort(-(qv @ dv.T), axis=1)[:, :5]
    same_room = np.mean([db[t[0]].scene == q.scene for t, q in zip(top, queries, strict=True)])
    good = correct_database_images([q.pose for q in queries], [q.scene for q in queries],
                                   [f.pose for f in db], [f.scene for f in db])
    recall5 = np.mean([bool(set(t) & g) for t, g in zip(top.tolist(), good, strict=True)])
    print(f"same room top-1 {same_room:.2f}, place R@5 {recall5:.2f}")
    assert same_room >= 0.9 and recall5 >= 0.7
