"""A generic supervised training loop: Adam, a step schedule, validation, checkpoints, resume, DDP.

:func:`fit` trains any ``nn.Module`` given a loss function ``loss_fn(model, batch) -> scalar`` (the mean
over the batch). What it does, and where it writes (``out_dir``):

* **devices**: ``device="auto"`` resolves to cuda -> mps -> cpu (:func:`resolve_device`); nothing is
  hard-coded. Mixed precision (``torch.autocast`` float16 + ``GradScaler``) is used on CUDA only.
* **distributed data parallel** when started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in
  the environment; ``gloo`` on CPU, ``nccl`` on CUDA): a ``DistributedSampler`` shards each epoch,
  gradients are averaged, batch-norm buffers are re-broadcast from rank 0 after each epoch (so all ranks
  hold identical weights), losses are reduced over ranks, and **only rank 0 writes files** or shows
  progress. ``batch_size`` is per process.
* **schedule**: ``MultiStepLR`` stepped once per epoch: the learning rate is multiplied by ``gamma`` when
  ``milestones[i]`` epochs are completed (the original's 1-based epochs 31/51/81/... are milestones
  30/50/80/...).
* **checkpoints** ``last.pt`` after every epoch and ``best.pt`` at the lowest validation loss (the
  training loss when there is no validation set), both written atomically with the model, optimizer,
  scheduler and GradScaler states, epoch, RNG states, the full training config and package versions
  (:mod:`visloc.training.checkpoint`), and ``metrics.json`` (per-epoch losses, learning rate, seconds of
  the epoch and of its training part (the slowest rank), samples,
  parameter count).
* **resume** (``resume=True``) continues from ``out_dir/last.pt``: with the same config the result is
  the same as an uninterrupted run, because every epoch reseeds the global RNGs from
  ``(seed, epoch, rank)``, the data order depends on ``(seed, epoch)`` and the data augmentation on
  ``(seed, epoch, index)``. Only :data:`RESUME_MAY_CHANGE` may differ from the checkpoint's config, whose
  loop settings are under ``"loop"``; a checkpoint of an older visloc that kept them (and the image
  preprocessing) at the top level of its config resumes too (:func:`check_resume_config`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..io.atomic import write_json
from .checkpoint import (
    BEST,
    LAST,
    load_checkpoint,
    package_versions,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

logger = logging.getLogger(__name__)

#: ``loss_fn(model, batch) -> loss``: batch tensors are already on the device; the loss is a scalar,
#: the mean over the samples of the batch.
LossFn = Callable[[nn.Module, Sequence[torch.Tensor]], torch.Tensor]
#: ``errors_fn(model, batch) -> {name: (B,) per-sample error}``, reported as medians over the validation set.
ErrorsFn = Callable[[nn.Module, Sequence[torch.Tensor]], dict[str, torch.Tensor]]

#: Settings of the training config (dotted paths; the :class:`LoopConfig` sits under ``"loop"``) that may
#: differ between a checkpoint and a resumed run.
RESUME_MAY_CHANGE = frozenset({"loop.epochs", "loop.device", "loop.num_workers", "loop.progress"})
METRICS = "metrics.json"


# --- devices, seeds, processes ------------------------------------------------------------------------
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first available of cuda, mps, cpu; anything else is passed to ``torch.device``.

    Raises:
        ConfigError: an unknown device string, or a device this machine does not have.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"unknown device {device!r} ({e}); use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {device!r} asked for, but MPS is not available here")
    return dev


def derived_seed(*keys: int) -> int:
    """A 63-bit seed determined by ``keys`` (e.g. ``(seed, epoch, rank)``)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002 (third-party code uses the global RNG)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) run.

    Attributes:
        rank: global rank (0 when not distributed).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: this process's device.
        owns_group: whether :func:`init_distributed` created the process group (and must destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            torch_dist.barrier()


def init_distributed(device: str = "auto") -> DistContext:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by ``torchrun``) and join the process group.

    With ``WORLD_SIZE`` unset or 1 nothing is initialised. The backend is ``nccl`` on CUDA and ``gloo``
    otherwise; on CUDA each process uses ``cuda:LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if world_size <= 1:
        return DistContext(device=dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    elif dev.type == "mps":
        raise ConfigError("distributed training on MPS is not supported; use device='cpu' or CUDA")
    owns = False
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(rank, world_size, local_rank, dev, owns)


def shutdown_distributed(ctx: DistContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


# --- configuration and results ------------------------------------------------------------------------
@dataclass(frozen=True)
class LoopConfig:
    """Optimisation settings of :func:`fit`.

    Attributes:
        epochs: total number of epochs (a resumed run continues up to it).
        batch_size: samples per step and process.
        lr: initial Adam learning rate.
        weight_decay: Adam weight decay (the original's was effectively 0).
        milestones: completed-epoch counts at which the learning rate is multiplied by ``gamma`` (the Lua
            original's 1-based epochs 31, 51, 81, ... are 30, 50, 80, ...).
        gamma: learning-rate decay factor at each milestone.
        seed: seed of the model initialisation, the data order and augmentation, and every epoch's global
            RNGs.
        device: where to train: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        num_workers: DataLoader worker processes (per process).
        amp: float16 autocast + GradScaler (CUDA only; ignored with a warning elsewhere).
        channels_last: run the model and images in ``channels_last`` memory format.
        progress: tqdm progress bars (rank 0 only).
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    amp: bool = False
    channels_last: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if list(self.milestones) != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            raise ConfigError(f"milestones must be increasing positive epoch counts, got {self.milestones}")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        metrics: the content of ``metrics.json``.
        best_checkpoint: path of ``best.pt`` (written by rank 0).
        last_checkpoint: path of ``last.pt``.
    """

    metrics: dict[str, Any]
    best_checkpoint: Path
    last_checkpoint: Path


# --- helpers --------------------------------------------------------------------------------------------
def _plain(obj: Any) -> Any:
    """JSON-normalised copy (tuples -> lists), for comparing configs."""
    return json.loads(json.dumps(obj, default=str))


def _with_defaults(saved: Any, defaults: Any) -> Any:
    """``saved`` with the keys it lacks (at any depth) taken from ``defaults``."""
    if not isinstance(saved, dict) or not isinstance(defaults, dict):
        return saved
    out = {k: _with_defaults(v, defaults.get(k)) for k, v in saved.items()}
    out.update({k: v for k, v in defaults.items() if k not in saved})
    return out


def _nested_like(saved: dict[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """``saved`` with the settings that an older visloc kept at the top level moved into the sections of
    ``current`` that hold them now (``epochs`` -> ``loop.epochs``, ``crop`` -> ``transform.crop``)."""
    out = dict(saved)
    for section, fields in current.items():
        if isinstance(fields, dict) and section not in out:
            moved = {k: out.pop(k) for k in fields if k in out and k not in current}
            if moved:
                out[section] = moved
    return out


def _leaves(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value of every non-dict value of a nested dict."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def check_resume_config(
    saved: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> None:
    """Raise :class:`ConfigError` when a resumed run's config differs from the checkpoint's beyond
    :data:`RESUME_MAY_CHANGE`.

    A checkpoint whose config keeps at the top level what ``current`` nests in a section (the flat layout
    of visloc before the loop and transform settings were nested) is read in the nested layout.
    ``defaults`` (the config class's defaults as plain data) fills settings that the checkpoint does not
    record because they were added to visloc after it was written: a new setting's default keeps the
    earlier behaviour, so such a checkpoint resumes when the current run leaves it at the default."""
    b = _plain(dict(current))
    a = _nested_like(_plain(dict(saved)), b)
    if defaults is not None:
        a = _with_defaults(a, _plain(dict(defaults)))
    a, b = _leaves(a), _leaves(b)
    keys = sorted((set(a) | set(b)) - RESUME_MAY_CHANGE)
    changed = [k for k in keys if a.get(k) != b.get(k)]
    if changed:
        detail = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed)
        raise ConfigError(
            f"cannot resume: the training config differs from the checkpoint's ({detail}). Only "
            f"{sorted(RESUME_MAY_CHANGE)} may change; use a new output folder for a different run"
        )


def _to_device(batch: Sequence[torch.Tensor], device: torch.device, channels_last: bool) -> list[torch.Tensor]:
    out = []
    for x in batch:
        x = x.to(device, non_blocking=True)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(x)
    return out


def _reduce(values: list[float], ctx: DistContext, op: str = "sum") -> list[float]:
    """Sum (or ``op="max"``) ``values`` over ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    if ctx.distributed:
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX if op == "max" else torch_dist.ReduceOp.SUM)
    return t.cpu().tolist()


def _broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (batch-norm statistics) to every rank."""
    if ctx.distributed:
        for buf in module.buffers():
            torch_dist.broadcast(buf, src=0)


def _set_epoch(dataset: Dataset, epoch: int) -> None:
    target = dataset.dataset if isinstance(dataset, Subset) else dataset
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = derived_seed(seed, epoch, rank)
    random.seed(s)
    np.random.seed(s % (1 << 32))  # noqa: NPY002
    torch.manual_seed(s)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss_fn: LossFn,
    dataset: Dataset,
    batch_size: int,
    ctx: DistContext,
    num_workers: int = 0,
    amp: bool = False,
    channels_last: bool = False,
    errors_fn: ErrorsFn | None = None,
) -> tuple[float, dict[str, float]]:
    """Mean per-sample loss of ``model`` (eval mode) over ``dataset``, sharded over ranks without padding,
    and the median over all samples of each per-sample error of ``errors_fn`` (e.g. cm and degrees)."""
    model.eval()
    shard = Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world_size)))  # type: ignore[arg-type]
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=ctx.device.type == "cuda")
    total, count = 0.0, 0
    errors: dict[str, list[np.ndarray]] = {}
    for batch in loader:
        batch = _to_device(batch, ctx.device, channels_last)
        with torch.autocast(ctx.device.type, dtype=torch.float16, enabled=amp):
            loss = loss_fn(model, batch)
            per_sample = errors_fn(model, batch) if errors_fn is not None else {}
        n = int(batch[0].shape[0])
        total += float(loss.float()) * n
        count += n
        for name, values in per_sample.items():
            errors.setdefault(name, []).append(values.detach().float().cpu().numpy().reshape(-1))
    total, count = _reduce([total, float(count)], ctx)
    local = {name: np.concatenate(v) for name, v in errors.items()}
    if ctx.distributed and errors_fn is not None:
        gathered: list[Any] = [None] * ctx.world_size
        torch_dist.all_gather_object(gathered, local)
        local = {name: np.concatenate([g.get(name, np.zeros(0)) for g in gathered]) for name in local}
    medians = {name: float(np.median(v)) for name, v in local.items() if len(v)}
    return (total / count if count else float("nan")), medians


# --- the loop -------------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train_set: Dataset,
    val_set: Dataset | None,
    out_dir: str | Path,
    config: LoopConfig,
    *,
    run_config: Mapping[str, Any],
    resume: bool = False,
    ctx: DistContext | None = None,
    run_defaults: Mapping[str, Any] | None = None,
    errors_fn: ErrorsFn | None = None,
) -> FitResult:
    """Train ``model`` and write checkpoints and ``metrics.json`` into ``out_dir`` (rank 0 only).

    Args:
        model: the network (any device; moved to the run's device).
        loss_fn: ``loss_fn(model, batch) -> scalar`` batch-mean loss; batches are lists of tensors.
        train_set: training samples (tuples of tensors); ``set_epoch(epoch)`` is called when it exists.
        val_set: validation samples, evaluated after each epoch in eval mode; ``None`` skips validation.
        out_dir: folder of ``last.pt``, ``best.pt`` and ``metrics.json``.
        config: optimisation settings.
        run_config: the full training config as plain data, embedded in every checkpoint and
            ``metrics.json`` and compared on resume (``config`` under ``"loop"``, so that
            :data:`RESUME_MAY_CHANGE` applies).
        run_defaults: the config class's defaults as plain data: on resume they stand in for settings
            the checkpoint predates (:func:`check_resume_config`).
        errors_fn: per-sample validation errors in the units a user reads (e.g. cm and degrees); their
            medians are logged and written with each epoch (``val_median_<name>``).
        resume: continue from ``out_dir/last.pt`` when it exists (else start afresh, with a log line).
        ctx: the process's place in a distributed run (default: :func:`init_distributed` of
            ``config.device``, destroyed again at the end).

    Returns:
        The metrics (same on every rank) and the checkpoint paths.

    Raises:
        ConfigError: resuming with a changed config, or bad settings.
        FloatingPointError: the training loss became NaN or infinite (learning rate too high?).
    """
    out_dir = Path(out_dir)
    own_ctx = ctx is None
    ctx = ctx or init_distributed(config.device)
    try:
        return _fit(model, loss_fn, train_set, val_set, out_dir, config, dict(run_config), resume, ctx,
                    run_defaults, errors_fn)
    finally:
        if own_ctx:
            shutdown_distributed(ctx)


def _fit(
    model: nn.Module,
    loss_fn: LossFn,
    train_set: Dataset,
    val_set: Dataset | None,
    out_dir: Path,
    config: LoopConfig,
    run_config: dict[str, Any],
    resume: bool,
    ctx: DistContext,
    run_defaults: Mapping[str, Any] | None = None,
    errors_fn: ErrorsFn | None = None,
) -> FitResult:
    device = ctx.device
    use_amp = config.amp and device.type == "cuda"
    if config.amp and not use_amp:
        warnings.warn(f"mixed precision is only used on CUDA; training in float32 on {device}", stacklevel=3)
    if len(train_set) == 0:  # type: ignore[arg-type]
        raise ConfigError("the training set is empty")
    seed_everything(config.seed)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    core = model
    optimizer = torch.optim.Adam(core.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, "loss": math.inf}
    start = 0
    last_path, best_path = out_dir / LAST, out_dir / BEST
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path)
        check_resume_config(ckpt["config"], run_config, run_defaults)
        core.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        history, best, start = list(ckpt["history"]), dict(ckpt["best"]), int(ckpt["epoch"])
        if ctx.is_main:
            logger.info("resuming from %s after epoch %d", last_path, start)
    elif resume and ctx.is_main:
        logger.info("no checkpoint %s: starting from scratch", last_path)

    if ctx.distributed:
        model = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    parameters = sum(p.numel() for p in core.parameters())
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        drop_last=len(sampler) >= config.batch_size, pin_memory=device.type == "cuda")
    base = {"parameters": parameters, "device": str(device), "world_size": ctx.world_size,
            "config": run_config, "versions": package_versions()}

    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        _seed_epoch(config.seed, epoch, ctx.rank)
        sampler.set_epoch(epoch)
        _set_epoch(train_set, epoch)
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, dynamic_ncols=True,
                   disable=not (ctx.is_main and config.progress))
        for batch in bar:
            batch = _to_device(batch, device, config.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            n = int(batch[0].shape[0])
            value = float(loss.detach().float())
            if use_amp and not math.isfinite(value):
                continue  # float16 overflow: GradScaler skipped this step and lowers its scale
            total += value * n
            count += n
            bar.set_postfix(loss=f"{value:.4f}")
        total, count = _reduce([total, float(count)], ctx)
        train_loss = total / count if count else math.nan
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} in epoch {epoch + 1}; lower the learning rate")
        scheduler.step()
        _broadcast_buffers(core, ctx)
        (train_seconds,) = _reduce([time.perf_counter() - t0], ctx, "max")
        val_loss, val_errors = None, {}
        if val_set is not None and len(val_set) > 0:  # type: ignore[arg-type]
            val_loss, val_errors = evaluate(core, loss_fn, val_set, config.batch_size, ctx, config.num_workers,
                                            use_amp, config.channels_last, errors_fn)
        (seconds,) = _reduce([time.perf_counter() - t0], ctx, "max")  # the slowest rank's time
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "lr": lr, "seconds": seconds,
               "train_seconds": train_seconds, "samples": int(count),
               **{f"val_median_{name}": value for name, value in val_errors.items()}}
        history.append(row)
        score = val_loss if val_loss is not None else train_loss
        improved = score < best["loss"]
        if improved:
            best = {"epoch": epoch + 1, "loss": score}
        if ctx.is_main:
            errors = "".join(f", val median {name} {value:.2f}" for name, value in val_errors.items())
            logger.info("epoch %d/%d: train loss %.5f, val loss %s%s, lr %.2e, %.1f s", epoch + 1, config.epochs,
                        train_loss, "-" if val_loss is None else f"{val_loss:.5f}", errors, lr, seconds)
            state = {"epoch": epoch + 1, "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                     "history": history, "best": best, "config": run_config, "versions": base["versions"],
                     "world_size": ctx.world_size}
            save_checkpoint(last_path, state)
            if improved:
                save_checkpoint(best_path, state)
            write_json(out_dir / METRICS, _metrics(base, history, best, val_set is not None))
        ctx.barrier()
    metrics = _metrics(base, history, best, val_set is not None)
    if ctx.is_main and start >= config.epochs:
        logger.info("nothing to do: %s already holds %d epochs", last_path, start)
    return FitResult(metrics, best_path, last_path)


def _metrics(base: Mapping[str, Any], history: list[dict[str, Any]], best: Mapping[str, Any],
             has_val: bool) -> dict[str, Any]:
    seconds = [h["seconds"] for h in history]
    return {
        "epochs": history,
        "best_epoch": best["epoch"],
        "best_loss": best["loss"] if math.isfinite(best["loss"]) else None,
        "best_metric": "val_loss" if has_val else "train_loss",
        "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        **base,
    }
