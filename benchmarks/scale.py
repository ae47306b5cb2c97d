"""The index at scale (not a test): IVF-PQ with on-disk lists on millions of clustered 512-D vectors, and the
projection of a map build to 1M and 100M database images.

For each ``--sizes`` N, in a work folder:

1. **Data.** A seeded mixture, generated in chunks of 65,536 rows that depend only on ``(seed, chunk)``
   (never all N in memory): ``--centres`` centres drawn N(0, I) in a ``--latent``-dimensional latent space;
   a vector is a centre plus a Gaussian spread of std ``--within`` along latent axis ``i`` scaled by
   ``i ** (-decay / 2)`` (normalised to an average std of ``--within``: a decaying spectrum, local
   intrinsic dimension about 14 for 64 axes and decay 1, as CNN descriptors have), mapped into 512-D by a
   random orthonormal basis, L2-normalised, plus isotropic noise of norm ``--noise``, L2-normalised again.
   Queries are fresh draws of the same mixture (another seed stream), not database vectors.
2. **Ground truth.** One pass over the chunks: exact inner-product top 10 of ``--queries`` queries
   (numpy, float32) and a seeded reservoir sample of ``train_size`` rows for training.
3. **Build.** ``visloc.retrieval.large_index.build_ondisk`` (by default its ``LargeIndexConfig``: PCA-rotation
   to 64-D, IVF with L2 after the PCA, PQ64x6: 48 code bytes + 8 id bytes a vector), a second pass over the chunks, shards of 1M vectors merged into one
   memory-mapped lists file.
4. **Query**, in a fresh process (so its memory is the index's, not the build's): open the index
   (lists memory-mapped), search the queries for each ``--nprobe`` with 1 and with 2 threads (all queries
   in one call, best of ``--repeats``), and read VmRSS (RssAnon: the process's own memory; RssFile: pages
   of the mapped lists file it touched).

Recall@10 here is "10-recall@10": the share of the exact top 10 found among the 10 returned, averaged
over queries; "1-recall@10" (the exact nearest neighbour among the 10 returned, the PQ literature's
recall@10) is reported too. Bytes per vector = (index file + lists file) / N.

The projection: per-image costs of a map build are read from ``docs/results/scale_build.md`` (written by
``benchmarks/cluster_build.py``) when it exists, else measured here by building a map of the tests' tiny
embedded world with one thread; together with the index costs measured above they give the cores and
hours for 1M and 100M database images, and what breaks first. Results: ``--out`` (``.md`` and ``.json``).

    python benchmarks/scale.py --sizes 200000 --queries 200 --out /tmp/scale_smoke   # a few minutes
    OMP_NUM_THREADS=2 python benchmarks/scale.py --sizes 1000000 10000000 --out docs/results/scale
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from visloc.retrieval.index import set_search_depth
from visloc.retrieval.large_index import LargeIndexConfig, build_ondisk, resident_bytes

CHUNK = 65_536
K = 10
DIM = 512
ROOT = Path(__file__).resolve().parents[1]


# --- the synthetic mixture -------------------------------------------------------------------------------


class Mixture:
    """The seeded generator of the module docstring (``chunk(i)`` depends only on the seed and ``i``)."""

    def __init__(self, seed: int, centres: int, latent: int, within: float, decay: float, noise: float) -> None:
        rng = np.random.default_rng([seed, 0])
        basis, _ = np.linalg.qr(rng.standard_normal((DIM, latent)))
        self.basis = np.ascontiguousarray(basis.T, dtype=np.float32)  # (latent, DIM), orthonormal rows
        self.centres = rng.standard_normal((centres, latent)).astype(np.float32)
        scale = np.arange(1, latent + 1, dtype=np.float64) ** (-decay / 2)
        self.scale = (within * scale * math.sqrt(latent / np.sum(scale**2))).astype(np.float32)
        self.seed, self.latent, self.noise = seed, latent, np.float32(noise / math.sqrt(DIM))

    def draw(self, stream: int, index: int, n: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, index])
        z = self.centres[rng.integers(0, len(self.centres), n)]
        z += rng.standard_normal((n, self.latent), dtype=np.float32) * self.scale
        x = z @ self.basis
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x += rng.standard_normal((n, DIM), dtype=np.float32) * self.noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def database(self, n: int) -> Iterator[np.ndarray]:
        for i, start in enumerate(range(0, n, CHUNK)):
            yield self.draw(1, i, min(CHUNK, n - start))

    def queries(self, n: int) -> np.ndarray:
        return self.draw(2, 0, n)


def ground_truth_and_sample(mix: Mixture, n: int, queries: np.ndarray, train_size: int, seed: int):
    """Exact top-K of ``queries`` over the database stream and a reservoir sample, in one pass."""
    best_s = np.full((len(queries), K), -np.inf, np.float32)
    best_i = np.full((len(queries), K), -1, np.int64)
    rng = np.random.default_rng(seed)  # the same key stream as large_index.reservoir_sample
    keep, keys, rows = np.zeros((0, DIM), np.float32), np.zeros(0), np.zeros(0, np.int64)
    start = 0
    for chunk in mix.database(n):
        sims = queries @ chunk.T
        top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
        s = np.concatenate([best_s, np.take_along_axis(sims, top, axis=1)], axis=1)
        i = np.concatenate([best_i, top + start], axis=1)
        order = np.argsort(-s, axis=1, kind="stable")[:, :K]
        best_s, best_i = np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
        k = rng.random(len(chunk))
        keep, keys = np.concatenate([keep, chunk]), np.concatenate([keys, k])
        rows = np.concatenate([rows, np.arange(start, start + len(chunk))])
        if len(keys) > train_size:
            sel = np.argpartition(keys, train_size - 1)[:train_size]
            keep, keys, rows = keep[sel], keys[sel], rows[sel]
        start += len(chunk)
    return best_i, np.ascontiguousarray(keep[np.argsort(rows, kind="stable")])


# --- the query process ---------------------------------------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def query_main(work: Path, nprobes: list[int], repeats: int, threads: list[int]) -> None:
    """Run in a fresh process: open, search, print one JSON line."""
    from visloc.retrieval.large_index import open_ondisk

    queries = np.load(work / "queries.npy")
    truth = np.load(work / "truth.npy")
    rss0 = resident_bytes()
    t = time.perf_counter()
    index = open_ondisk(work / "index" / "global_index.faiss")
    open_s = time.perf_counter() - t
    rss_open = resident_bytes()
    rows = []
    for nprobe in nprobes:
        set_search_depth(index, nprobe)
        row = {"nprobe": nprobe}
        for th in threads:
            faiss.omp_set_num_threads(th)
            best = math.inf
            for _ in range(repeats):
                t = time.perf_counter()
                _, got = index.search(queries, K)
                best = min(best, time.perf_counter() - t)
            row[f"qps_{th}"] = len(queries) / best
        row["recall10"] = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got, truth, strict=True)]))
        row["nn_in_top10"] = float(np.mean([b[0] in set(a) for a, b in zip(got, truth, strict=True)]))
        rows.append(row)
    print(json.dumps({"rows": rows, "open_s": open_s, "rss_start": rss0, "rss_open": rss_open,
                      "rss_end": _status("VmRSS"), "rss_anon_end": _status("RssAnon"),
                      "rss_file_end": _status("RssFile"), "vm_hwm": _status("VmHWM")}))


# --- one size --------------------------------------------------------------------------------------------


def nlist_for(n: int) -> int:
    """IVF lists: 4096 up to 3M vectors, 16384 above (FAISS's rule of thumb 4-16 sqrt(N): 12k-50k at 10M;
    two-level k-means trains them in a minute, the exact coarse assignment of 10M vectors takes ~15 min)."""
    return 4096 if n <= 3_000_000 else 16384


def run_size(n: int, args, mix: Mixture, queries: np.ndarray, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    nlist = args.nlist or nlist_for(n)
    config = LargeIndexConfig(nlist=nlist, m=args.m, nbits=args.nbits, pca_dim=args.pca_dim, nprobe=args.nprobe[0],
                              train_size=min(n, max(args.train_size, args.train_per_list * nlist)), seed=args.seed,
                              metric=args.metric, quantizer=args.quantizer,
                              two_level={"auto": None, "yes": True, "no": False}[args.two_level])
    print(f"[{n:,}] pass 1: ground truth of {len(queries)} queries + training sample of {config.train_size:,}",
          flush=True)
    t = time.perf_counter()
    truth, sample = ground_truth_and_sample(mix, n, queries, config.train_size, config.seed)
    gt_s = time.perf_counter() - t
    np.save(work / "queries.npy", queries)
    np.save(work / "truth.npy", truth)
    print(f"[{n:,}] {gt_s:.0f} s; pass 2: build {config.factory(DIM)}", flush=True)
    shutil.rmtree(work / "index", ignore_errors=True)
    t = time.perf_counter()
    stats = build_ondisk(lambda: mix.database(n), work / "index" / "global_index.faiss", config, sample=sample)
    build_s = time.perf_counter() - t
    del sample
    build_rss_peak = _status("VmHWM")
    print(f"[{n:,}] built in {build_s:.0f} s (train {stats.train_s:.0f}, add {stats.add_s:.0f}, merge "
          f"{stats.merge_s:.0f}); {stats.bytes_per_vector:.1f} bytes/vector; query process", flush=True)
    out = subprocess.run(
        [sys.executable, __file__, "--query-process", str(work), "--nprobe", *map(str, args.nprobe),
         "--repeats", str(args.repeats)],
        check=True, capture_output=True, text=True)
    query = json.loads(out.stdout.strip().splitlines()[-1])
    result = {
        "n": n, "dim": DIM, "queries": len(queries), "factory": config.factory(DIM), "config": stats.config,
        "pass1_s": gt_s, "build_s": build_s, "generate_and_add_s": build_s - stats.train_s - stats.merge_s,
        "train_s": stats.train_s, "add_s": stats.add_s, "merge_s": stats.merge_s, "file_bytes": stats.file_bytes,
        "bytes_per_vector": stats.bytes_per_vector, "shards": stats.shards, "build_peak_rss": build_rss_peak,
        **{k: v for k, v in query.items()},
    }
    if not args.keep:
        shutil.rmtree(work / "index", ignore_errors=True)
    return result


# --- per-image costs of a map build ----------------------------------------------------------------------


def map_build_costs(args) -> dict:
    """Seconds per database image (one core) and map bytes per image."""
    cost: dict = {}
    results = ROOT / "docs" / "results" / "scale_build.md"
    if results.is_file():
        text = results.read_text()
        images = re.findall(r"(\d+) database images; (\d+) cores", text)
        plain = re.findall(r"\| plain `visloc map build` \| [^|]* \| ([\d.]+) \|", text)
        if images and plain:
            n_img, cores = map(int, images[-1])
            cost = {"source": "docs/results/scale_build.md (plain build, last block)",
                    "seconds_per_image_core": float(plain[-1]) * cores / n_img, "images": n_img}
    if args.build_world == "none" and not cost:
        return {}
    tmp = Path(tempfile.mkdtemp(prefix="visloc-scale-build-"))
    try:
        from visloc.datasets.synthetic import WorldConfig, make_world
        from visloc.localization.build import build_map

        world = tmp / "world"
        config = WorldConfig(num_scenes=2, train_traversals=2, frames_per_train_traversal=12,
                             frames_per_test_traversal=6, width=320, height=240, focal=262.5, seed=3) \
            if args.build_world == "tiny" else WorldConfig()
        make_world(world, config, progress=False)
        faiss.omp_set_num_threads(1)
        t = time.perf_counter()
        build_map(world, tmp / "map", split="train")
        seconds = time.perf_counter() - t
        names = json.loads((tmp / "map" / "map.json").read_text())["names"]
        sizes = {p.name: p.stat().st_size for p in (tmp / "map").iterdir() if p.is_file()}
        measured = {"bytes_per_image": {k: v / len(names) for k, v in sizes.items()},
                    "bytes_measured_on": f"{len(names)} images of {config.width}x{config.height} px"}
        if not cost:
            measured |= {"source": f"measured here: `build_map` of the {args.build_world} embedded world, 1 thread",
                         "seconds_per_image_core": seconds / len(names), "images": len(names),
                         "image_size": [config.width, config.height]}
        else:
            measured["seconds_per_image_core_here"] = seconds / len(names)
        cost |= measured  # the build time of scale_build.md stays: its image count and size are its own
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cost


# --- report ----------------------------------------------------------------------------------------------


def gib(x: float) -> str:
    return f"{x / 2**30:.2f} GiB"


def projection(results: list[dict], build: dict) -> list[str]:
    """Cores and hours for 1M and 100M database images from the measured costs."""
    big = max(results, key=lambda r: r["n"])
    add_per_vec = big["add_s"] / big["n"] * 2  # seconds of one core per vector (measured with 2 threads)
    train_s = big["train_s"]
    nlist = big["config"]["nlist"]
    code_bytes = LargeIndexConfig(**big["config"]).bytes_per_vector()  # codes + ids in the lists file
    bpv = big["bytes_per_vector"] - big["file_bytes"] / big["n"] + code_bytes
    lines = ["## Projection: 1M and 100M database images", ""]
    if not build:
        lines += ["(no map-build costs: run with `--build-world tiny` or after benchmarks/cluster_build.py)", ""]
        return lines
    spi = build["seconds_per_image_core"]
    per_image = build.get("bytes_per_image", {})
    lines += [
        f"Inputs, measured: a map build costs **{spi:.3f} s of one core per database image** "
        f"({build['source']}; {build['images']} images"
        + (f" of {build['image_size'][0]}x{build['image_size'][1]} px" if "image_size" in build else "")
        + "); the index costs "
        f"{add_per_vec * 1e6:.1f} µs of one core per vector to encode (PCA, coarse assignment among {nlist} "
        f"lists, PQ) and {train_s:.0f} s to train on {big['config']['train_size']:,} vectors (2 threads), "
        f"{code_bytes} bytes a vector on disk, at {big['n']:,} vectors.",
        "",
        "| database images | map build, core-hours | cores for 8 h | index encode, core-hours | "
        "index lists on disk | Dask tasks (32 images) | shard folders |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in (1_000_000, 100_000_000):
        core_h = n * spi / 3600
        lines.append(
            f"| {n:,} | {core_h:,.0f} | {math.ceil(core_h / 8):,} | {n * add_per_vec / 3600:,.1f} | "
            f"{gib(n * bpv)} | {2 * n // 32:,} | {n // 32:,} |")
    feat = per_image.get("local_features.h5", 0)
    lines += [""]
    if feat:
        on = f" on {build['bytes_measured_on']}" if "bytes_measured_on" in build else ""
        lines += [f"Map files per image (measured{on}): local features {feat / 1024:.0f} KiB, "
                  + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sorted(per_image.items())
                              if k != "local_features.h5" and v > 512) + ".", ""]
    lines += ["Where it breaks first, in order:", ""]
    tasks_100m = 2 * 100_000_000 // 32
    items = []
    if feat:
        items.append(
            f"**Storage of the local features.** {feat / 1024:.0f} KiB an image is {feat * 1e6 / 2**40:.2f} TiB at "
            f"1M and {feat * 1e8 / 2**40:.0f} TiB at 100M images, in one HDF5 file written by one client: at 100M "
            "it must stay sharded (one file per shard, never merged) and the VLAD codebook must be fitted on a "
            "sample of the descriptors, not on all of them as the one-machine build does.")
    items.append(
        f"**The scheduler.** Chunks of 32 images make {2 * 1_000_000 // 32:,} tasks at 1M (phases a and c; "
        f"Dask's scheduler handles that at its ~1 ms a task, well under a minute of overhead) but "
        f"{tasks_100m:,} at 100M: the graph alone is gigabytes on the scheduler and its per-task overhead is "
        f"about {tasks_100m * 1e-3 / 3600:.1f} h of serial scheduling; chunks of 1,000+ images (or a Slurm array "
        f"of `--shard i/n`) are needed.")
    items.append(
        f"**Shard count.** {100_000_000 // 32:,} shard folders at 100M (each several files) exceed what a "
        "shared file system lists and what one merging client opens comfortably (file handles, metadata "
        "load); shards should be per worker-batch (10^3-10^4 of them), merged hierarchically.")
    items.append(
        f"**Index training.** The {nlist} lists were trained on {big['config']['train_size']:,} vectors in "
        f"{train_s:.0f} s here (two-level k-means: {'yes' if big['config'].get('two_level') is not False and nlist > 8192 else 'no'}). "
        "At 100M the lists should be 65,536-262,144 (4-16 sqrt(N)) trained on ~40 vectors a list (2.6M-10M "
        "vectors, 0.7-2.6 GiB at 64-D): two-level k-means keeps that to minutes, but assigning every vector to its "
        "list with the exact (flat) quantizer costs nlist distances a vector, the bulk of the encode time above "
        "(it grows with nlist): at 65,536+ lists an HNSW quantizer (`quantizer='hnsw'`, measured to lose recall "
        "here at 16,384 lists) or a GPU for the assignment; encoding itself parallelises over shards (the trained "
        "index is one small file).")
    items.append(
        f"**Memory and the lists file.** The codes and ids are {gib(1e8 * bpv)} at 100M: they fit on one "
        "machine's disk and page cache (a query touches only nprobe lists), and merging is a sequential "
        "copy; not the first thing to break. Adding images rewrites the lists file (a copy of it) per batch, "
        "so batch additions.")
    lines += [f"{i + 1}. {item}" for i, item in enumerate(items)] + [""]
    return lines


def report(results: list[dict], build: dict, args, load: tuple[float, float]) -> str:
    lines = [
        "# The index at scale",
        "",
        f"`{' '.join(['python benchmarks/scale.py', *sys.argv[1:]])}` ({datetime.date.today()}); "
        f"faiss {faiss.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, load {load[0]:.1f} at "
        f"start, {load[1]:.1f} at end. See docs/scale.md (\"The index at scale\") for what is measured.",
        "",
        f"Data: the seeded mixture of benchmarks/scale.py: {args.centres:,} centres in a {args.latent}-D "
        f"latent space (within-cluster std {args.within}, spectrum decay {args.decay}), random orthonormal "
        f"map to {DIM}-D, isotropic noise {args.noise}, unit rows; {args.queries} fresh queries; exact top 10 "
        "by a streamed float32 scan. Recall@10 = overlap of the 10 returned with the exact top 10 "
        "(10-recall@10); NN@10 = exact nearest neighbour among the 10 returned (1-recall@10).",
        "",
        "| vectors | index | train s | encode+add s | merge s | build s (total) | bytes/vector | build peak RSS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['n']:,} | `{r['factory']}` | {r['train_s']:.0f} | {r['add_s']:.0f} | {r['merge_s']:.1f} | "
            f"{r['build_s']:.0f} | {r['bytes_per_vector']:.1f} | {gib(r['build_peak_rss'])} |")
    lines += ["", "Queries (lists memory-mapped; a fresh process):", "",
              "| vectors | nprobe | queries/s, 1 thread | queries/s, 2 threads | recall@10 | NN@10 | "
              "RSS after open | RSS at end (anon + mapped file) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for row in r["rows"]:
            lines.append(
                f"| {r['n']:,} | {row['nprobe']} | {row['qps_1']:,.0f} | {row['qps_2']:,.0f} | "
                f"{row['recall10']:.3f} | {row['nn_in_top10']:.3f} | {gib(r['rss_open'])} | "
                f"{gib(r['rss_end'])} ({gib(r['rss_anon_end'])} + {gib(r['rss_file_end'])}) |")
    lines += [""]
    targets = []
    for r in results:
        ok = [row for row in r["rows"] if row["recall10"] >= 0.9 and row["qps_2"] >= 500]
        best = max(ok, key=lambda row: row["qps_2"]) if ok else None
        targets.append(
            f"- {r['n']:,} vectors: {r['bytes_per_vector']:.1f} bytes/vector "
            f"({'≤' if r['bytes_per_vector'] <= 64 else '>'} 64); "
            + (f"nprobe {best['nprobe']} reaches recall@10 {best['recall10']:.3f} at {best['qps_2']:,.0f} queries/s "
               "on 2 threads (targets met)" if best else
               "no nprobe reaches both recall@10 ≥ 0.9 and ≥ 500 queries/s on 2 threads (target missed)"))
    lines += ["Targets (≤ 64 bytes/vector, recall@10 ≥ 0.9, ≥ 500 queries/s on 2 cores):", "", *targets, ""]
    lines += projection(results, build)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0: 4096 up to 3M vectors, else 8192)")
    parser.add_argument("--m", type=int, default=LargeIndexConfig.m)
    parser.add_argument("--nbits", type=int, default=LargeIndexConfig.nbits, help="bits per PQ code")
    parser.add_argument("--pca-dim", type=int, default=LargeIndexConfig.pca_dim)
    parser.add_argument("--metric", choices=("l2", "ip"), default=LargeIndexConfig.metric,
                        help="comparison after the PCA (LargeIndexConfig.metric)")
    parser.add_argument("--quantizer", choices=("flat", "hnsw"), default=LargeIndexConfig.quantizer)
    parser.add_argument("--two-level", choices=("auto", "yes", "no"), default="auto",
                        help="two-level k-means for the lists (auto: above 8192 lists, L2)")
    parser.add_argument("--train-size", type=int, default=262_144, help="at least; train-per-list x nlist if more")
    parser.add_argument("--train-per-list", type=int, default=40,
                        help="training vectors per IVF list (FAISS warns below 39)")
    parser.add_argument("--centres", type=int, default=16_384)
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--within", type=float, default=0.5)
    parser.add_argument("--decay", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--build-world", choices=("tiny", "default", "none"), default="tiny",
                        help="embedded world whose map build gives the per-image time when docs/results/"
                             "scale_build.md lacks it; 'none': that time from scale_build.md only (nothing projected "
                             "without it), the default world still mapped once for the map bytes per image")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the indexes in the work folder")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    parser.add_argument("--query-process", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.query_process is not None:
        query_main(args.query_process, args.nprobe, args.repeats, [1, 2])
        return
    load0 = os.getloadavg()[0]
    work = args.work or Path(tempfile.mkdtemp(prefix="visloc-scale-"))
    mix = Mixture(args.seed, args.centres, args.latent, args.within, args.decay, args.noise)
    queries = mix.queries(args.queries)
    results = []
    for n in args.sizes:
        results.append(run_size(n, args, mix, queries, work / f"n{n}"))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "config"}, indent=None), flush=True)
    build = map_build_costs(args)
    text = report(results, build, args, (load0, os.getloadavg()[0]))
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(
            {"argv": sys.argv[1:], "date": str(datetime.date.today()), "faiss": faiss.__version__,
             "results": results, "map_build": build}, indent=1))
    if args.work is None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
