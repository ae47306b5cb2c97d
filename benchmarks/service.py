"""Load test of ``visloc serve`` on loopback (the service issue's numbers).

A map of the embedded world's training frames is served by a real ``visloc serve`` subprocess; client threads
post the world's test queries (their PNG files as they are, with their intrinsics) to ``/v1/localize`` with
``visloc.client``. Reported per concurrency level (1, 4 and 16 clients by default): throughput, p50 / p95 /
p99 latency of the answered requests, deliberate 429s (a client waits the ``Retry-After`` and sends again) and
other errors; for every answered pose, the difference to ``visloc localize`` (the batch command's
``localize`` function) on the same image; and the server's resident memory (``VmRSS``) before and after
``--memory-requests`` requests, after a warm-up.

    python benchmarks/service.py                       # writes docs/results/service.md and .json
    python benchmarks/service.py --levels 1 4 --requests 40 --memory-requests 200 --no-write

Bounded: at most ``--requests`` answered requests per level and ``--max-seconds`` per level.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from visloc.client import ServiceError
from visloc.client import localize as client_localize
from visloc.datasets import load_frames
from visloc.datasets.synthetic import WorldConfig, make_world
from visloc.geometry import Pose
from visloc.io.atomic import write_json, write_text
from visloc.localization import LocalizeConfig, MapConfig, build_map, localize

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def pose_difference(answer: dict[str, Any], b: Pose) -> float:
    """The largest absolute difference between the answered ``qvec`` / ``tvec`` (as the server wrote them) and
    those of ``b`` (0: the same pose to the last bit)."""
    q, t = np.array(answer["qvec"]), np.array(answer["tvec"])
    return float(max(np.abs(q - b.qvec).max(), np.abs(t - b.t).max()))


class Server:
    """``visloc serve MAP`` as a subprocess on a free loopback port."""

    def __init__(self, map_dir: Path, queue_size: int, workers: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        cmd = [sys.executable, "-c", "from visloc.cli import main; main()", "serve", str(map_dir), "--port", port,
               "--queue-size", str(queue_size), "--workers", str(workers)]
        self.log = log.open("w")
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {log}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        self.log.close()


def run_level(url: str, queries: list[Any], clients: int, requests: int, max_seconds: float,
              reference: dict[str, Pose]) -> dict[str, Any]:
    """``clients`` threads share ``requests`` sends (429s are resent after their ``Retry-After``)."""
    lock = threading.Lock()
    latencies: list[float] = []
    rejected = [0]
    errors: list[str] = []
    differences: list[float] = []
    not_localized = [0]
    mismatched: list[str] = []
    counter = [0]
    deadline = time.monotonic() + max_seconds

    def take() -> int | None:
        with lock:
            if counter[0] >= requests or time.monotonic() > deadline:
                return None
            counter[0] += 1
            return counter[0] - 1

    def client() -> None:
        while (k := take()) is not None:
            frame = queries[k % len(queries)]
            while True:
                t = time.perf_counter()
                try:
                    answer = client_localize(url, frame.image_path, frame.camera, name=frame.name)
                except ServiceError as e:
                    if e.status == 429:
                        with lock:
                            rejected[0] += 1
                        time.sleep(float(e.retry_after or 1))
                        if time.monotonic() > deadline:
                            return
                        continue
                    with lock:
                        errors.append(str(e))
                    break
                elapsed = time.perf_counter() - t
                with lock:
                    latencies.append(elapsed)
                    ref = reference.get(frame.name)
                    if answer.pose is None or ref is None:
                        if (answer.pose is None) != (ref is None):
                            mismatched.append(frame.name)
                        not_localized[0] += answer.pose is None
                    else:
                        differences.append(pose_difference(answer.answer["pose"], ref))
                break

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies) if latencies else np.array([np.nan])
    diffs = np.array(differences) if differences else np.zeros(1)
    return {
        "clients": clients, "answered": len(latencies), "seconds": wall,
        "throughput": len(latencies) / wall if wall > 0 else 0.0,
        "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)), "rejected_429": rejected[0], "errors": len(errors),
        "error_examples": errors[:3], "not_localized": not_localized[0], "localized_mismatch": mismatched,
        "identical_poses": int((diffs == 0).sum()) if differences else 0, "compared_poses": len(differences),
        "max_pose_difference": float(diffs.max()),
    }


def markdown(r: dict[str, Any]) -> str:
    single = next((row for row in r["levels"] if row["clients"] == 1), None)
    lines = [
        "# Localization service under load",
        "",
        f"Produced by `python benchmarks/service.py` on {os.cpu_count()} shared CPU cores (load average "
        f"{r['load_before']:.1f} before, {r['load_after']:.1f} after), {r['date']}. Server: `visloc serve` (1 worker, "
        f"queue {r['queue_size']}) on loopback with the embedded world's map ({r['map_images']} images); clients: "
        f"`visloc.client.localize` threads in one process posting the {r['queries']} test queries' PNG files. A "
        "429 is resent after its `Retry-After`; latency is of the answered requests.",
        "",
        "| clients | answered | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | p99 / single-client p50 | 429s | "
        "other errors | poses against `visloc localize` |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in r["levels"]:
        ratio = row["p99"] / single["p50"] if single else float("nan")
        lines.append(
            f"| {row['clients']} | {row['answered']} | {row['throughput']:.2f} | {1000 * row['p50']:.0f} | "
            f"{1000 * row['p95']:.0f} | {1000 * row['p99']:.0f} | {ratio:.2f} | {row['rejected_429']} | "
            f"{row['errors']} | {row['identical_poses']} of {row['compared_poses']} identical (max entry difference "
            f"{row['max_pose_difference']:.1e}); localized or not: {len(row['localized_mismatch'])} disagree |")
    if r.get("compared_queue_sizes"):
        lines += ["", "The same load against servers with other queue sizes (a longer queue answers more of the "
                  "requests it admits later instead of turning them away):", "",
                  "| queue size | clients | answered | throughput (req/s) | p50 (ms) | p99 (ms) | "
                  "p99 / single-client p50 | 429s | other errors |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in [{**r["levels"][-1], "queue_size": r["queue_size"]}, *r["compared_queue_sizes"]]:
            ratio = row["p99"] / single["p50"] if single else float("nan")
            lines.append(f"| {row['queue_size']} | {row['clients']} | {row['answered']} | {row['throughput']:.2f} | "
                         f"{1000 * row['p50']:.0f} | {1000 * row['p99']:.0f} | {ratio:.2f} | {row['rejected_429']} | "
                         f"{row['errors']} |")
    m = r["memory"]
    lines += [
        "",
        f"Memory: {m['requests']} requests at {m['clients']} clients after a warm-up of {m['warmup']} requests (every "
        f"query once, which fills the map's bounded caches of database features and points): resident "
        f"{m['before_mib']:.1f} MiB before, {m['after_mib']:.1f} MiB after ({100 * m['growth']:+.2f} %; "
        f"{m.get('started_mib', float('nan')):.1f} MiB when the server had just loaded the map); "
        f"{m['run']['errors']} errors, {m['run']['rejected_429']} 429s, {m['run']['identical_poses']} of "
        f"{m['run']['compared_poses']} poses identical to `visloc localize`'s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/visloc_service_bench"))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=80, help="answered requests per level")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="per level")
    parser.add_argument("--memory-requests", type=int, default=1000)
    parser.add_argument("--memory-clients", type=int, default=4)
    parser.add_argument("--queue-size", type=int, default=1, help="the server's --queue-size")
    parser.add_argument("--compare-queue-sizes", type=int, nargs="*", default=[8],
                        help="also run the largest level against servers with these --queue-size values")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    root = make_world(args.work / "world", WorldConfig(), progress=False)
    map_dir = args.work / "map"
    if not (map_dir / "map.json").is_file():
        build_map(root, map_dir, MapConfig(), split="train")
    queries = load_frames(root, split="test").frames
    summary = localize(map_dir, queries, args.work / "reference" / "poses.txt", LocalizeConfig())
    reference = {r.name: r.pose for r in summary.results if r.pose is not None}
    print(f"reference: visloc localize placed {len(reference)} of {len(queries)} queries", flush=True)

    load_before = os.getloadavg()[0]
    server = Server(map_dir, args.queue_size, 1, args.work / "server.log")
    started = rss_mib(server.process.pid)
    try:
        levels = []
        for clients in args.levels:
            row = run_level(server.url, queries, clients, args.requests, args.max_seconds, reference)
            levels.append(row)
            print(f"{clients} clients: {row['answered']} answered, {row['throughput']:.2f} req/s, p50 "
                  f"{1000 * row['p50']:.0f} ms, p99 {1000 * row['p99']:.0f} ms, 429s {row['rejected_429']}, errors "
                  f"{row['errors']}", flush=True)
        # the warm-up sends every query once: the map's bounded caches (256 database images' features and
        # points) fill with what these queries retrieve, so the growth below is what stays (a leak), not the caches
        warmup = run_level(server.url, queries, args.memory_clients, len(queries), args.max_seconds, reference)
        before = rss_mib(server.process.pid)
        run = run_level(server.url, queries, args.memory_clients, args.memory_requests, 10 * args.max_seconds,
                        reference)
        after = rss_mib(server.process.pid)
        print(f"memory: {before:.1f} -> {after:.1f} MiB over {run['answered']} requests", flush=True)
    finally:
        server.stop()
    compared = []
    for queue_size in args.compare_queue_sizes:
        other = Server(map_dir, queue_size, 1, args.work / f"server_queue{queue_size}.log")
        try:
            row = run_level(other.url, queries, max(args.levels), args.requests, args.max_seconds, reference)
        finally:
            other.stop()
        compared.append(row | {"queue_size": queue_size})
        print(f"queue {queue_size}, {row['clients']} clients: p99 {1000 * row['p99']:.0f} ms", flush=True)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "load_before": load_before, "load_after": os.getloadavg()[0],
        "queue_size": args.queue_size, "queries": len(queries), "map_images": len(load_frames(root, split="train").frames),
        "levels": levels, "compared_queue_sizes": compared,
        "memory": {"requests": run["answered"], "clients": args.memory_clients, "warmup": warmup["answered"],
                   "started_mib": started, "before_mib": before, "after_mib": after, "growth": (after - before) / before, "run": run},
    }
    text = markdown(results)
    print(text)
    if not args.no_write:
        write_text(REPO / "docs" / "results" / "service.md", text)
        write_json(REPO / "docs" / "results" / "service.json", results)


if __name__ == "__main__":
    main()
