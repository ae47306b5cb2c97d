"""The ``visloc`` command line: thin wrappers over the public Python functions of the same names.

Start-up stays light: this module imports only typer; each command imports what it runs, and the
``visloc train`` sub-app (which needs torch) is imported when it is used (:class:`LazySubcommands`).
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .errors import InputError as VislocInputError
from .errors import VislocError
from .service.commands import query, serve


class LazyGroup(TyperGroup):
    """A sub-command group whose Typer app (``"module:attribute"``) is imported on first use; until then
    it shows its static help in ``visloc --help``."""

    def __init__(self, name: str, target: str, help: str) -> None:
        super().__init__(name=name, help=help, no_args_is_help=True)
        self._target = target
        self._group: Any = None

    def _load(self) -> Any:
        if self._group is None:
            module, attribute = self._target.split(":")
            self._group = typer.main.get_group(getattr(importlib.import_module(module), attribute))
        return self._group

    def list_commands(self, ctx: Any) -> list[str]:
        return self._load().list_commands(ctx)

    def get_command(self, ctx: Any, name: str) -> Any:
        return self._load().get_command(ctx, name)


class LazySubcommands(TyperGroup):
    """The top-level group: the eager commands plus the lazy groups of :data:`LAZY_GROUPS`."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *LAZY_GROUPS]

    def get_command(self, ctx: Any, name: str) -> Any:
        return LAZY_GROUPS.get(name) or super().get_command(ctx, name)


#: Sub-apps imported only when used.
LAZY_GROUPS: dict[str, LazyGroup] = {
    "train": LazyGroup("train", "visloc.training.cli:train_app",
                       "Train the pose regression and semantic matching networks."),
}

app = typer.Typer(
    cls=LazySubcommands,
    help="visloc: find where a photo was taken and what it matches.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
map_app = typer.Typer(help="Build maps of database images.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Evaluate outputs against ground truth.", no_args_is_help=True)
world_app = typer.Typer(help="The embedded synthetic world.", no_args_is_help=True)
semantic_app = typer.Typer(help="Semantic matching data: weakly labelled pairs.", no_args_is_help=True)

app.add_typer(map_app, name="map")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(world_app, name="world")
app.add_typer(semantic_app, name="semantic")
app.command("serve")(serve)
app.command("query")(query)

logger = logging.getLogger("visloc")


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only log warnings and errors.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss").setLevel(max(level, logging.WARNING))
    from .runtime import tune_malloc

    tune_malloc()


def _parse_options(items: list[str] | None, valid: list[str] | None = None, option: str = "--set",
                   note: str = "") -> dict:
    """``key=value`` pairs; values are parsed as int, float, bool, None, a comma-separated list of numbers, or
    left as strings.

    Args:
        valid: the keys accepted (``None``: any); another key is a :class:`~visloc.errors.ConfigError`
            that names ``option`` and the key, lists the valid keys and adds ``note``.
    """
    from .errors import ConfigError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected key=value, got {item!r}")
        if valid is not None and key not in valid:
            raise ConfigError(f"{option} {item}: unknown key {key!r}; valid keys: {', '.join(valid)}"
                              + (f" ({note})" if note else ""))
        out[key] = _parse_value(value)
    return out


def _parse_value(value: str):
    """int, float, bool, None, a list of numbers (``0.75,1,1.25``), else the string itself."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    if "," in value:
        parts = [_parse_value(p.strip()) for p in value.split(",")]
        if all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in parts):
            return parts
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def _dataset_options(camera: str | None, poses: Path | None, fmt: str, colmap: Path | None = None) -> dict:
    """The data set reader's options; ``colmap``: a COLMAP model gives the poses and intrinsics (``map build``,
    ``map add``)."""
    options: dict = {"format": fmt}
    if camera:
        options["camera"] = camera if not Path(camera).is_file() else Path(camera)
    if poses:
        options["poses"] = poses
    if colmap is not None:
        if camera or poses:
            raise typer.BadParameter("--colmap gives the poses and intrinsics: leave out --poses and --camera")
        options.update(format="colmap" if fmt == "auto" else fmt, model_dir=colmap)
    return options


def _estimator(method: str, relpose_fusion: str):
    """The estimator config of ``method`` with the command line's relpose fusion (``None`` for ``auto``)."""
    from .localization import estimator_config

    if method == "auto":
        return None
    key = {"relpose": "fusion", "unified": "relpose.fusion"}.get(method)
    return estimator_config(method, {key: relpose_fusion} if key else {})


# --- demo ---------------------------------------------------------------------------------------------
@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder (world, map, poses, results.json, report.html).")] = Path(
        "visloc_demo"
    ),
    method: Annotated[str, typer.Option(
        help="Pose estimator: auto, pnp (needs 3D points), essential, relpose (the shipped relative-pose "
             "network + fusion) or unified (relpose prior + geometry).")] = "auto",
    scenes: Annotated[int, typer.Option(help="Number of scenes in the embedded world.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the embedded world.")] = 0,
    quick: Annotated[bool, typer.Option(help="A smaller world (2 scenes, fewer frames) for a fast check.")] = False,
    relpose_fusion: Annotated[str, typer.Option(
        help="relpose/unified: 'metric' (the best measured) or Publication V's 'original' ray fusion, or 'ransac'.")]
    = "metric",
) -> None:
    """Make the embedded world, map it, localize its test traversal, evaluate and write a report."""
    from .datasets.synthetic import WorldConfig
    from .demo import run_demo
    from .localization import LocalizeConfig

    world = WorldConfig(num_scenes=scenes, seed=seed)
    if quick:
        world = WorldConfig(num_scenes=min(scenes, 2), seed=seed, train_traversals=2,
                            frames_per_train_traversal=15, frames_per_test_traversal=8)
    outputs = run_demo(out, world, localize_config=LocalizeConfig(method, _estimator(method, relpose_fusion)))
    typer.echo(outputs.results.format_table())
    typer.echo(f"\nresults: {out / 'results.json'}\nreport:  {outputs.report}")
    typer.echo("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in outputs.seconds.items()))


# --- world --------------------------------------------------------------------------------------------
@world_app.command("make")
def world_make(
    out: Annotated[Path, typer.Argument(help="Folder to write the world to (7-Scenes layout).")],
    scenes: Annotated[int, typer.Option(help="Number of scenes (rooms) in the one world frame.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical files.")] = 0,
    preset: Annotated[str, typer.Option(help=(
        "default, or hard: a sparser database and a test traversal under other light, with objects moved "
        "or removed, occluders and posters repeated in every room (also writes object_queries.txt/.json)."))]
    = "default",
    option: Annotated[list[str] | None, typer.Option("--set", help=(
        "Another WorldConfig field, key=value (repeat); it overrides the preset's. Keys: train_traversals, "
        "frames_per_train_traversal, frames_per_test_traversal, width, height, focal, exposure, white_balance, "
        "noise_sigma, low_texture, repeated_textures, texel_density, repeated_posters, test_ambient, "
        "test_lamp_power, test_lamp_colour, test_shadows, test_night_gain, test_moved_boxes, test_removed_boxes, "
        "test_moved_posters, test_removed_posters, test_occluders, test_occluder_size. A colour is r,g,b."))] = None,
) -> None:
    """Write the embedded world: scenes, training traversals and a test traversal with exact ground truth."""
    import dataclasses

    from .datasets.synthetic import WorldConfig, make_world

    valid = [f.name for f in dataclasses.fields(WorldConfig) if f.name not in ("num_scenes", "seed", "preset_name")]
    options = _parse_options(option, valid, "--set",
                             "the number of scenes, the seed and the preset are --scenes, --seed and --preset")
    root = make_world(out, WorldConfig.preset(preset, num_scenes=scenes, seed=seed, **options))
    typer.echo(str(root))


# --- map ----------------------------------------------------------------------------------------------
@map_app.command("build")
def map_build(
    dataset: Annotated[Path, typer.Argument(
        help="Data set folder: 7-Scenes/University layout, TUM RGB-D, or images (searched recursively; names are "
             "paths relative to it).")],
    out: Annotated[Path, typer.Option(help="Map folder to create (a rerun resumes).")],
    split: Annotated[str | None, typer.Option(help="Frames that form the map: train, test, all, even, odd.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, 7scenes, tum, folder or colmap.")] = "auto",
    camera: Annotated[str | None, typer.Option(help="Intrinsics: 'MODEL W H params...' or a query-list file.")] = None,
    poses: Annotated[Path | None, typer.Option(help="hloc pose file (image folders only).")] = None,
    colmap: Annotated[Path | None, typer.Option(
        help="COLMAP sparse model (cameras, images, points3D; .bin or .txt) of the images in DATASET: poses and "
             "intrinsics from it (instead of --poses/--camera); --points colmap takes its 3D points.")] = None,
    extractor: Annotated[str, typer.Option(help="Local features: sift or aliked.")] = "sift",
    points: Annotated[str, typer.Option(
        help="3D points: auto, depth, triangulate, colmap (the --colmap model's points, taken by the keypoints "
             "within 1.5 px of an observation) or none (images without poses: a retrieval-only map).")] = "auto",
    extractor_option: Annotated[list[str] | None, typer.Option("--extractor-set", help="Extractor option key=value.")] = None,
    global_descriptor: Annotated[str, typer.Option(
        help="Global descriptor for retrieval: vlad (no weights), relpose (the relative-pose encoder; "
             "needed by --method relpose/unified) or cnn (a retrieval network, Publication III's query "
             "attention with `visloc retrieve --boxes`).")] = "vlad",
    global_option: Annotated[list[str] | None, typer.Option(
        "--global-set", help="Global descriptor option key=value (e.g. model=runs/relpose/model.pt).")] = None,
    index: Annotated[str, typer.Option(
        help="FAISS index of the global descriptors: flat (exact) or ivfpq (approximate, for very large maps; "
             "needs at least max(nlist, 2**nbits) images).")] = "flat",
    index_option: Annotated[list[str] | None, typer.Option(
        "--index-option", help="Index option key=value: nlist, m, nbits, nprobe, refine_m (re-ranking PQ bytes, "
        "0 = none), k_factor, train_size, seed (IVF-PQ); dba_k, dba_alpha (database-side augmentation, any kind).")] = None,
    shard: Annotated[str | None, typer.Option(
        metavar="I/N", help="Build only shard I of N (0-based; the I-th slice of the sorted database images) into "
                            "--out, a shard folder; join the N shards with `visloc map merge` (docs/scale.md).")] = None,
    cluster: Annotated[str | None, typer.Option(
        help="Run the per-image work as Dask tasks: local:N (N worker processes here) or tcp://SCHEDULER:PORT "
             "(docs/scale.md).")] = None,
    chunk_size: Annotated[int | None, typer.Option(
        help="--cluster: database images per task (default: 32, fewer on maps under 2,048 images: 64 tasks of "
             "at least 4).")] = None,
) -> None:
    """Build a map: local features, global descriptors + FAISS index, 3D points, poses and cameras."""
    from .localization import MapConfig, build_map

    index_options = _parse_options(index_option, ["nlist", "m", "nbits", "nprobe", "refine_m", "k_factor",
                                                 "dba_k", "dba_alpha", "train_size", "seed"],
                                   "--index-option", "the kind is --index")
    config = MapConfig(extractor=extractor, extractor_options=_parse_options(extractor_option), points=points,
                       global_descriptor=global_descriptor, global_options=_parse_options(global_option),
                       index={"kind": index, **index_options} if index != "flat" or index_options else {})
    options = _dataset_options(camera, poses, fmt, colmap)
    if shard is not None:
        if cluster is not None:
            raise typer.BadParameter("--shard builds one slice here; --cluster builds the whole map: give one")
        from .localization.shards import ShardSpec, build_shard

        part = build_shard(dataset, out, ShardSpec.parse(shard), config, split=split, **options)
        typer.echo(f"shard {part.shard}: {part.num_images} images in {part.root}, {len(part.skipped)} skipped, "
                   f"{part.seconds:.1f} s")
        return
    if cluster is not None:
        from .localization.cluster import build_map_on_cluster

        summary = build_map_on_cluster(dataset, out, cluster, config, split=split, chunk_size=chunk_size, **options)
    else:
        summary = build_map(dataset, out, config, split=split, **options)
    _echo_map_summary(summary)


def _echo_map_summary(summary) -> None:
    typer.echo(f"map of {summary.num_images} images ({summary.points} points) in {summary.root}, "
               f"{len(summary.skipped)} skipped, {summary.seconds:.1f} s")
    _echo_skipped(summary.skipped)


def _echo_skipped(skipped) -> None:
    for s in skipped:
        typer.echo(f"  skipped {s}")


@map_app.command("merge")
def map_merge(
    shards: Annotated[list[Path], typer.Argument(metavar="SHARD...", help="The shard folders of "
                                                 "`visloc map build --shard I/N`, all N of them.")],
    out: Annotated[Path, typer.Option(help="Map folder to write (a rerun with the same shards does nothing).")],
) -> None:
    """Merge map shards (same settings, every database image once) and finish the map: global descriptors,
    index, 3D points; the result equals the one-machine build."""
    from .localization.shards import merge_shards

    _echo_map_summary(merge_shards(shards, out))


@map_app.command("add")
def map_add(
    map_dir: Annotated[Path, typer.Argument(metavar="MAP", help="Map folder (from `visloc map build`).")],
    dataset: Annotated[Path, typer.Argument(
        metavar="DATASET",
        help="Data set folder (the layouts `map build` reads): its images that MAP does not hold yet are added.")],
    split: Annotated[str | None, typer.Option(
        help="Frames to add: train, test, all, even, odd (default: the format's own, train for 7-Scenes).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, 7scenes, tum, folder or colmap.")] = "auto",
    camera: Annotated[str | None, typer.Option(help="Intrinsics: 'MODEL W H params...' or a query-list file.")] = None,
    poses: Annotated[Path | None, typer.Option(help="hloc pose file (image folders only).")] = None,
    colmap: Annotated[Path | None, typer.Option(
        help="COLMAP sparse model of the images in DATASET: poses and intrinsics from it (instead of "
             "--poses/--camera); a --points colmap map takes its 3D points.")] = None,
) -> None:
    """Add database images to a finished map without rebuilding it: processed with the map's settings (its
    extractor, fitted global descriptor and index quantizers: nothing is refitted), 3D points as the map's
    points mode says; images already in the map are skipped, and an interrupted run is completed by a rerun."""
    from .localization.extend import add_to_map

    summary = add_to_map(map_dir, dataset, split=split, **_dataset_options(camera, poses, fmt, colmap))
    typer.echo(f"added {summary.num_added} images ({summary.points} points) to {summary.root}, now "
               f"{summary.num_images}; {summary.num_present} already in it, {len(summary.skipped)} skipped, "
               f"{summary.seconds:.1f} s")
    _echo_skipped(summary.skipped)


@map_app.command("georef")
def map_georef(
    map_dir: Annotated[Path, typer.Argument(metavar="MAP", help="Map folder (from `visloc map build`).")],
    origin: Annotated[tuple[float, float, float] | None, typer.Option(
        metavar="LAT LON H", help="WGS84 degrees and ellipsoidal height (m) of the map-world origin.")] = None,
    heading: Annotated[float | None, typer.Option(
        help="With --origin: compass bearing (degrees clockwise from north) of the map's +x axis; +z is up.")] = None,
    points: Annotated[Path | None, typer.Option(
        help="Fit a similarity instead: a file of lines 'x y z lat lon h' (3 or more points, not collinear).")] = None,
) -> None:
    """Geo-reference a map (MAP/georef.json) for GeoPose answers and GPS priors; prints the fit residuals."""
    from .localization.georef import georeference_map

    typer.echo(georeference_map(map_dir, origin=origin, heading=heading, points=points).format())


# --- retrieve / match / localize ----------------------------------------------------------------------
Split = Annotated[str | None, typer.Option(
    help="Which frames of a data set folder are queries. Default: the map's own data set gives its frames that "
         "are not in the map (a map of the even frames localizes the odd ones); another folder gives its "
         "test split (all images of a folder or TUM sequence).")]
Format = Annotated[str, typer.Option("--format", help="auto, 7scenes, tum or folder.")]
QueryCamera = Annotated[str | None, typer.Option(
    help="Query intrinsics: 'MODEL W H params...' or a query-list file (default for a folder: f = 1.2 max(W, H)).")]
NumRetrieved = Annotated[int, typer.Option(help="Database images retrieved per query.")]
Verify = Annotated[bool, typer.Option(
    help="Re-rank a retrieved shortlist by geometric verification (`visloc verify` with its defaults: local "
         "features, RANSAC inlier count) before keeping the best.")]
VerifyPreset = Annotated[str | None, typer.Option(
    "--verify-preset", help="Verify with this recipe (implies --verify): classical (the default), paper "
                            "(Publication IV: dense matches, S, S_F) or paper-printed (equation 3.4 as printed).")]
Shortlist = Annotated[int, typer.Option(help="--verify: retrieved images verified per query.")]
Rerank = Annotated[int, typer.Option(
    help="Maps of a correlation-head relpose model: retrieve this many images and keep the "
         "--num-retrieved with the most mutual nearest neighbours between the feature maps (0: off).")]


@app.command()
def retrieve(
    map_dir: Annotated[Path, typer.Argument(help="Map folder made by `visloc map build` (retrieval-only maps too).")],
    queries: Annotated[Path, typer.Argument(help="Query data set folder or folder of images.")],
    out: Annotated[Path, typer.Option(help="Pairs file to write (hloc: 'query db' per line, ranked); scores go "
                                           "to OUT.scores.json.")],
    num: Annotated[int, typer.Option("--num", help="Database images per query.")] = 5,
    split: Split = None,
    fmt: Format = "auto",
    camera: QueryCamera = None,
    rerank: Rerank = 30,
    exclude_self: Annotated[bool, typer.Option(
        help="Skip database images with the query's own name (searching a map with its own images).")] = False,
    boxes: Annotated[Path | None, typer.Option(
        help="Query boxes, one 'name x0 y0 x1 y1' per line (pixels of the query image): the object to search "
             "for (maps of the cnn global descriptor only).")] = None,
    query_expansion: Annotated[int, typer.Option(
        help="Average query expansion: search again with the mean of the query and its top K database "
             "descriptors (0: off). Database-side augmentation is a map option: --index-option dba_k=K.")] = 0,
    qe_alpha: Annotated[float, typer.Option(help="alpha-QE exponent (0: plain average).")] = 0.0,
    verify: Verify = False,
    verify_with: VerifyPreset = None,
    shortlist: Shortlist = 20,
) -> None:
    """Retrieve the most similar database images of every query (global descriptors + FAISS)."""
    from .localization import RetrievalConfig
    from .localization import retrieve as run

    retrieval = RetrievalConfig(num_retrieved=num, rerank=rerank, exclude_self=exclude_self,
                                query_expansion=query_expansion, qe_alpha=qe_alpha)
    if verify or verify_with:
        if boxes is not None:
            raise typer.BadParameter("--verify re-ranks whole images; it does not take --boxes")
        from .localization.verify import retrieve_and_verify, verify_preset

        summary = retrieve_and_verify(map_dir, queries, out, verify_preset(verify_with or "classical", shortlist),
                                      retrieval, keep=num, split=split, **_dataset_options(camera, None, fmt))
        typer.echo(f"verified {summary.num_queries} queries -> {out} (retrieval before verification: "
                   f"{out.with_name(out.name + '.retrieval.txt')})")
        for s in summary.skipped:
            typer.echo(f"  skipped {s}")
        return
    summary = run(map_dir, queries, out, retrieval, split=split, boxes=boxes, **_dataset_options(camera, None, fmt))
    typer.echo(f"{summary.num_pairs} pairs of {summary.num_queries} queries -> {out}")
    for s in summary.skipped:
        typer.echo(f"  skipped {s}")


@app.command()
def match(
    inputs: Annotated[list[Path], typer.Argument(
        help="A pairs file (with --map, --features and --matches), or two images (with --plot).")],
    map_dir: Annotated[Path | None, typer.Option("--map", help="Map folder whose images the pairs name.")] = None,
    queries: Annotated[Path | None, typer.Option(help="Folder of the pairs' images that are not in the map.")] = None,
    features: Annotated[Path | None, typer.Option(
        help="features.h5 of the non-map images (hloc layout): read where it has them, extended otherwise.")] = None,
    matches: Annotated[Path | None, typer.Option(
        help="matches.h5 to write (hloc layout: matches0 + matching_scores0); pairs already in it are skipped.")] = None,
    split: Split = None,
    fmt: Format = "auto",
    camera: QueryCamera = None,
    plot: Annotated[Path | None, typer.Option(help="Two images: PNG of their matches.")] = None,
    extractor: Annotated[str, typer.Option(help="Two images: local features (sift or aliked).")] = "sift",
    matcher: Annotated[str, typer.Option(
        help="nn (local features + mutual nearest neighbours) or dense (the dense network, --model; for a pairs "
             "file it carries the map image's keypoints into the query).")]
    = "nn",
    model: Annotated[Path | None, typer.Option(help="--matcher dense: the model.pt of `visloc train dense` (pairs "
                                                    "file: default the shipped model).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Two images: folder for features.h5 + matches.h5 (hloc layout; image 0's keypoints are the sampled "
             "pixels of the dense map).")] = None,
    max_matches: Annotated[int, typer.Option(help="Two images, dense: at most this many matches.")] = 2048,
    cyclic_tolerance: Annotated[float | None, typer.Option(
        help="Dense: keep only matches whose forward-backward round trip returns within this many "
             "pixels.")] = None,
) -> None:
    """Match local features: every pair of a pairs file against a map, or two images."""
    if len(inputs) == 2 and matcher == "dense":
        _match_dense_pair(inputs, model, out, plot, max_matches, cyclic_tolerance)
        return
    if matcher not in ("nn", "dense"):
        raise typer.BadParameter(f"unknown matcher {matcher!r}: nn or dense")
    if len(inputs) == 2 and plot is not None:
        from .features import extractors
        from .io.images import read_image
        from .localization.match import match_images
        from .matching import matchers
        from .viz import plot_matches

        images = [read_image(p) for p in inputs]
        f0, f1, m, _ = match_images(images[0], images[1], extractors.create(extractor), matchers.create("nn"))
        path = plot_matches(images[0], images[1], f0.keypoints[m[:, 0]], f1.keypoints[m[:, 1]], None, plot,
                            f"{inputs[0].name} - {inputs[1].name}: {len(m)} mutual nearest neighbours")
        typer.echo(f"{len(f0)} and {len(f1)} keypoints, {len(m)} matches -> {path}")
        return
    if len(inputs) != 1 or map_dir is None or features is None or matches is None:
        raise typer.BadParameter("expected `visloc match PAIRS --map MAP --features F.h5 --matches M.h5` or "
                                 "`visloc match IMAGE0 IMAGE1 --plot OUT.png`")
    from .localization import match_pairs
    from .localization.match import MatchConfig

    config = MatchConfig(matcher=matcher, dense=_dense_match_config(matcher, model, cyclic_tolerance))
    summary = match_pairs(map_dir, inputs[0], queries, features, matches, config, split=split,
                          **_dataset_options(camera, None, fmt))
    typer.echo(f"matched {summary.num_matched} new of {summary.num_pairs} pairs -> {matches} (features: {features})")
    for s in summary.skipped:
        typer.echo(f"  skipped {s}")


def _dense_match_config(matcher: str, model: Path | None, cyclic_tolerance: float | None):
    """The dense settings of a pairs / localize run (``None`` for descriptor matchers); a missing model exits 2."""
    if matcher != "dense":
        return None
    from .localization.dense_match import DenseMatchConfig

    config = DenseMatchConfig(model=str(model) if model else None, cyclic_tolerance_px=cyclic_tolerance)
    config.model_path()  # InputError (exit 2) now rather than after retrieval
    return config


def _match_dense_pair(inputs: list[Path], model: Path | None, out: Path | None, plot: Path | None,
                      max_matches: int, cyclic_tolerance: float | None) -> None:
    from .io.h5 import H5Reader, names_to_pair
    from .io.images import read_image
    from .matching.dense import DenseNetworkMatcher, export_pair

    if model is None or out is None:
        raise typer.BadParameter("--matcher dense needs --model MODEL.pt and --out DIR")
    if not model.is_file():
        raise VislocInputError(model, "dense model not found (--model)")
    images = [read_image(p) for p in inputs]
    names = [p.name for p in inputs]
    n = export_pair(DenseNetworkMatcher(model), images[0], images[1], names[0], names[1], out, max_matches,
                    cyclic_tolerance_px=cyclic_tolerance)
    typer.echo(f"{n} dense matches -> {out / 'features.h5'}, {out / 'matches.h5'} (pair {names_to_pair(*names)})")
    if plot is not None:
        from .viz import plot_matches

        with H5Reader(out / "features.h5") as f:
            k0, k1 = (f.read(name, ["keypoints"])["keypoints"] for name in names)
        path = plot_matches(images[0], images[1], k0[:200], k1[:200], None, plot,
                            f"{names[0]} - {names[1]}: {n} dense matches (200 most confident shown)")
        typer.echo(f"plot -> {path}")


@app.command()
def verify(
    pairs: Annotated[Path, typer.Argument(help="Ranked pairs file (`visloc retrieve`, hloc) of queries and map images.")],
    map_dir: Annotated[Path, typer.Option("--map", help="Map folder whose images the pairs name.")],
    queries: Annotated[Path, typer.Option(help="Folder of the queries (data set or images).")],
    out: Annotated[Path, typer.Option(help="Re-ranked pairs file to write (+ .scores.json, .verification.json).")],
    split: Split = None,
    fmt: Format = "auto",
    camera: QueryCamera = None,
    preset: Annotated[str, typer.Option(
        help="Recipe: classical (local features, RANSAC inlier count; the best measured, docs/results/"
             "verification.md), paper (Publication IV: dense matches, S, then S_F on the top 5) or paper-printed "
             "(equation 3.4 as printed). The options below override it.")] = "classical",
    shortlist: Annotated[int, typer.Option(help="Retrieved images verified per query.")] = 20,
    first_stage: Annotated[str | None, typer.Option(
        help="S (cyclically consistent inliers, Publication IV) or inliers (RANSAC inlier count). Default: the "
             "preset's.")] = None,
    second_stage: Annotated[int | None, typer.Option(
        help="Top images of the first stage re-sorted by S_F (0: none). Default: the preset's.")] = None,
    fusion: Annotated[str | None, typer.Option(
        help="S_F: monotone (decreasing in the global distance), paper (equation 3.4 as printed) or learned (a "
             "logistic model on |C|, |I|, S_L, G; --fusion-model). Default: the preset's.")] = None,
    fusion_model: Annotated[Path | None, typer.Option(
        help="--fusion learned: the model JSON (scripts/train_fusion.py; default: the shipped fusion_world.json).")] = None,
    geometry: Annotated[str, typer.Option(help="RANSAC model: fundamental or homography.")] = "fundamental",
    grid: Annotated[int, typer.Option(help="Dense: query lattice points along the longer side (matching "
                                            "resolution).")] = 160,
    cyclic_tolerance: Annotated[float, typer.Option(help="Dense: round-trip tolerance (query pixels).")] = 2.0,
    model: Annotated[Path | None, typer.Option(help="Dense model.pt (default: the shipped one).")] = None,
    matches: Annotated[str | None, typer.Option(
        help="sparse (the map's local features, mutual nearest neighbours) or dense (the network). Default: the "
             "preset's.")] = None,
) -> None:
    """Re-rank retrieval pairs by geometric verification (RANSAC inliers; Publication IV's cyclic consistency
    with --preset paper)."""
    import dataclasses

    from .localization.verify import verify_pairs, verify_preset
    from .verification import VerificationConfig
    from .verification.dense import DenseVerificationConfig

    config = verify_preset(preset, shortlist, first_stage=first_stage, second_stage=second_stage, fusion=fusion,
                           fusion_model=str(fusion_model) if fusion_model else None)
    config = dataclasses.replace(
        config, dense=DenseVerificationConfig(grid=grid, cyclic_tolerance_px=cyclic_tolerance,
                                              verification=VerificationConfig(model=geometry)),
        matches=matches or config.matches, model=str(model) if model else None)
    summary = verify_pairs(map_dir, pairs, queries, out, config, split=split, **_dataset_options(camera, None, fmt))
    typer.echo(f"re-ranked {summary.num_queries} queries -> {out}")
    for s in summary.skipped:
        typer.echo(f"  skipped {s}")


@app.command()
def localize(
    map_dir: Annotated[Path, typer.Argument(help="Map folder made by `visloc map build`.")],
    queries: Annotated[Path, typer.Argument(help="Query data set folder or folder of images.")],
    out: Annotated[Path, typer.Option(help="Pose file to write (hloc format); details go to OUT.log.json.")],
    method: Annotated[str, typer.Option(
        help="auto (pnp with 3D points, else essential), pnp, essential, relpose or unified (the last two need "
             "a map built with --global-descriptor relpose).")] = "auto",
    split: Split = None,
    fmt: Format = "auto",
    camera: QueryCamera = None,
    num_retrieved: NumRetrieved = 5,
    relpose_fusion: Annotated[str, typer.Option(
        help="relpose/unified: 'metric' (regressed translations with their length; the best measured), "
             "'original' (ray triangulation of Publication V) or 'ransac' (rays, any N).")] = "metric",
    relpose_rerank: Rerank = 30,
    pairs: Annotated[Path | None, typer.Option(
        help="Ranked pairs file (`visloc retrieve`, hloc) to use instead of retrieval.")] = None,
    features: Annotated[Path | None, typer.Option(help="Query features.h5 (hloc layout) to use instead of extracting.")] = None,
    matches: Annotated[Path | None, typer.Option(
        help="matches.h5 of the --pairs (hloc layout; needs --features) to use instead of matching.")] = None,
    matcher: Annotated[str, typer.Option(
        help="nn (the map's local features, mutual nearest neighbours) or dense (the dense network carries the "
             "map's keypoints into the query).")] = "nn",
    model: Annotated[Path | None, typer.Option(
        help="--matcher dense: model.pt of `visloc train dense` (default: the shipped dense_tiny_world.pt).")] = None,
    cyclic_tolerance: Annotated[float | None, typer.Option(
        help="--matcher dense: keep only matches whose round trip returns within this many pixels.")] = None,
    verify: Verify = False,
    verify_with: VerifyPreset = None,
    shortlist: Shortlist = 20,
    cluster: Annotated[str | None, typer.Option(
        help="Localize chunks of queries as Dask tasks: local:N (N worker processes here) or "
             "tcp://SCHEDULER:PORT; same outputs (docs/scale.md).")] = None,
) -> None:
    """Localize query images against a map: retrieve -> match -> estimate, each stage optionally from files."""
    from .localization import LocalizeConfig, RetrievalConfig
    from .localization import localize as run
    from .localization.match import MatchConfig

    if matcher not in ("nn", "dense"):
        raise typer.BadParameter(f"unknown matcher {matcher!r}: nn or dense")
    config = LocalizeConfig(method=method, estimator=_estimator(method, relpose_fusion),
                            retrieval=RetrievalConfig(num_retrieved=num_retrieved, rerank=relpose_rerank),
                            matching=MatchConfig(matcher=matcher,
                                                 dense=_dense_match_config(matcher, model, cyclic_tolerance)))
    if verify or verify_with:
        if pairs is not None:
            raise typer.BadParameter("--verify makes its own pairs; give either --pairs or --verify")
        from .localization.verify import retrieve_and_verify, verify_preset

        pairs = out.with_name(out.name + ".verified.txt")
        retrieve_and_verify(map_dir, queries, pairs, verify_preset(verify_with or "classical", shortlist),
                            config.retrieval, keep=num_retrieved, split=split, **_dataset_options(camera, None, fmt))
    summary = run(map_dir, queries, out, config, split=split, pairs=pairs, features=features, matches=matches,
                  cluster=cluster, **_dataset_options(camera, None, fmt))
    typer.echo(f"localized {summary.num_localized} of {len(summary.results)} queries -> {out}")
    for status, count in summary.status_counts().items():
        typer.echo(f"  {count:5d}  {status}")
    for s in summary.skipped:
        typer.echo(f"  skipped {s}")


# --- evaluate -----------------------------------------------------------------------------------------
@evaluate_app.command("localization")
def evaluate_localization(
    poses: Annotated[Path, typer.Argument(help="Estimated poses (hloc format).")],
    gt: Annotated[Path, typer.Option(help="Ground truth: an hloc pose file or a data set folder.")],
    split: Annotated[str | None, typer.Option(
        help="Split of a ground-truth data set folder. Default: the queries of the run that wrote POSES (from "
             "POSES.log.json), else test.")] = None,
    out: Annotated[Path | None, typer.Option(help="results.json to write (default: next to POSES).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing results file.")] = False,
    report: Annotated[Path | None, typer.Option(help="Folder for report.html with top-view figures.")] = None,
    map_dir: Annotated[Path | None, typer.Option("--map", help="Map folder, to draw database cameras.")] = None,
) -> None:
    """Median errors and recall at (1cm,1deg) ... (5m,10deg) per scene; writes results.json."""
    from .evaluation.localization import evaluate_localization_files, ground_truth_of_run

    out = out or poses.with_name("results.json")
    if out.exists() and not overwrite:
        raise VislocInputError(out, "exists; pass --overwrite to replace it, or --out another file")
    truth, scene_of, run = ground_truth_of_run(poses, gt, split)
    results = evaluate_localization_files(poses, truth, scene_of=scene_of, config=run)
    results.write(out)
    typer.echo(results.format_table())
    typer.echo(f"\nresults: {out}")
    if report:
        from .io.poses import read_poses
        from .localization import Map
        from .viz import write_report
        from .viz.localization import topview_figures

        logged = Path(run["map"]) if run.get("map") else None  # the run's map, while it still exists
        map_path = map_dir or (logged if logged is not None and (logged / "map.json").is_file() else None)
        db = Map(map_path) if map_path else None
        figures = topview_figures(report / "figures", truth, read_poses(poses), db.poses if db else None,
                                  db.scenes if db else None, scene_of=scene_of)
        typer.echo(f"report:  {write_report(report, results, figures, f'visloc evaluation: {poses}')}")


@evaluate_app.command("retrieval")
def evaluate_retrieval(
    pairs: Annotated[Path, typer.Argument(help="Ranked pairs file (`visloc retrieve`, hloc): each query's images, best "
                                               "first; retrieve the whole database (--num) for a full mAP. With a "
                                               "PAIRS.verification.json (`visloc verify`), also each stage.")],
    labels: Annotated[Path | None, typer.Option(help="CSV with 'path' and 'landmark' columns (every other image with "
                                                     "the query's label is positive): mAP, Recall@1/5/10.")] = None,
    world: Annotated[Path | None, typer.Option(help="A posed data set folder (e.g. `visloc world make`): place "
                                                    "Recall@1/5/10 (same scene, within 1 m and 45 deg).")] = None,
    query_split: Annotated[str, typer.Option(help="--world: split of the queries.")] = "test",
    database_split: Annotated[str, typer.Option(help="--world: split of the database.")] = "train",
    map_dir: Annotated[Path | None, typer.Option("--map", help="--labels: the map searched; its images are the "
                                                               "database (default: every labelled image).")] = None,
    out: Annotated[Path | None, typer.Option(help="Results JSON (default: PAIRS.results.json).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing results file.")] = False,
) -> None:
    """Retrieval pairs against labels (mAP, Recall@N) or poses (place Recall@N); per verification stage too."""
    from .evaluation import verification_stages as vs
    from .evaluation.retrieval import evaluate_pairs_with_labels, read_labels_csv
    from .io.atomic import write_json
    from .io.pairs import read_ranked_pairs

    if (labels is None) == (world is None):
        raise typer.BadParameter("give exactly one ground truth: --labels CSV or --world FOLDER")
    if world is not None and map_dir is not None:
        raise typer.BadParameter("--map goes with --labels; --world's database is its --database-split frames")
    out = out or pairs.with_name(pairs.name + ".results.json")
    if out.exists() and not overwrite:
        raise VislocInputError(out, "exists; pass --overwrite to replace it, or --out another file")
    if labels is not None:
        database = None
        if map_dir is not None:
            from .localization import Map

            database = Map(map_dir).names
        label_of = read_labels_csv(labels)
        results = evaluate_pairs_with_labels(pairs, label_of, database)
        scorer = vs.label_scorer(label_of, database)
    else:
        from .evaluation.place_recall import world_place_ground_truth

        truth = world_place_ground_truth(world, query_split, database_split)
        ranked = read_ranked_pairs(pairs)
        if not set(ranked) & set(truth.query_names):
            raise VislocInputError(pairs, f"none of its queries is a {query_split!r} frame of {world}")
        results = vs.place_results(ranked, truth)
        scorer = vs.place_scorer(truth)
    data = results.to_json()
    typer.echo(results.format_table())
    log = vs.verification_log_path(pairs)
    if log.is_file():
        stages = vs.evaluate_stages(vs.stage_rankings(log), scorer)
        data["stages"] = vs.stages_to_json(stages)
        data["config"]["verification"] = str(log)
        typer.echo(f"\nper stage ({log.name}):\n{vs.format_stage_table(stages)}")
    write_json(out, data)
    typer.echo(f"\nresults: {out}")


@evaluate_app.command("matching")
def evaluate_matching(
    out: Annotated[Path, typer.Option(help="Results JSON to write (per pair and summaries).")],
    model: Annotated[str, typer.Option(
        help="A model.pt of `visloc train dense`, or a baseline: identity (nothing moved) or sift-homography "
             "(SIFT + RANSAC homography).")] = "sift-homography",
    evd: Annotated[Path | None, typer.Option(help="Homography pairs in EVD layout (1/, 2/, h/): AEPE, PCK.")] = None,
    hpatches: Annotated[Path | None, typer.Option(
        help="HPatches root: every sequence folder (1.ppm .. 6.ppm, H_1_k) gives pairs 1-k: AEPE, PCK.")] = None,
    world: Annotated[Path | None, typer.Option(
        help="A posed data set with depth (e.g. `visloc world make`): view pairs with exact maps: AEPE, PCK.")] = None,
    world_split: Annotated[str, typer.Option(help="Split whose frames are paired (--world).")] = "test",
    world_pairs: Annotated[int, typer.Option(help="At most this many view pairs per scene (--world).")] = 20,
    motorcycle: Annotated[bool, typer.Option(
        help="scikit-image's stereo_motorcycle pair (real photographs, exact disparity): AEPE, PCK.")] = False,
    scannet: Annotated[Path | None, typer.Option(
        help="SuperGlue's ScanNet pairs file (pairs_with_gt.txt, images beside it or in images/): pose AUC.")] = None,
    size: Annotated[int, typer.Option(
        help="Homography pairs are resized to SIZE x SIZE (DGC-Net's protocol: 240; 0: original sizes).")] = 240,
    image_size: Annotated[int, typer.Option(
        help="Longer side the network sees (0: its training size).")] = 0,
    max_matches: Annotated[int, typer.Option(help="Point matches sampled from a dense map (--scannet).")] = 2048,
    decoder_from: Annotated[Path | None, typer.Option(
        help="Another model.pt (ucmd decoder) whose decoder runs on --model's encoder, not retrained.")] = None,
    cyclic_tolerance: Annotated[float | None, typer.Option(
        help="--scannet: keep only matches whose round trip returns within this many pixels.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing results file.")] = False,
) -> None:
    """Dense matching against exact ground truth: AEPE and PCK@1/3/5 px, relative-pose AUC@5/10/20 deg."""
    import json

    from .evaluation import dense_matching as dm
    from .io.atomic import write_text

    if out.exists() and not overwrite:
        raise VislocInputError(out, "exists; pass --overwrite to replace it, or --out another file")
    matcher = _dense_matcher(model, image_size, decoder_from)
    results: dict = {"model": model} | ({"decoder_from": str(decoder_from)} if decoder_from else {})
    sets: list[tuple[str, object]] = []
    if evd is not None:
        from .datasets.homography import read_evd

        sets.append(("evd", dm.homography_flow_pairs(read_evd(evd), size or None)))
    if hpatches is not None:
        from .datasets.homography import read_hpatches_sequence

        if not hpatches.is_dir():
            raise VislocInputError(hpatches, "HPatches folder not found (--hpatches)")
        seqs = sorted(d for d in hpatches.iterdir() if d.is_dir())
        sets.append(("hpatches", dm.homography_flow_pairs([p for d in seqs for p in read_hpatches_sequence(d)],
                                                           size or None)))
    if world is not None:
        sets.append(("world", _world_flow_pairs(world, world_split, world_pairs)))
    if motorcycle:
        from .datasets.stereo import stereo_motorcycle_pair

        sets.append(("motorcycle", [dm.stereo_flow_pair(stereo_motorcycle_pair())]))
    if not sets and scannet is None:
        raise typer.BadParameter("give at least one of --evd, --hpatches, --world, --motorcycle, --scannet")
    lines = ["| data | pairs | AEPE (px) | PCK@1 | PCK@3 | PCK@5 | s / pair |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, pairs in sets:
        res, _ = dm.evaluate_flow_pairs(matcher, pairs)
        results[name] = res.to_json()
        lines.append(f"| {name} | {len(res.rows)} | {res.mean_aepe:.2f} | "
                     + " | ".join(f"{100 * res.pooled_pck.get(t, float('nan')):.1f}" for t in dm.PCK_THRESHOLDS)
                     + f" | {res.mean_seconds:.3f} |")
    typer.echo("\n".join(lines))
    if scannet is not None:
        from .datasets.scannet import read_scannet_pairs

        point = (dm.sift_point_matcher() if model == "sift-homography"
                 else dm.dense_point_matcher(matcher, max_matches=max_matches, cyclic_tolerance_px=cyclic_tolerance))
        pose = dm.evaluate_pose_pairs(point, read_scannet_pairs(scannet).pairs)
        results["scannet"] = pose.to_json()
        typer.echo("\nScanNet pose AUC@5/10/20 deg: " + " / ".join(f"{100 * pose.auc[t]:.1f}" for t in dm.AUC_THRESHOLDS)
                   + ("  (sift-homography: plain SIFT point matches)" if model == "sift-homography" else ""))
    write_text(out, json.dumps(results, indent=1) + "\n")
    typer.echo(f"\nresults: {out}")


def _dense_matcher(model: str, image_size: int, decoder_from: Path | None = None):
    from .matching.dense_baselines import SiftHomography, identity_correspondence

    if model == "identity":
        return identity_correspondence
    if model == "sift-homography":
        return SiftHomography()
    from .matching.dense import DenseMatcherSettings, DenseNetworkMatcher

    path = Path(model)
    if not path.is_file():
        raise VislocInputError(path, "dense model not found (--model: a model.pt, identity or sift-homography)")
    if decoder_from is not None and not decoder_from.is_file():
        raise VislocInputError(decoder_from, "dense model not found (--decoder-from)")
    return DenseNetworkMatcher(path, DenseMatcherSettings(image_size=image_size or 0,
                                                          decoder_from=str(decoder_from) if decoder_from else None))


def _world_flow_pairs(root: Path, split: str, per_scene: int, size: tuple[int, int] = (240, 320)):
    """Flow pairs of a posed data set's view pairs (overlap 0.3-0.9), images at ``size``."""
    import dataclasses

    from .evaluation.dense_matching import FlowPair
    from .training.dense_data import WorldPairConfig, WorldViewPairs
    from .training.pairs import PairSamplingConfig

    config = WorldPairConfig(output_size=size, split=split,
                             sampling=dataclasses.replace(PairSamplingConfig(), max_pairs_per_scene=per_scene))
    pairs = WorldViewPairs(root, config)

    def uint8(img):
        return (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()

    for i in range(len(pairs)):
        item = pairs[i]
        yield FlowPair(f"{item['target_name']}<-{item['source_name']}", uint8(item["source"]), uint8(item["target"]),
                       item["map"], item["mask"].bool(), {"view_angle_deg": float(item["view_angle_deg"]),
                                                          "overlap": float(item["overlap"])})


#: Printed (and saved) with every evaluation of the shipped semantic model.
SHIPPED_SEMANTIC_NOTE = ("the shipped model was fine-tuned on weak pairs of all 10 PF-WILLOW classes (images "
                         "only, no correspondences): on PF-WILLOW these numbers are in-sample, not held-out "
                         "(held-out results: docs/results/semantic.md)")


@evaluate_app.command("semantic")
def evaluate_semantic(
    data: Annotated[Path, typer.Option(
        help="PF-WILLOW-layout folder (<class>/<image>.png + .mat keypoints); pair csv names are relative to it.")],
    out: Annotated[Path, typer.Option(help="results JSON to write (per-pair, per-class and mean PCK).")],
    model: Annotated[str, typer.Option(
        help="A model.pt of `visloc train semantic`, 'shipped' (the packaged model) or 'identity' (no "
             "alignment: the baseline).")] = "shipped",
    pairs: Annotated[Path | None, typer.Option(
        help="Pairs csv (`visloc semantic weak-pairs` format) to evaluate; default: every ordered pair within "
             "each class (PF-WILLOW's 900).")] = None,
    class_: Annotated[list[str] | None, typer.Option(
        "--class", help="Evaluate only the pairs of this class (repeat).")] = None,
    alpha: Annotated[list[float] | None, typer.Option(
        help="PCK threshold as a fraction of L (repeat; default 0.05, 0.1, 0.15).")] = None,
    normalisation: Annotated[list[str] | None, typer.Option(
        help="Reference length L (repeat): bbox (longer side of the source keypoint box, PF-WILLOW), image "
             "(longer side of the source image), scnet (PF-PASCAL's 224 rescaling). Default: bbox and image.")]
    = None,
    figures: Annotated[Path | None, typer.Option(
        help="Folder for PNG figures: source, target, source warped onto the target with keypoints.")] = None,
    num_figures: Annotated[int, typer.Option(help="Number of pairs drawn (randomly, seed 0) as figures.")] = 8,
    batch_size: Annotated[int, typer.Option(help="Pairs per forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")] = "auto",
) -> None:
    """PCK@alpha of a semantic matcher on keypoint-annotated pairs (target keypoints mapped into the source)."""
    from .datasets.semantic import pf_willow_pairs, read_pairs_csv, read_pf_willow
    from .evaluation.semantic import DEFAULT_ALPHAS
    from .evaluation.semantic_model import evaluate_matcher
    from .semantic.predict import load_matcher
    from .training.loop import resolve_device
    from .viz.semantic import write_alignment_figures

    images = read_pf_willow(data)
    pair_list = read_pairs_csv(pairs, data, images) if pairs else pf_willow_pairs(images)
    if class_:
        known = sorted({p.category for p in pair_list})
        unknown = sorted(set(class_) - set(known))
        if unknown:
            raise typer.BadParameter(f"unknown class(es) {unknown}; the pairs have {known}")
        pair_list = [p for p in pair_list if p.category in set(class_)]
    dev = resolve_device(device)
    matcher = load_matcher(model, dev)
    alphas = tuple(alpha or DEFAULT_ALPHAS)
    norms = tuple(normalisation or ("bbox", "image"))
    results, warps = evaluate_matcher(matcher, pair_list, alphas, norms, batch_size=batch_size, device=dev)
    payload = {"model": model, "data": str(data), "pairs": str(pairs) if pairs else "all ordered pairs per class",
               **results.to_dict()}
    if model == "shipped":
        payload["note"] = SHIPPED_SEMANTIC_NOTE
    from .io.atomic import write_json

    write_json(out, payload)
    a = 0.1 if 0.1 in alphas else alphas[0]
    typer.echo(f"PCK@{a:g} over {len(pair_list)} pairs (mean over classes / over pairs):")
    if model == "shipped":
        typer.echo(f"note: {SHIPPED_SEMANTIC_NOTE}")
    for norm in norms:
        per = results.per_class(norm, a)
        typer.echo(f"  {norm:6s} {100 * results.mean_over_classes(norm, a):5.1f} / "
                   f"{100 * results.mean_over_pairs(norm, a):5.1f}   "
                   + "  ".join(f"{c} {100 * v:.1f}" for c, v in per.items()))
    if figures:
        written = write_alignment_figures(pair_list, warps, figures, num_figures, a)
        typer.echo(f"figures: {len(written)} in {figures}")
    typer.echo(f"results: {out}")


# --- semantic -----------------------------------------------------------------------------------------
@semantic_app.command("weak-pairs")
def semantic_weak_pairs(
    data: Annotated[Path, typer.Option(help="PF-WILLOW-layout folder (<class>/<image>.png + .mat keypoints).")],
    out: Annotated[Path, typer.Option(help="Pairs csv to write (source_image,target_image,class,flip).")],
    class_: Annotated[list[str] | None, typer.Option(
        "--class", help="Class whose images are paired (repeat; default all). Leave the test classes out.")] = None,
    test_pairs: Annotated[Path | None, typer.Option(
        help="Pairs csv of evaluation pairs: no weak pair may show both images of one (either order, any "
             "flip).")] = None,
    max_per_category: Annotated[int, typer.Option(help="Random pairs per class (Publication II: 100).")] = 100,
    flips: Annotated[bool, typer.Option(help="Add each image paired with its mirror image.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the random pairs.")] = 0,
) -> None:
    """Write the weakly labelled training pairs of Publication II: flips + random same-class pairs."""
    from .datasets.semantic import read_pairs_csv, read_pf_willow
    from .datasets.weak_pairs import write_weak_pairs

    images = read_pf_willow(data)
    known = sorted({im.category for im in images})
    unknown = sorted(set(class_ or ()) - set(known))
    if unknown:
        raise typer.BadParameter(f"unknown class(es) {unknown}; {data} has {known}")
    chosen = [im for im in images if not class_ or im.category in set(class_)]
    tests = read_pairs_csv(test_pairs, data, images) if test_pairs else []
    written = write_weak_pairs(out, chosen, data, tests, max_per_category, seed, flips)
    flipped = sum(p.flip and p.source is p.target for p in written)
    typer.echo(f"{len(written)} pairs ({flipped} flip pairs, {len(written) - flipped} random pairs) of "
               f"{len({p.category for p in written})} classes -> {out}")


# --- models -------------------------------------------------------------------------------------------
@app.command()
def models() -> None:
    """List the registered components (local features, matchers, global descriptors, pose estimators,
    networks and backbones)."""
    from .features import extractors
    from .localization import estimators
    from .matching import matchers
    from .models.backbones import backbones
    from .models.checkpoint import networks  # importing checkpoint registers every network
    from .retrieval import global_descriptors

    for reg in (extractors, matchers, global_descriptors, estimators, networks, backbones):
        typer.echo(f"{reg.kind}: {', '.join(reg.names())}")


def main() -> None:
    try:
        app()
    except VislocError as e:
        logging.getLogger("visloc").error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
