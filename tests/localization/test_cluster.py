"""Map building and localization on a local Dask cluster give the one-machine results, bit for bit, also when
a worker is killed in the middle or the client is interrupted."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from visloc.cli import app
from visloc.datasets import load_frames
from visloc.errors import ConfigError
from visloc.localization import build_map, localize
from visloc.localization.cluster import (
    LOCAL_WORKER_ENV,
    SHARDS_DIR,
    build_map_on_cluster,
    connect,
    parse_cluster,
    warm_up,
)

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes, as ``--cluster local:2`` starts them."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \
            distributed.Client(lc) as c:
        yield c


def test_parse_cluster() -> None:
    assert parse_cluster("local:3") == ("local", 3)
    assert parse_cluster("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")
    for bad in ("local:0", "local:x", "10.0.0.1:8786"):
        with pytest.raises(ConfigError, match="--cluster"):
            parse_cluster(bad)


def _worker_state() -> tuple[dict[str, str | None], int]:
    """In a worker, after a task's set-up: its thread-pool environment, and the page faults of a steady image
    pipeline's allocations (large buffers allocated and freed again and again: tests/test_runtime.py)."""
    import resource

    from visloc.localization.cluster import _single_threaded

    _single_threaded()

    def churn() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            arrays = [np.ones(15 * 1024 * 1024 // 8) for _ in range(3)]
            del arrays
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    churn()
    return {k: os.environ.get(k) for k in LOCAL_WORKER_ENV}, churn()


def test_local_workers_have_one_thread_pools_and_the_tuned_malloc(monkeypatch) -> None:
    """``local:N`` workers load OpenMP/BLAS with one thread even when the client's environment asks for more (Dask's
    own defaults yield to it), the client's environment is left as it was, and a task runs with the command line's
    malloc tuning (untuned, each round faults its 45 MiB back in: > 10,000 faults)."""
    import cloudpickle

    for name in LOCAL_WORKER_ENV:
        monkeypatch.setenv(name, "3")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        with connect("local:2") as c:
            states = list(c.run(_worker_state).values())
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert len(states) == 2
    for env, faults in states:
        assert env == LOCAL_WORKER_ENV
        assert faults < 1000
    assert all(os.environ[name] == "3" for name in LOCAL_WORKER_ENV)


#: Evaluated in a worker (the tests' modules are not importable there): are the build modules imported?
_LOADED = "all(m in __import__('sys').modules for m in ('visloc.localization.build', 'visloc.localization.shards'))"


def test_warm_up_loads_the_build_modules_in_every_worker() -> None:
    """Fresh workers (not the module's: earlier tasks may have loaded the modules there) import them after
    ``warm_up``, without a task of the build."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \
            distributed.Client(lc) as c:
        assert not any(c.run(eval, _LOADED).values())
        warm_up(c)
        deadline = time.monotonic() + 60
        while not all(c.run(eval, _LOADED).values()):
            assert time.monotonic() < deadline, "the workers did not import the build modules"
            time.sleep(0.2)
        assert len(c.run(eval, _LOADED)) == 2


@pytest.mark.e2e
def test_cluster_build_equals_the_plain_build(client, tiny_world: Path, tiny_map_config, tiny_map: Path,
                                              tmp_path: Path, same_map) -> None:
    done: list[int] = []
    summary = build_map_on_cluster(tiny_world, tmp_path / "map", client, tiny_map_config, split="train",
                                   chunk_size=10, on_chunk_done=lambda k, _: done.append(k))
    assert summary.num_images == 48 and sorted(done) == [0, 1, 2, 3, 4]
    assert not (tmp_path / "map" / SHARDS_DIR).exists()
    same_map(tmp_path / "map", tiny_map)


def test_cluster_triangulation_equals_the_plain_build(client, tiny_world: Path, tiny_map_config, tmp_path: Path,
                                                      same_map) -> None:
    """3D points triangulated from database pairs matched in worker tasks, as in one process."""
    config = dataclasses.replace(tiny_map_config, points="triangulate")
    build_map(tiny_world, tmp_path / "plain", config, split="train")
    summary = build_map_on_cluster(tiny_world, tmp_path / "cluster", client, config, split="train", chunk_size=16)
    assert summary.points == "triangulate"
    same_map(tmp_path / "cluster", tmp_path / "plain")


def test_interrupted_client_resumes_from_the_written_shards(client, tiny_world: Path, tiny_map_config,
                                                            tiny_map: Path, tmp_path: Path, same_map) -> None:
    out = tmp_path / "map"

    def interrupt(k: int, shard: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_map_on_cluster(tiny_world, out, client, tiny_map_config, split="train", chunk_size=10,
                             on_chunk_done=interrupt)
    written = [p for p in (out / SHARDS_DIR).iterdir() if (p / "shard.json").is_file()]
    assert written and not (out / "map.json").exists()
    deadline = time.monotonic() + 60
    while any(client.processing().values()) and time.monotonic() < deadline:  # the tasks still running finish
        time.sleep(0.2)
    rerun: list[int] = []
    build_map_on_cluster(tiny_world, out, client, tiny_map_config, split="train", chunk_size=10,
                         on_chunk_done=lambda k, _: rerun.append(k))
    assert len(rerun) <= 5 - 1  # at least the shard written before the interruption is not built again
    same_map(out, tiny_map)


def _comparable(log: Path) -> tuple[list[dict], list[list[float]]]:
    """The log without timings, and the retrieval scores apart: the workers run BLAS on one thread, the client on
    all of them, so a similarity may differ in its last float32 bit (the ranking, matches and poses may not)."""
    results = json.loads(log.read_text())["results"]
    for r in results:
        r.pop("timings")
    return results, [r.pop("retrieval_scores") for r in results]


def _same_log(a: Path, b: Path) -> None:
    (log_a, scores_a), (log_b, scores_b) = _comparable(a), _comparable(b)
    assert log_a == log_b
    assert [len(s) for s in scores_a] == [len(s) for s in scores_b]
    assert np.allclose(np.concatenate(scores_a), np.concatenate(scores_b), rtol=0, atol=1e-6)


@pytest.mark.e2e
def test_cluster_localization_equals_the_plain_run(client, tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    queries = load_frames(tiny_world, split="test").frames
    broken = tmp_path / "broken.png"
    broken.write_bytes(queries[0].image_path.read_bytes()[:200])  # truncated PNG: skipped and reported
    frames = [dataclasses.replace(queries[0], image_path=broken), *queries[1:]]
    plain = localize(tiny_map, frames, tmp_path / "plain" / "poses.txt")
    dist = localize(tiny_map, frames, tmp_path / "cluster" / "poses.txt", cluster=client)
    assert plain.num_localized == dist.num_localized > 0
    assert plain.skipped == dist.skipped and [s.name for s in dist.skipped] == [queries[0].name]
    assert (tmp_path / "plain" / "poses.txt").read_bytes() == (tmp_path / "cluster" / "poses.txt").read_bytes()
    _same_log(plain.log_path, dist.log_path)
    for suffix in (".pairs.txt",):
        assert ((tmp_path / "plain" / f"poses.txt{suffix}").read_bytes()
                == (tmp_path / "cluster" / f"poses.txt{suffix}").read_bytes())


def test_without_a_cluster_dask_is_not_imported() -> None:
    code = ("import sys\n"
            "import visloc.cli, visloc.localization, visloc.localization.shards, visloc.localization.cluster\n"
            "from typer.testing import CliRunner\n"
            "for args in (['map', 'build', '--help'], ['map', 'merge', '--help'], ['localize', '--help']):\n"
            "    assert CliRunner().invoke(visloc.cli.app, args).exit_code == 0\n"
            "print(' '.join(m for m in ('dask', 'distributed') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


@pytest.mark.e2e
def test_cli_localize_on_a_local_cluster(tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for name, extra in (("plain", []), ("cluster", ["--cluster", "local:2"])):
        result = runner.invoke(app, ["localize", str(tiny_map), str(tiny_world), "--split", "test",
                                     "--out", str(tmp_path / name / "poses.txt"), *extra])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "plain" / "poses.txt").read_bytes() == (tmp_path / "cluster" / "poses.txt").read_bytes()
    _same_log(tmp_path / "plain" / "poses.txt.log.json", tmp_path / "cluster" / "poses.txt.log.json")
    bad = runner.invoke(app, ["localize", str(tiny_map), str(tiny_world), "--out", str(tmp_path / "x.txt"),
                              "--cluster", "somewhere"])
    # `visloc.cli.main` reports it in one line with exit code 2
    assert isinstance(bad.exception, ConfigError) and not (tmp_path / "x.txt").exists()


def test_cli_map_build_on_a_scheduler_address(client, tiny_world: Path, tiny_map: Path, tmp_path: Path,
                                              same_map) -> None:
    """``--cluster tcp://...``: a client of a running cluster (here the shared one)."""
    result = CliRunner().invoke(app, ["map", "build", str(tiny_world), "--split", "train", "--extractor-set",
                                      "max_keypoints=1024", "--out", str(tmp_path / "map"), "--cluster",
                                      client.scheduler.address, "--chunk-size", "16"])
    assert result.exit_code == 0, result.output
    same_map(tmp_path / "map", tiny_map)
    both = CliRunner().invoke(app, ["map", "build", str(tiny_world), "--out", str(tmp_path / "x"), "--shard", "0/2",
                                    "--cluster", "local:2"])
    assert both.exit_code != 0 and not (tmp_path / "x").exists()


@pytest.mark.e2e
def test_a_killed_worker_changes_nothing(client, tiny_world: Path, tiny_map_config, tiny_map: Path,
                                         tmp_path: Path, same_map) -> None:
    """Last in the module: it kills one of the shared cluster's worker processes (its nanny starts another)."""
    pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_one(k: int, shard: Path) -> None:
        if not killed:  # after the first chunk, the worker with the most tasks in flight
            busy = client.processing()
            worker = max(pids, key=lambda w: len(busy.get(w, ())))
            assert busy.get(worker), "no task in flight to lose"
            killed.append(pids[worker])
            os.kill(pids[worker], signal.SIGKILL)

    summary = build_map_on_cluster(tiny_world, tmp_path / "map", client, tiny_map_config, split="train",
                                   chunk_size=6, on_chunk_done=kill_one)
    assert killed and summary.num_images == 48
    assert killed[0] not in client.run(os.getpid).values()  # that process is gone; its tasks ran elsewhere
    same_map(tmp_path / "map", tiny_map)


@pytest.mark.parametrize("descriptor", ["cnn", "relpose"])
def test_cluster_network_descriptors_equal_the_plain_build(client, tiny_world: Path, tiny_map_config,
                                                           tmp_path: Path, same_map, descriptor: str) -> None:
    """Global descriptors of the shipped networks, computed in one-thread worker tasks, are the plain
    build's bit for bit (convolutions may sum in another order with another thread count: this checks it)."""
    config = dataclasses.replace(tiny_map_config, global_descriptor=descriptor)
    build_map(tiny_world, tmp_path / "plain", config, split="train")
    build_map_on_cluster(tiny_world, tmp_path / "cluster", client, config, split="train", chunk_size=16)
    same_map(tmp_path / "cluster", tmp_path / "plain")


def test_default_task_size_gives_small_maps_many_tasks() -> None:
    """32 images a task, or fewer (at least 4) so that a map has 64 tasks: ceil(360 / 64) = 6."""
    from visloc.localization.cluster import task_size

    assert [task_size(n) for n in (1, 10, 256, 257, 360, 1500, 2048, 2049, 10**6)] == [4, 4, 4, 5, 6, 24, 32, 32, 32]


@pytest.mark.e2e
def test_cluster_relpose_localization_equals_the_plain_run(tiny_world: Path, tiny_map_config, tmp_path: Path) -> None:
    """The relpose network's poses from workers that start with one-thread pools (``local:2``) are those of a
    plain run with two threads, bit for bit: a task uses the client's thread count (with one thread the poses
    came out about 1e-9 apart)."""
    from visloc.localization.localize import LocalizeConfig
    from visloc.runtime import torch_threads

    config = dataclasses.replace(tiny_map_config, global_descriptor="relpose")
    build_map(tiny_world, tmp_path / "map", config, split="train")
    queries = load_frames(tiny_world, split="test").frames
    method = LocalizeConfig(method="relpose")
    with torch_threads(2):
        plain = localize(tmp_path / "map", queries, tmp_path / "plain" / "poses.txt", method)
        dist = localize(tmp_path / "map", queries, tmp_path / "cluster" / "poses.txt", method, cluster="local:2")
    assert plain.num_localized == dist.num_localized > 0
    assert (tmp_path / "plain" / "poses.txt").read_bytes() == (tmp_path / "cluster" / "poses.txt").read_bytes()
