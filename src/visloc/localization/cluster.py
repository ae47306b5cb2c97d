"""Map building and batch localization on a Dask cluster (``--cluster local:N`` or ``tcp://SCHEDULER``).

Imported only when a cluster is asked for: without ``--cluster`` nothing here (nor Dask) is loaded.

``build_map_on_cluster`` runs the per-image phases of a map build as tasks and the rest on the client:

a. local features (and per-image global descriptors): the database names, sorted, in chunks of
   ``chunk_size`` images (by default :func:`task_size`: 32, fewer on small maps so that the workers finish
   together); each task writes its chunk as a shard folder ``MAP/shards/KKKKK-of-NNNNN/``
   (:func:`~visloc.localization.shards.write_shard`: atomic files, manifest last) and returns its path.
   A chunk whose shard is complete is not submitted again, so a rerun after an interrupted client resumes;
   Dask reruns the tasks of a worker that dies.
b. the client merges the shards into ``MAP`` and fits the global descriptor (the VLAD codebook) there;
c. the per-image work that follows, as tasks over chunks that read ``MAP``'s files and return arrays
   (:data:`~visloc.localization.build.Mapper`): global descriptors of the fitted descriptor, 3D points from
   depth, or the matching of the database pairs to triangulate;
d. the index, the triangulation, the files and the manifest on the client. The shards are removed once the
   map is complete (a rerun of a complete map extracts nothing again).

The per-image computations are those of the one-machine build (one thread each: results do not depend
on it) and the client writes in a fixed order, so the map is the same bit for bit.

``localize(..., cluster=...)`` (:mod:`.localize`) sends chunks of queries to the workers, each of which opens
the map once per process (:func:`localize_chunk`), and writes the results in query order, as the plain run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..io.h5 import list_h5_names
from . import map as M
from .build import Mapper, MapSummary, plan_build, start_build
from .shards import ShardSpec, build_signature, merge_into, shard_complete, shard_slice, write_shard
from .triangulation import TriangulationConfig

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

#: Where the chunk shards of a cluster build are written (removed when the map is complete).
SHARDS_DIR = "shards"


def parse_cluster(spec: str) -> tuple[str, Any]:
    """``("local", N)`` for ``local:N``, ``("address", spec)`` for ``tcp://host:port`` (or another Dask
    scheme).

    Raises:
        ConfigError: anything else.
    """
    if spec.startswith("local:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"--cluster {spec!r}: local:N needs a number of workers N >= 1")
        return "local", n
    if "://" in spec:
        return "address", spec
    raise ConfigError(f"--cluster {spec!r}: expected local:N (N worker processes here) or the scheduler's "
                      "address, tcp://HOST:PORT")


@contextlib.contextmanager
def connect(cluster: str | Client) -> Iterator[Client]:
    """A Dask client of ``cluster``: a spec (:func:`parse_cluster`; ``local:N`` starts ``N`` single-threaded
    worker processes here, closed at the end) or an existing client (left open)."""
    if not isinstance(cluster, str):
        yield cluster
        return
    kind, value = parse_cluster(cluster)
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--cluster runs on Dask: install it with `pip install 'visloc[cluster]'` "
                          "(dask.distributed)") from None

    debug = logger.isEnabledFor(logging.DEBUG)
    with contextlib.ExitStack() as stack:
        if not debug:  # Dask's start/stop chatter, unless visloc logs debug messages
            logging.getLogger("distributed").setLevel(logging.WARNING)
            stack.enter_context(dask.config.set({"logging.distributed": "warning"}))
        if kind == "local":
            with _environ(LOCAL_WORKER_ENV):  # the nannies keep it for a worker they restart
                # the workers' own log: errors only (a Ctrl-C made each warn of its cancelled task), all with -v
                local = LocalCluster(n_workers=value, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     env={"TQDM_DISABLE": "1"}, silence_logs=logging.DEBUG if debug else logging.ERROR)
            lc = stack.enter_context(local)
            yield stack.enter_context(Client(lc))
        else:
            yield stack.enter_context(Client(value))


def _single_threaded() -> None:
    """One thread per task in a worker process (the worker gives each task its own core), and the malloc
    tuning of the command line (:func:`~visloc.runtime.tune_malloc`: without it every image buffer is
    page-faulted in again, 7-9 s of kernel time per worker on the default world's map)."""
    import cv2
    import torch

    _tune_once()
    cv2.setNumThreads(1)
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


_tuned = False


def _tune_once() -> None:
    """:func:`~visloc.runtime.tune_malloc` in this worker process, at its first task."""
    global _tuned
    if not _tuned:
        from ..runtime import tune_malloc

        _tuned = tune_malloc() or True


def _tuned_task(task: Callable[..., list], *args: Any) -> list:
    _tune_once()
    return task(*args)


#: The environment of the workers of ``local:N``: one-thread OpenMP/BLAS pools, read by the libraries when they
#: load (Dask's ``pre-spawn-environ`` holds the same values but yields to the client's own, e.g. a plain
#: build's ``OMP_NUM_THREADS=2``: two such pools per worker spin against each other on N cores).
LOCAL_WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` in the block (the worker processes started there inherit them),
    restored after (a Dask nanny also writes its start-up environment into it)."""
    before = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


def _warm() -> None:
    _single_threaded()
    from . import build, shards  # noqa: F401  (the imports every task needs: torch, OpenCV, h5py, FAISS)


def warm_up(client: Client) -> list:
    """Have every worker import visloc's map-building modules now, in the background: a task sent later finds
    them loaded (workers that join later import them with their first task). Returns the warm-up futures:
    wait for them before closing a cluster this client started, so that no worker is stopped mid-import."""
    return [client.submit(_warm, workers=[address], pure=False)
            for address in client.scheduler_info(n_workers=-1).get("workers", {})]


def _shard_task(frames: list, out: str, config: M.MapConfig, signature: dict, index: int, count: int) -> str:
    _single_threaded()
    return str(write_shard(frames, out, config, signature, ShardSpec(index, count)))


def _single_threaded_task(task: Callable[..., list], *args: Any) -> list:
    _single_threaded()
    return task(*args)


def dask_mapper(client: Client, chunk_size: int) -> Mapper:
    """A :data:`~visloc.localization.build.Mapper` of Dask tasks: chunks of at most ``chunk_size`` items, and
    at least two per worker where the items allow it."""

    def mapper(task: Callable[..., list], common: tuple, items: list) -> list:
        workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        size = max(1, min(chunk_size, math.ceil(len(items) / (2 * workers))))
        futures = [client.submit(_single_threaded_task, task, *common, chunk, pure=False)
                   for chunk in _chunks(list(items), size)]
        return [x for future in futures for x in future.result()]

    return mapper


#: Default images a task: at most this many ...
MAX_TASK_IMAGES = 32
#: ... at least this many ...
MIN_TASK_IMAGES = 4
#: ... and this many tasks where the images allow it (the last tasks then leave a worker idle for a few
#: images' time, not for a whole chunk of 32).
TARGET_TASKS = 64


def task_size(num_images: int) -> int:
    """The default images per task of a map build of ``num_images`` images: ``MAX_TASK_IMAGES``, or fewer (not
    below ``MIN_TASK_IMAGES``) so that there are ``TARGET_TASKS`` tasks. It depends on the images only, so a
    rerun with another number of workers finds the same shards."""
    return min(MAX_TASK_IMAGES, max(MIN_TASK_IMAGES, math.ceil(num_images / TARGET_TASKS)))


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def build_map_on_cluster(
    data: str | Path,
    out: str | Path,
    cluster: str | Client,
    config: M.MapConfig = M.MapConfig(),
    split: str | None = None,
    triangulation: TriangulationConfig = TriangulationConfig(),
    chunk_size: int | None = None,
    on_chunk_done: Callable[[int, Path], None] | None = None,
    **dataset_options: Any,
) -> MapSummary:
    """:func:`~visloc.localization.build.build_map` with the per-image phases as Dask tasks (module docstring).

    Args:
        cluster: ``local:N``, a scheduler address ``tcp://HOST:PORT`` (the workers must see ``data`` and
            ``out`` at the same paths), or a :class:`distributed.Client`.
        chunk_size: database images per task (default: :func:`task_size` of the data set).
        on_chunk_done: called with (chunk index, shard folder) as each chunk's shard completes.
    """
    t0 = time.perf_counter()
    if isinstance(cluster, str):
        parse_cluster(cluster)  # a bad address is refused before any work
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk size {chunk_size}: need at least 1 image per task")
    out = Path(out).resolve()
    # the dataset is listed on a thread while the cluster starts and its workers import visloc: these fixed
    # costs overlap instead of adding up (a bad dataset is still reported, once the cluster is closed)
    with ThreadPoolExecutor(1) as pool, connect(cluster) as client:
        planning = pool.submit(plan_build, Path(data).resolve(), config, split, **dataset_options)
        warming = warm_up(client)
        try:
            plan = planning.result()
            start_build(plan, out)  # refuses a folder started with other settings before any task runs
        except BaseException:
            from distributed import wait

            wait(warming, timeout=120)  # a clean shutdown: no worker stopped in the middle of its imports
            raise
        signature = build_signature(plan, dataset_options)
        chunk_size = chunk_size or task_size(len(plan.frames))
        by_name = {f.name: f for f in plan.frames}
        count = max(1, math.ceil(len(plan.frames) / chunk_size))
        specs = [ShardSpec(k, count) for k in range(count)]
        dirs = [out / SHARDS_DIR / f"{k:05d}-of-{count:05d}" for k in range(count)]
        chunks = [shard_slice(list(by_name), s) for s in specs]
        # a finished (or merged) map already holds these: a rerun extracts nothing again
        stored = set(list_h5_names(out / M.LOCAL_FEATURES)) & set(list_h5_names(out / M.GLOBAL_FEATURES))
        from distributed import as_completed

        futures = {}
        for spec, folder, names in zip(specs, dirs, chunks, strict=True):
            if shard_complete(folder, signature, names):
                logger.info("chunk %s: already built (%s)", spec, folder)
                continue
            if set(names) <= stored:
                continue
            future = client.submit(_shard_task, [by_name[n] for n in names], str(folder), plan.config, signature,
                                   spec.index, spec.count, pure=False)
            futures[future] = spec.index
        logger.info("%d of %d chunks of %d images to extract on %s", len(futures), count, chunk_size,
                    client.scheduler.address if hasattr(client.scheduler, "address") else cluster)
        for future in as_completed(list(futures)):
            path = Path(future.result())
            if on_chunk_done is not None:
                on_chunk_done(futures[future], path)

        summary = merge_into(plan, dirs, out, triangulation, dask_mapper(client, chunk_size), t0=t0)
    shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
    return dataclasses.replace(summary, seconds=time.perf_counter() - t0)


#: Queries per localization task.
QUERY_CHUNK = 16


def map_chunks(cluster: str | Client, task: Callable[..., list], common: tuple, items: list,
               chunk_size: int = QUERY_CHUNK) -> Iterator[Any]:
    """``task(*common, chunk)`` for chunks of ``chunk_size`` items as Dask tasks; yields the elements of the
    lists they return, in the items' order (``localize --cluster``: :func:`~.localize.localize_chunk`)."""
    with connect(cluster) as client:
        futures = [client.submit(_tuned_task, task, *common, chunk, pure=False)
                   for chunk in _chunks(list(items), chunk_size)]
        for future in futures:
            yield from future.result()
