"""The generic training loop on a toy regression problem: schedule, checkpoints, resume, metrics."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from visloc.errors import ConfigError, InputError
from visloc.training.checkpoint import load_checkpoint, rng_state, set_rng_state
from visloc.training.loop import LoopConfig, check_resume_config, fit, resolve_device


class Toy(Dataset):
    """``y = x W`` with fixed random ``x (n, 8)``; items ``(x, y)``."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        w = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
        self.y = self.x @ w
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs_seen.append(epoch)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))


def toy_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


CONFIG = LoopConfig(epochs=4, batch_size=16, lr=1e-2, milestones=(2,), gamma=0.1, seed=1, device="cpu",
                    progress=False)
RUN = {"task": "toy", "loop": {"epochs": 4, "lr": 1e-2}}


def _fit(out: Path, config: LoopConfig = CONFIG, run=None, resume: bool = False, model=None):
    return fit(model or toy_model(), toy_loss, Toy(96, 1), Toy(32, 2), out, config,
               run_config=run or {**RUN, "loop": {**RUN["loop"], "epochs": config.epochs}}, resume=resume)


def test_fit_reduces_the_loss_and_writes_metrics(tmp_path: Path) -> None:
    train = Toy(96, 1)
    result = fit(toy_model(), toy_loss, train, Toy(32, 2), tmp_path, CONFIG, run_config=RUN)
    rows = result.metrics["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert [r["lr"] for r in rows] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3]), "step after 2 epochs"
    assert train.epochs_seen == [0, 1, 2, 3], "set_epoch is called every epoch"
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["parameters"] == sum(p.numel() for p in toy_model().parameters())
    assert on_disk["best_epoch"] == 1 + int(np.argmin([r["val_loss"] for r in rows]))
    assert on_disk["best_metric"] == "val_loss" and on_disk["config"] == RUN
    assert all(r["seconds"] > 0 for r in on_disk["epochs"]) and on_disk["seconds_per_epoch"] > 0
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt", "best.pt", "metrics.json"}


def test_checkpoint_embeds_config_and_versions_and_loads_weights_only(tmp_path: Path) -> None:
    _fit(tmp_path)
    raw = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert raw["epoch"] == 4 and raw["config"] == RUN
    assert set(raw["versions"]) >= {"visloc", "torch", "torchvision", "numpy", "python"}
    assert set(raw) >= {"model", "optimizer", "scheduler", "scaler", "rng", "history", "best"}
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == best["best"]["epoch"]
    model = toy_model()
    model.load_state_dict(raw["model"])


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = _fit(tmp_path / "straight")
    _fit(tmp_path / "split", LoopConfig(**{**CONFIG.__dict__, "epochs": 2}))
    resumed = _fit(tmp_path / "split", resume=True, model=nn.Sequential(*toy_model()))  # fresh weights: replaced
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = ("seconds", "train_seconds")
    assert [{k: v for k, v in r.items() if k not in strip} for r in straight.metrics["epochs"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in resumed.metrics["epochs"]
    ]


def test_resume_rejects_a_changed_config(tmp_path: Path) -> None:
    _fit(tmp_path, LoopConfig(**{**CONFIG.__dict__, "epochs": 1}))
    with pytest.raises(ConfigError, match="lr"):
        _fit(tmp_path, run={**RUN, "loop": {**RUN["loop"], "lr": 0.5}}, resume=True)
    check_resume_config({"loop": {"epochs": 1, "device": "cpu"}, "x": (1, 2)},
                        {"loop": {"epochs": 9, "device": "cuda"}, "x": [1, 2]})
    with pytest.raises(ConfigError, match="epochs"):  # only the loop's epochs may change
        check_resume_config({"head": {"epochs": 1}}, {"head": {"epochs": 2}})


def test_resume_of_a_checkpoint_with_the_flat_layout() -> None:
    """Before the loop and transform settings were nested, a checkpoint kept them at the top level."""
    current = {"task": "relpose", "model": {"head": "original"}, "transform": {"crop": 112, "random_crop": True},
               "loop": {"epochs": 5, "lr": 1e-3}, "cache_images": False}
    flat = {"task": "relpose", "model": {"head": "original"}, "crop": 112, "random_crop": True, "epochs": 2,
            "lr": 1e-3, "cache_images": False}
    check_resume_config(flat, current)
    with pytest.raises(ConfigError, match=r"loop\.lr: 0\.1 -> 0\.001"):
        check_resume_config({**flat, "lr": 0.1}, current)
    with pytest.raises(ConfigError, match=r"transform\.crop"):
        check_resume_config({**flat, "crop": 96}, current)
    # an older flat checkpoint that also predates random_crop resumes when the run leaves it at its default
    older = {k: v for k, v in flat.items() if k != "random_crop"}
    with pytest.raises(ConfigError, match="random_crop"):
        check_resume_config(older, current)
    check_resume_config(older, current, defaults={**current, "transform": {"crop": 224, "random_crop": True}})


def test_resume_of_a_checkpoint_that_predates_a_setting() -> None:
    # a checkpoint written before "model.grid" existed: it ran with what is now the default
    saved = {"lr": 1e-3, "model": {"head": "original"}}
    defaults = {"lr": 0.1, "model": {"head": "original", "grid": (1, 1)}}
    with pytest.raises(ConfigError, match="model"):  # without the defaults the missing key is a change
        check_resume_config(saved, {"lr": 1e-3, "model": {"head": "original", "grid": [1, 1]}})
    check_resume_config(saved, {"lr": 1e-3, "model": {"head": "original", "grid": [1, 1]}}, defaults)
    with pytest.raises(ConfigError, match="grid"):  # a non-default value is still a change
        check_resume_config(saved, {"lr": 1e-3, "model": {"head": "original", "grid": [2, 2]}}, defaults)
    with pytest.raises(ConfigError, match="lr"):  # defaults never override what the checkpoint recorded
        check_resume_config(saved, {"lr": 0.1, "model": {"head": "original", "grid": [1, 1]}}, defaults)


def test_resume_without_checkpoint_starts_afresh_and_finished_runs_stay(tmp_path: Path) -> None:
    first = _fit(tmp_path, resume=True)
    assert len(first.metrics["epochs"]) == 4
    again = _fit(tmp_path, resume=True)
    assert again.metrics["epochs"] == first.metrics["epochs"]


def test_non_finite_loss_stops_training(tmp_path: Path) -> None:
    def nan_loss(model, batch):
        return toy_loss(model, batch) * float("nan")

    with pytest.raises(FloatingPointError, match="learning rate"):
        fit(toy_model(), nan_loss, Toy(32, 1), None, tmp_path, CONFIG, run_config=RUN)


def test_without_validation_best_follows_the_training_loss(tmp_path: Path) -> None:
    result = fit(toy_model(), toy_loss, Toy(64, 1), None, tmp_path, CONFIG, run_config=RUN)
    assert result.metrics["best_metric"] == "train_loss"
    assert all(r["val_loss"] is None for r in result.metrics["epochs"])


def test_amp_is_cuda_only(tmp_path: Path) -> None:
    config = LoopConfig(**{**CONFIG.__dict__, "amp": True, "epochs": 1})
    with pytest.warns(UserWarning, match="CUDA"):
        _fit(tmp_path, config)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None and not (torch.backends.mps.is_available()):
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu0")


def test_rng_state_round_trip() -> None:
    state = rng_state()
    a = (random.random(), np.random.random(), torch.rand(1))  # noqa: NPY002
    set_rng_state(state)
    b = (random.random(), np.random.random(), torch.rand(1))  # noqa: NPY002
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_bad_loop_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LoopConfig(milestones=(5, 3))
    with pytest.raises(ConfigError):
        LoopConfig(batch_size=0)
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"last\.pt"):
        load_checkpoint(tmp_path / "last.pt")
