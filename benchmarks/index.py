"""Global-index benchmark (not a test): exact flat inner product vs IVF-PQ vs a plain torch matmul + topk.

On ``--n`` seeded clustered unit vectors of dimension ``--dim`` (512 by default: ``--clusters`` centres,
each cluster spread along its own ``--latent``-dimensional subspace plus isotropic noise) and ``--queries``
fresh samples from the same distribution, all in one run, prints a markdown table of: build time
(training + adding; for torch the copy to the device), bytes per vector (the serialised FAISS index;
the raw float32 tensor for torch), queries per second (``--queries`` searched in blocks, best of
``--repeats``) and two recalls against exact search (the flat index's results): recall@10 as in the PQ /
FAISS literature (Jégou et al. 2011, "1-recall@10": the share of queries whose exact nearest neighbour is
among the 10 returned) and the overlap of the 10 returned with the exact top 10 ("10-recall@10").

    python benchmarks/index.py --n 20000                 # smoke
    python benchmarks/index.py --n 1000000 --nprobe 64   # the big size (about 2 GB of float32 database)
    python benchmarks/index.py --n 1000000 --m 32 --refine-m 16 --refine-nlist 2048 --nprobe 16  # + re-ranking
    python benchmarks/index.py --n 1000000 --device cuda # torch on the GPU
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from visloc.io.atomic import write_text
from visloc.retrieval.index import GlobalIndex, IndexConfig

K = 10


def clustered(n: int, nq: int, dim: int, clusters: int, latent: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, dim)`` database and ``(nq, dim)`` queries, float32 unit rows, drawn from one seeded mixture."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    basis = (rng.normal(size=(clusters, latent, dim)) / math.sqrt(dim)).astype(np.float32)
    total = n + nq
    label = rng.integers(0, clusters, total)
    x = np.empty((total, dim), np.float32)
    chunk = 65_536
    for start in range(0, total, chunk):  # centre + isotropic noise, in chunks (no float64 copy of it all)
        stop = min(start + chunk, total)
        noise = rng.standard_normal(size=(stop - start, dim), dtype=np.float32) * np.float32(0.1 / math.sqrt(dim))
        x[start:stop] = centers[label[start:stop]] + noise
    z = (0.5 * rng.standard_normal(size=(total, latent), dtype=np.float32))
    for c in range(clusters):  # + each cluster's own low-dimensional spread
        rows = np.flatnonzero(label == c)
        x[rows] += z[rows] @ basis[c]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


def recall(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """``(1-recall@K, K-recall@K)``: the exact nearest neighbour among the K returned; the overlap with the
    exact top K."""
    nn = float(np.mean([b[0] in set(a) for a, b in zip(got, ref, strict=True)]))
    overlap = float(np.mean([len(set(a) & set(b)) / ref.shape[1] for a, b in zip(got, ref, strict=True)]))
    return nn, overlap


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_faiss(name: str, db, q, names, config: IndexConfig, args, ref) -> tuple[list, np.ndarray]:
    t = time.perf_counter()
    index = GlobalIndex.build(db, names, config)
    build = time.perf_counter() - t
    seconds, (_, idx) = best_time(lambda: index.search(q, K, block=args.block), args.repeats)
    row = [name, build, index.nbytes() / len(index), len(q) / seconds, recall(idx, ref if ref is not None else idx)]
    return row, idx


def bench_torch(db, q, args, ref) -> list:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    dbt = torch.from_numpy(db).to(device)
    sync()
    build = time.perf_counter() - t
    qt = torch.from_numpy(q)

    def search() -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(qt), args.torch_block):  # (block, N) similarities at a time
                sim = qt[start : start + args.torch_block].to(device) @ dbt.T
                out.append(sim.topk(K, dim=1).indices.cpu())
        sync()
        return torch.cat(out).numpy()

    search()  # warm-up (CUDA context, kernels)
    seconds, idx = best_time(search, args.repeats)
    return [f"torch matmul+topk ({device.type})", build, db.shape[1] * db.itemsize, len(q) / seconds, recall(idx, ref)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="database vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default: 4 sqrt(n), at most n / 39)")
    parser.add_argument("--m", type=int, default=64, help="PQ sub-quantizers (bytes a vector at nbits=8)")
    parser.add_argument("--nbits", type=int, default=8)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32], help="one IVF-PQ row each")
    parser.add_argument("--refine-m", type=int, default=0,
                        help="also build IVF-PQ + a re-ranking PQ of this many bytes (IndexIVFPQR), one row per "
                             "nprobe")
    parser.add_argument("--refine-nlist", type=int, default=None, help="IVF lists of the re-ranking index "
                        "(default: --nlist's)")
    parser.add_argument("--k-factor", type=int, default=4, help="re-ranking shortlist, k_factor * k")
    parser.add_argument("--skip-plain", action="store_true", help="no plain IVF-PQ rows (only with --refine-m)")
    parser.add_argument("--train-size", type=int, default=100_000)
    parser.add_argument("--block", type=int, default=1024, help="FAISS query block")
    parser.add_argument("--torch-block", type=int, default=256, help="torch query block ((block, n) floats)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="FAISS / torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None,
                        help="also append the table, with its command line, to this markdown file")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    nlist = args.nlist or max(1, min(int(4 * math.sqrt(args.n)), args.n // 39))

    t = time.perf_counter()
    db, q = clustered(args.n, args.queries, args.dim, args.clusters, args.latent, args.seed)
    gen = time.perf_counter() - t
    names = [str(i) for i in range(args.n)]

    flat_row, ref = bench_faiss("faiss flat (exact)", db, q, names, IndexConfig(kind="flat"), args, None)
    rows = [flat_row]
    variants = [] if args.skip_plain and args.refine_m else [(nlist, 0)]
    if args.refine_m:
        variants.append((args.refine_nlist or nlist, args.refine_m))
    for lists, refine_m in variants:  # one trained index each, one row per nprobe
        config = IndexConfig(kind="ivfpq", nlist=lists, m=args.m, nbits=args.nbits, train_size=args.train_size,
                             refine_m=refine_m, k_factor=args.k_factor)
        t = time.perf_counter()
        ivf = GlobalIndex.build(db, names, config)
        ivf_build = time.perf_counter() - t
        label = f"faiss IVF{lists},PQ{args.m}x{args.nbits}" + (f"+{refine_m} (re-rank k_factor={args.k_factor})"
                                                                  if refine_m else "")
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe
            seconds, (_, idx) = best_time(lambda index=ivf: index.search(q, K, block=args.block), args.repeats)
            rows.append([f"{label} nprobe={ivf.nprobe}", ivf_build, ivf.nbytes() / len(ivf), len(q) / seconds,
                         recall(idx, ref)])
    rows.append(bench_torch(db, q, args, ref))

    lines = [f"n={args.n} dim={args.dim} queries={args.queries} clusters={args.clusters} latent={args.latent} "
             f"seed={args.seed} k={K}; faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), "
             f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
             f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.1f}; data generated in "
             f"{gen:.1f} s", "",
             "| method | build s | bytes/vector | queries/s | x exact | recall@10 (1-recall@10) | 10-recall@10 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    exact_qps = rows[0][3]
    for name, build, bpv, qps, (nn, overlap) in rows:
        lines.append(f"| {name} | {build:.2f} | {bpv:.1f} | {qps:,.0f} | {qps / exact_qps:.1f} | {nn:.3f} | "
                     f"{overlap:.3f} |")
    print("\n".join(lines))
    if args.out is not None:
        command = "python benchmarks/index.py " + " ".join(sys.argv[1:])
        previous = args.out.read_text() if args.out.is_file() else "# Global index benchmark\n"
        write_text(args.out, previous + f"\n`{command}` ({time.strftime('%Y-%m-%d')}):\n\n" + "\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
