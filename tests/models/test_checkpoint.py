"""Checkpoints of trained networks: plain-data files, exact round trips, errors that name the file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torchvision

from visloc.errors import ConfigError, InputError
from visloc.models import BackboneConfig, PoseNetConfig, RelPoseConfig, build_backbone
from visloc.models.checkpoint import load_model, read_checkpoint, save_model
from visloc.models.registry import networks

TINY = BackboneConfig("tiny", weights="none", allow_random_init=True)


def _network(name: str) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(5)
    config = {
        "relpose": RelPoseConfig(backbone=TINY, head="pytorch_port", hidden=64, translation_frame="world"),
        "posenet": PoseNetConfig(backbone=TINY, hidden=32, dropout=0.25),
        "backbone": TINY,
    }[name]
    return networks.create(name, config), config


def _run(model: torch.nn.Module, name: str, batch: int, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    a, b = torch.randn(batch, 3, *size), torch.randn(batch, 3, *size)
    out = model(a, b) if name == "relpose" else model(a)
    return out if isinstance(out, tuple) else (out,)


def _outputs(model: torch.nn.Module, name: str) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(6)
    with torch.inference_mode():
        return _run(model, name, 2, (48, 64))


@pytest.mark.parametrize("name", ["relpose", "posenet", "backbone"])
def test_save_load_round_trip(name: str, tmp_path: Path, hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, config = _network(name)
    with torch.no_grad():
        _run(model.train(), name, 4, (32, 32))  # move the batch-norm running statistics off their init
    model.eval()
    path = save_model(tmp_path / "out" / "model.pt", model, config, metrics={"median_m": 0.25, "epoch": 3})
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary file left

    raw = torch.load(path, weights_only=True)  # plain data only
    assert set(raw) == {"state_dict", "config", "versions", "metrics"}
    assert raw["config"]["model"] == name
    assert raw["versions"] == {
        "visloc": __import__("visloc").__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }
    assert raw["metrics"] == {"median_m": 0.25, "epoch": 3}

    real_load = torch.load
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded = load_model(path)
    assert seen == [True]
    assert not loaded.training
    assert loaded.config == config
    for x, y in zip(_outputs(model, name), _outputs(loaded, name), strict=True):
        assert torch.equal(x, y)


def test_load_does_not_need_the_pretrained_weights(tmp_path: Path, hub: Path) -> None:
    weights = tmp_path / "tiny.pt"
    torch.save(build_backbone(TINY).body.state_dict(), weights)
    config = RelPoseConfig(backbone=BackboneConfig("tiny", weights=str(weights)), hidden=16)
    model = networks.create("relpose", config).eval()
    path = save_model(tmp_path / "model.pt", model, config)
    weights.unlink()
    loaded = load_model(path)
    assert loaded.config.backbone.weights == str(weights)  # the provenance is kept
    for x, y in zip(_outputs(model, "relpose"), _outputs(loaded, "relpose"), strict=True):
        assert torch.equal(x, y)


def test_checkpoint_errors_name_the_file(tmp_path: Path, hub: Path) -> None:
    model, config = _network("posenet")
    with pytest.raises(InputError, match=r"absent\.pt: checkpoint not found"):
        load_model(tmp_path / "absent.pt")

    state_only = tmp_path / "state.pt"
    torch.save(model.state_dict(), state_only)
    with pytest.raises(InputError, match=r"state\.pt: not a visloc model checkpoint"):
        load_model(state_only)

    path = save_model(tmp_path / "model.pt", model, config)
    raw = read_checkpoint(path)

    bad_key = tmp_path / "bad_key.pt"
    torch.save({**raw, "config": {**raw["config"], "hiden": 3}}, bad_key)
    with pytest.raises(
        InputError, match=r"bad_key.pt: checkpoint config cannot be used: unknown option\(s\) \['hiden'\]"
    ):
        load_model(bad_key)

    unknown_model = tmp_path / "unknown_model.pt"
    torch.save({**raw, "config": {**raw["config"], "model": "vit"}}, unknown_model)
    with pytest.raises(
        InputError, match=r"unknown_model\.pt: checkpoint config cannot be used: unknown network 'vit'"
    ):
        load_model(unknown_model)

    mismatch = tmp_path / "mismatch.pt"
    torch.save({**raw, "config": {**raw["config"], "hidden": 33}}, mismatch)
    with pytest.raises(InputError, match=r"mismatch\.pt: weights do not fit network 'posenet'"):
        load_model(mismatch)


@dataclasses.dataclass(frozen=True)
class _UnregisteredConfig:
    width: int = 3


def test_save_rejects_unregistered_configs(tmp_path: Path) -> None:
    model, _ = _network("backbone")
    with pytest.raises(ConfigError, match="_UnregisteredConfig is not the config of a registered network"):
        save_model(tmp_path / "m.pt", model, _UnregisteredConfig())
    assert not (tmp_path / "m.pt").exists()
