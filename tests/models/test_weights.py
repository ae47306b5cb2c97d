"""Weights policy: hub cache only, explicit random init, state-dict files; no network."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from visloc.errors import ConfigError, InputError
from visloc.models import (
    BackboneConfig,
    PoseNetConfig,
    RelPoseConfig,
    build_backbone,
    download_weights,
    imagenet_cache_path,
    save_model,
)

TINY = BackboneConfig("tiny", weights="none", allow_random_init=True)


def _assert_same_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    assert set(own) == set(state)
    for k, v in state.items():
        assert torch.equal(own[k], v), k


# --- ImageNet weights -----------------------------------------------------------------------------


def test_cache_path_is_the_torchvision_file_name(hub: Path) -> None:
    assert imagenet_cache_path("resnet18") == hub / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_cache_path("resnet34").name == "resnet34-b627a593.pth"
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        imagenet_cache_path("tiny")


def test_imagenet_cache_hit(hub: Path) -> None:
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).state_dict()  # with the fc classifier
    # like torchvision's 2017 file: legacy serialisation, no batch-norm counters (pre PyTorch 0.4)
    old_style = {k: v for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    path = hub / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(old_style, path, _use_new_zipfile_serialization=False)
    net = build_backbone(BackboneConfig("resnet18", weights="imagenet"))
    assert net.initialised_from == f"imagenet:{path}"
    _assert_same_state(net.body, {k: v for k, v in reference.items() if not k.startswith("fc.")})


def test_imagenet_cache_miss_names_file_and_alternatives(hub: Path) -> None:
    with pytest.raises(InputError) as info:
        build_backbone(BackboneConfig("resnet34", weights="imagenet"))
    expected = hub / "checkpoints" / "resnet34-b627a593.pth"
    assert info.value.path == expected
    message = str(info.value)
    assert str(expected) in message
    assert "weights=<path" in message and "allow_random_init=True" in message
    assert "download_weights('resnet34')" in message


def test_imagenet_cache_miss_with_random_init_allowed_warns(hub: Path) -> None:
    with pytest.warns(UserWarning, match="not in the torch hub cache; starting from random weights"):
        net = build_backbone(BackboneConfig("mobilenet_v2", weights="imagenet", allow_random_init=True))
    assert net.initialised_from == "random"


def test_random_init_must_be_asked_for(hub: Path) -> None:
    with pytest.raises(ConfigError, match="allow_random_init=True"):
        build_backbone(BackboneConfig("tiny", weights="none"))
    with pytest.raises(ConfigError, match="'tiny' has no ImageNet weights"):
        build_backbone(BackboneConfig("tiny", weights="imagenet", allow_random_init=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_backbone(TINY).initialised_from == "random"


def test_download_weights_fills_the_cache_once(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(2)
    reference = torchvision.models.mobilenet_v2(weights=None).state_dict()
    calls = []

    def fake_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, dst, hash_prefix))
        torch.save(reference, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = download_weights("mobilenet_v2", progress=False)
    expected = hub / "checkpoints" / "mobilenet_v2-7ebf99e0.pth"
    assert path == expected and path.is_file()
    assert calls == [
        ("https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth", str(expected), "7ebf99e0")
    ]
    net = build_backbone(BackboneConfig("mobilenet_v2", weights="imagenet"))
    _assert_same_state(net.body, {k: v for k, v in reference.items() if not k.startswith("classifier.")})
    assert download_weights("mobilenet_v2") == expected
    assert len(calls) == 1  # already cached: no second download


# --- weights from a file --------------------------------------------------------------------------


def test_weights_from_file_in_both_namings(tmp_path: Path, hub: Path) -> None:
    torch.manual_seed(3)
    source = build_backbone(TINY)
    as_backbone, as_body = tmp_path / "backbone.pt", tmp_path / "body.pt"
    torch.save(source.state_dict(), as_backbone)  # keys "body.*"
    torch.save(source.body.state_dict(), as_body)  # torchvision-style keys
    for path in (as_backbone, as_body):
        torch.manual_seed(4)
        net = build_backbone(BackboneConfig("tiny", weights=str(path)))
        assert net.initialised_from == f"file:{path}"
        _assert_same_state(net, source.state_dict())


def test_encoder_of_a_trained_visloc_model_initialises_a_backbone(tmp_path: Path, hub: Path) -> None:
    from visloc.models import PoseNet, RelPoseNet

    torch.manual_seed(5)
    trained = RelPoseNet(RelPoseConfig(backbone=TINY, hidden=16))
    path = save_model(tmp_path / "relpose.pt", trained, trained.config)
    # fine-tuning: a correlation-head model whose encoder starts from the trained one
    torch.manual_seed(6)
    tuned = RelPoseNet(RelPoseConfig(backbone=BackboneConfig("tiny", weights=str(path)), head="correlation",
                                     hidden=16, correlation_grid=(4, 4)))
    _assert_same_state(tuned.encoder, trained.encoder.state_dict())
    # a visloc model without an encoder is refused, naming the file
    posenet = PoseNet(PoseNetConfig(backbone=TINY, hidden=8))
    no_encoder = save_model(tmp_path / "posenet.pt", posenet, posenet.config)
    state = torch.load(no_encoder, weights_only=True)
    state["state_dict"] = {k.replace("encoder.", "trunk.", 1): v for k, v in state["state_dict"].items()}
    torch.save(state, no_encoder)
    with pytest.raises(InputError, match=r"posenet\.pt: visloc model has no 'encoder' weights"):
        build_backbone(BackboneConfig("tiny", weights=str(no_encoder)))


def test_file_errors_name_the_file(tmp_path: Path, hub: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(InputError, match=r"nope\.pt: weights file not found") as info:
        build_backbone(BackboneConfig("tiny", weights=str(missing)))
    assert info.value.path == missing

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(InputError, match=r"garbage\.pt: weights file is not a readable torch file"):
        build_backbone(BackboneConfig("tiny", weights=str(garbage)))

    not_a_state = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_a_state)
    with pytest.raises(InputError, match=r"list\.pt: weights file is not a state dict"):
        build_backbone(BackboneConfig("tiny", weights=str(not_a_state)))


class _Custom:
    pass


def test_files_are_read_with_weights_only(tmp_path: Path, hub: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"x": _Custom()}, path)  # loadable only with weights_only=False
    with pytest.raises(InputError, match=r"pickled\.pt: weights file is not a readable torch file"):
        build_backbone(BackboneConfig("tiny", weights=str(path)))


def test_wrong_architecture_names_the_file(tmp_path: Path, hub: Path) -> None:
    tiny_file = tmp_path / "tiny.pt"
    torch.save(build_backbone(TINY).body.state_dict(), tiny_file)
    with pytest.raises(
        InputError, match=r"tiny\.pt: weights do not fit backbone 'resnet18' \(wrong architecture"
    ):
        build_backbone(BackboneConfig("resnet18", weights=str(tiny_file)))
    # same keys, other shapes: a mobilenet file in a different torchvision width would do the same
    state = build_backbone(TINY).body.state_dict()
    state["features.0.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tiny_file)
    with pytest.raises(InputError, match=r"wrong shape 1 \(features\.0\.weight\)"):
        build_backbone(BackboneConfig("tiny", weights=str(tiny_file)))


def test_shipped_retrieval_encoder_initialises_another_network(hub: Path) -> None:
    """The trained retrieval network's encoder is a `--weights` file for the other networks (here relpose)."""
    from visloc.models import RelPoseNet
    from visloc.models.checkpoint import load_model
    from visloc.settings import shipped_model

    path = shipped_model("retrieval_tiny_world.pt")
    retrieval = load_model(path)
    relpose = RelPoseNet(RelPoseConfig(backbone=BackboneConfig("tiny", weights=str(path)), hidden=16))
    _assert_same_state(relpose.encoder, retrieval.encoder.state_dict())
    assert relpose.encoder.initialised_from == f"file:{path}"
