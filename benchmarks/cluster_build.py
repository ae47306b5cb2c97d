"""Map build on a local Dask cluster against the plain build, at equal cores (not a test).

The plain ``visloc map build`` runs with N threads (``OMP_NUM_THREADS`` / OpenCV / torch = N), the cluster
build with ``--cluster local:N`` (N worker processes of one thread each); both as fresh ``visloc``
processes, so interpreter start, imports and (for the cluster) starting the workers are counted; with N below
the machine's CPUs every process is kept on N of them (CPU affinity), so the cores are equal. Checks
that the two maps are the same bit for bit, prints the times and the engine's overhead
``cluster / plain - 1``, and with ``--out`` appends a block to that Markdown file. The machine load is
recorded: these shared machines are noisy; run it on an idle one (``uptime`` load < 1).

    python benchmarks/cluster_build.py                          # default world (WorldConfig()), split train
    python benchmarks/cluster_build.py --world tiny --repeats 1  # a quick check that it runs
    python benchmarks/cluster_build.py --out docs/results/scale_build.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from visloc.datasets.synthetic import WorldConfig, make_world

VISLOC = Path(sys.executable).with_name("visloc")
#: The tests' tiny world (tests/conftest.py), for a quick run.
TINY = WorldConfig(num_scenes=2, train_traversals=2, frames_per_train_traversal=12, frames_per_test_traversal=6,
                   width=320, height=240, focal=262.5, seed=3)


def on_cores(cores: int):
    """A ``preexec_fn`` that keeps a process and its children on the first ``cores`` CPUs (``None`` when that
    is all of them): OpenCV's own thread pool ignores ``OMP_NUM_THREADS``, so a "one-thread" plain build
    would otherwise run SIFT on every core of the machine."""
    if cores >= (os.cpu_count() or 1) or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, set(range(cores)))


def build(world: Path, out: Path, threads: int, cluster: str | None, chunk_size: int | None) -> float:
    """Seconds of one ``visloc map build`` process (the map folder is removed first)."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    cmd = [str(VISLOC), "-q", "map", "build", str(world), "--split", "train", "--out", str(out)]
    if cluster:
        cmd += ["--cluster", cluster] + (["--chunk-size", str(chunk_size)] if chunk_size else [])
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, preexec_fn=on_cores(threads))
    return time.perf_counter() - t


class StandingCluster:
    """A ``dask scheduler`` and ``workers`` one-thread ``dask worker`` processes started once, as a cluster that
    exists before the build (their start-up is not counted; the client connects with ``tcp://``)."""

    def __init__(self, root: Path, workers: int) -> None:
        from distributed import Client

        dask = Path(sys.executable).with_name("dask")
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        scheduler_file = root / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        self.processes = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                            "--scheduler-file", str(scheduler_file)], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           preexec_fn=on_cores(workers))]
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file():
            if time.monotonic() > deadline:
                raise RuntimeError("the dask scheduler did not start")
            time.sleep(0.2)
        self.processes.append(subprocess.Popen(
            [str(dask), "worker", "--scheduler-file", str(scheduler_file), "--nworkers", str(workers), "--nthreads",
             "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=on_cores(workers)))
        with Client(scheduler_file=str(scheduler_file)) as client:
            client.wait_for_workers(workers, timeout=120)
            self.address = client.scheduler.address

    def close(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            process.wait(30)


def h5_datasets(path: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj.dtype.str.encode() + obj[()].tobytes())
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def same_map(a: Path, b: Path) -> bool:
    """HDF5 datasets, descriptor state, index file, poses and cameras identical."""
    for name in ("local_features.h5", "global_features.h5", "points3D.h5"):
        if (a / name).is_file() != (b / name).is_file():
            return False
        if (a / name).is_file() and h5_datasets(a / name) != h5_datasets(b / name):
            return False
    with np.load(a / "global_state.npz") as sa, np.load(b / "global_state.npz") as sb:
        if sorted(sa.files) != sorted(sb.files) or not all(np.array_equal(sa[k], sb[k]) for k in sa.files):
            return False
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in ("global_index.faiss", "poses.txt", "cameras.txt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=("default", "tiny"), default="default")
    parser.add_argument("--workers", type=int, default=2, help="cluster workers = plain threads")
    parser.add_argument("--chunk-size", type=int, default=None, help="images a task (default: visloc's)")
    parser.add_argument("--repeats", type=int, default=5, help="builds of each kind, interleaved (best and median)")
    parser.add_argument("--root", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to append the results to")
    args = parser.parse_args()

    root = args.root or Path(tempfile.mkdtemp(prefix="visloc-cluster-bench-"))
    world = root / f"world-{args.world}"
    if not (world / "dataset.json").is_file():
        make_world(world, WorldConfig() if args.world == "default" else TINY, progress=False)
    load = os.getloadavg()[0]
    plain, cluster, standing = [], [], []
    # the standing cluster idles while the other builds run, so that each repeat runs the three kinds back to
    # back (the machine's speed drifts over minutes on these shared hosts)
    running = StandingCluster(root, args.workers)
    try:
        for _ in range(args.repeats):
            plain.append(build(world, root / "plain", args.workers, None, args.chunk_size))
            cluster.append(build(world, root / "cluster", args.workers, f"local:{args.workers}", args.chunk_size))
            standing.append(build(world, root / "standing", args.workers, running.address, args.chunk_size))
    finally:
        running.close()
    identical = same_map(root / "plain", root / "cluster")
    identical_standing = same_map(root / "plain", root / "standing")
    best_plain, best_cluster, best_standing = min(plain), min(cluster), min(standing)
    overhead = best_cluster / best_plain - 1
    med_plain, med_cluster, med_standing = (float(np.median(t)) for t in (plain, cluster, standing))
    import json

    images = len(json.loads((root / "plain" / "map.json").read_text())["names"])
    command = "python benchmarks/cluster_build.py " + " ".join(sys.argv[1:])
    lines = [
        f"`{command}` ({datetime.date.today()}):",
        "",
        f"{args.world} world, {images} database images; {args.workers} cores: plain with {args.workers} threads, "
        f"cluster local:{args.workers} x 1 thread, chunks of {args.chunk_size or 'the default size'}; best of {args.repeats}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load {load:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end",
        "",
        "| build | seconds (each run, in order) | best | median | images/s (median) | identical map |",
        "|---|---|---:|---:|---:|---|",
        f"| plain `visloc map build` | {', '.join(f'{t:.1f}' for t in plain)} | {best_plain:.1f} | {med_plain:.1f} | "
        f"{images / med_plain:.2f} | |",
        f"| `--cluster local:{args.workers}` | {', '.join(f'{t:.1f}' for t in cluster)} | {best_cluster:.1f} | "
        f"{med_cluster:.1f} | {images / med_cluster:.2f} | {'yes' if identical else 'NO'} |",
        f"| `--cluster tcp://...` ({args.workers} one-thread workers started before) | "
        f"{', '.join(f'{t:.1f}' for t in standing)} | {best_standing:.1f} | {med_standing:.1f} | "
        f"{images / med_standing:.2f} | {'yes' if identical_standing else 'NO'} |",
        "",
        f"engine overhead (cluster / plain - 1), best of each: {100 * overhead:+.1f} % with `local:{args.workers}` "
        f"(its worker start-up counted), {100 * (best_standing / best_plain - 1):+.1f} % on a cluster that was "
        f"already running; medians: {100 * (med_cluster / med_plain - 1):+.1f} % and "
        f"{100 * (med_standing / med_plain - 1):+.1f} %",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        if not args.out.is_file():
            args.out.write_text("# Map build on a local Dask cluster\n\nWritten from the output of "
                                "`benchmarks/cluster_build.py` (see docs/scale.md).\n\n")
        with args.out.open("a") as f:
            f.write(text + "\n")
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)
    if not (identical and identical_standing):
        sys.exit(1)


if __name__ == "__main__":
    main()
