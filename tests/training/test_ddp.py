"""Distributed data parallel training under torchrun: 2 CPU processes, gloo.

Each rank runs a small script that records every file it creates under the output folder (through
``tempfile.mkstemp``, ``os.replace``, ``open`` and ``torch.save``; visloc writes atomically through the
first two) and,
after training, dumps its final weights to a separate folder. The tests compare the ranks' weights and
check that rank 1 wrote nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from visloc.models.checkpoint import load_model

SCRIPT = textwrap.dedent(
    '''
    import builtins, json, os, sys, tempfile
    from pathlib import Path

    mode, out, dump = sys.argv[1], Path(sys.argv[2]).resolve(), Path(sys.argv[3])
    rank = int(os.environ["RANK"])
    writes = []

    def _inside(p):
        try:
            return Path(p).resolve().is_relative_to(out)
        except (TypeError, ValueError):
            return False

    if rank != 0:
        _mkstemp, _replace, _open = tempfile.mkstemp, os.replace, builtins.open

        def mkstemp(*a, **k):
            fd, p = _mkstemp(*a, **k)
            if _inside(p):
                writes.append(p)
            return fd, p

        def replace(src, dst, *a, **k):
            if _inside(dst):
                writes.append(str(dst))
            return _replace(src, dst, *a, **k)

        def open_(file, mode="r", *a, **k):
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and _inside(file):
                writes.append(str(file))
            return _open(file, mode, *a, **k)

        tempfile.mkstemp, os.replace, builtins.open = mkstemp, replace, open_

    import torch

    if rank != 0:
        _save = torch.save

        def save(obj, f, *a, **k):
            if isinstance(f, (str, os.PathLike)) and _inside(f):
                writes.append(str(f))
            return _save(obj, f, *a, **k)

        torch.save = save
    import torch.nn.functional as F
    from torch import nn

    captured = {}
    if mode == "toy":
        from visloc.training.loop import LoopConfig, fit

        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 8, generator=g)
        y = x @ torch.randn(8, 2, generator=g)
        data = torch.utils.data.TensorDataset(x, y)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))
        config = LoopConfig(epochs=2, batch_size=16, lr=1e-2, seed=3, device="cpu", progress=False)
        result = fit(model, lambda m, b: F.mse_loss(m(b[0]), b[1]), data, data, out, config,
                     run_config={"task": "toy"})
        metrics = result.metrics
    else:
        import visloc.training.relpose as relpose
        from visloc.models.backbones import BackboneConfig
        from visloc.models.relpose import RelPoseConfig
        from visloc.training.pairs import PairSamplingConfig

        real_fit = relpose.fit

        def spy(model, *a, **k):
            captured["model"] = model
            return real_fit(model, *a, **k)

        relpose.fit = spy
        config = relpose.tiny_relpose_config(
            model=RelPoseConfig(BackboneConfig("tiny", "none", allow_random_init=True), hidden=128),
            epochs=2, resize=72, crop=64, batch_size=8, num_workers=0, device="cpu", progress=False,
            pairs=PairSamplingConfig(max_pairs_per_scene=16), val_pairs_per_scene=6, cache_images=True)
        metrics = relpose.train_relpose(sys.argv[4], out, config)
        model = captured["model"]
    dump.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, dump / f"rank{rank}.pt")
    (dump / f"rank{rank}.json").write_text(json.dumps({"writes": writes, "metrics": metrics}, default=str))
    '''
)


def _torchrun(tmp_path: Path, mode: str, *extra: str, timeout: float = 240) -> tuple[Path, Path]:
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    out, dump = tmp_path / "out", tmp_path / "dump"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), mode, str(out), str(dump), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out, dump


def _check_ranks(dump: Path) -> tuple[dict, dict]:
    w0, w1 = (torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"ranks differ in {k}"
    r0, r1 = (json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r1["writes"] == [], f"rank 1 wrote {r1['writes']}"
    assert r0["metrics"]["epochs"] == r1["metrics"]["epochs"], "losses are reduced over the ranks"
    return r0, r1


def test_ddp_smoke_two_cpu_processes(tmp_path: Path) -> None:
    out, dump = _torchrun(tmp_path, "toy")
    r0, _ = _check_ranks(dump)
    assert r0["metrics"]["world_size"] == 2
    assert [row["samples"] for row in r0["metrics"]["epochs"]] == [96, 96], "each epoch sees the data once"
    assert {p.name for p in out.iterdir()} == {"last.pt", "best.pt", "metrics.json"}
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    w0 = torch.load(dump / "rank0.pt", weights_only=True)
    assert all(torch.equal(ckpt["model"][k], w0[k]) for k in w0)


def test_ddp_relpose_training_on_the_tiny_world(tmp_path: Path, tiny_world: Path) -> None:
    out, dump = _torchrun(tmp_path, "relpose", str(tiny_world), timeout=600)
    r0, _ = _check_ranks(dump)
    assert r0["metrics"]["world_size"] == 2 and len(r0["metrics"]["epochs"]) == 2
    assert (out / "model.pt").is_file() and (out / "pairs_train.txt").is_file()
    model = load_model(out / "model.pt")
    assert sum(p.numel() for p in model.parameters()) == r0["metrics"]["parameters"]
