"""The stages as their own steps: retrieve -> pairs.txt, match -> features.h5 / matches.h5, and localize fed
by those files (visloc's own, and files written in hloc's layout by an independent script)."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from visloc.datasets import load_frames
from visloc.errors import ConfigError, InputError
from visloc.features import extractors
from visloc.geometry import pose_error
from visloc.io.pairs import read_pair_scores, read_pairs
from visloc.io.poses import read_poses
from visloc.localization import (
    LocalizeConfig,
    Localizer,
    Map,
    MapConfig,
    RetrievalConfig,
    build_map,
    localize,
    match_pairs,
    retrieve,
)
from visloc.localization.localize import output_paths

pytestmark = pytest.mark.e2e


def test_retrieve_writes_ranked_pairs_that_localize_reproduces(tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    summary = retrieve(tiny_map, tiny_world, pairs, RetrievalConfig(num_retrieved=4), split="test")
    queries = load_frames(tiny_world, split="test").names
    ranked = read_pairs(pairs)
    assert summary.num_queries == len(queries) and len(ranked) == 4 * len(queries)
    assert [q for q, _ in ranked[::4]] == queries  # grouped per query, in query order
    scores = read_pair_scores(pairs)
    for q in queries:
        s = [scores[(q, d)] for qq, d in ranked if qq == q]
        assert s == sorted(s, reverse=True)
    # plain localize and localize fed with the retrieval stage's pairs agree exactly
    plain = localize(tiny_map, tiny_world, tmp_path / "plain.txt", LocalizeConfig(retrieval=RetrievalConfig(4)))
    staged = localize(tiny_map, tiny_world, tmp_path / "staged.txt", pairs=pairs)
    assert [r.retrieved for r in staged.results] == [r.retrieved for r in plain.results]
    assert (tmp_path / "staged.txt").read_text() == (tmp_path / "plain.txt").read_text()
    assert plain.num_localized >= 0.9 * len(queries)


def test_match_stage_writes_hloc_files_and_resumes(tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    retrieve(tiny_map, tiny_world, pairs, RetrievalConfig(num_retrieved=3), split="test")
    feats, matches = tmp_path / "features.h5", tmp_path / "matches.h5"
    first = match_pairs(tiny_map, pairs, tiny_world, feats, matches, split="test")
    assert first.num_matched == first.num_pairs == len(read_pairs(pairs)) and not first.skipped
    again = match_pairs(tiny_map, pairs, tiny_world, feats, matches, split="test")
    assert again.num_matched == 0  # every pair already stored
    # read exactly as hloc's get_matches does: key name0/name1, matches0 and matching_scores0
    m = Map(tiny_map)
    with h5py.File(matches, "r") as fm, h5py.File(feats, "r") as ff:
        for q, db in read_pairs(pairs)[:6]:
            g = fm[q.replace("/", "-") + "/" + db.replace("/", "-")]
            matches0, scores0 = g["matches0"][()], g["matching_scores0"][()]
            n0 = ff[q]["keypoints"].shape[0]
            assert matches0.shape == scores0.shape == (n0,)
            valid = matches0 > -1
            assert valid.sum() > 15 and np.all(scores0[valid] > 0) and np.all(scores0[~valid] == 0)
            assert matches0[valid].max() < len(m.local_features(db))
    # essential uses unrestricted matches: its in-process matches are the match stage's
    run = localize(tiny_map, tiny_world, tmp_path / "ess.txt", LocalizeConfig("essential"), pairs=pairs)
    with h5py.File(output_paths(run.poses_path)["matches"], "r") as a, h5py.File(matches, "r") as b:
        for q, db in read_pairs(pairs)[:6]:
            key = q.replace("/", "-") + "/" + db.replace("/", "-")
            np.testing.assert_array_equal(a[key]["matches0"][()], b[key]["matches0"][()])
    # and localize fed with both files gives the same poses as matching in process
    fed = localize(tiny_map, tiny_world, tmp_path / "fed.txt", LocalizeConfig("essential"), pairs=pairs,
                   features=feats, matches=matches)
    assert (tmp_path / "fed.txt").read_text() == (tmp_path / "ess.txt").read_text()
    assert fed.num_localized == run.num_localized > 0


def _hloc_key(a: str, b: str) -> str:
    return "/".join((a.replace("/", "-"), b.replace("/", "-")))


def test_localize_reads_files_written_in_hloc_layout_by_another_tool(
    tiny_world: Path, tiny_map: Path, tmp_path: Path
) -> None:
    """An independent writer (h5py + OpenCV's brute-force matcher, hloc's dtypes: int16 matches0, float16
    scores, reversed pair keys for half the pairs) feeding ``localize --pairs --features --matches``."""
    m = Map(tiny_map)
    test = load_frames(tiny_world, split="test").frames
    sift = extractors.create("sift", max_keypoints=1024)
    pairs = tmp_path / "pairs-hloc.txt"
    lines = []
    with h5py.File(tmp_path / "feats-hloc.h5", "w") as ff, h5py.File(tmp_path / "matches-hloc.h5", "w") as fm:
        for k, f in enumerate(test):
            feats = sift(cv2.cvtColor(cv2.imread(str(f.image_path)), cv2.COLOR_BGR2RGB))
            g = ff.create_group(f.name)
            g["keypoints"], g["descriptors"] = feats.keypoints, feats.descriptors.T.astype(np.float16)
            g["scores"], g["image_size"] = feats.scores, np.array(feats.image_size)
            # the true nearest database images (by camera centre): retrieval is not under test here
            dbs = sorted(m.names, key=lambda n: np.linalg.norm(m.poses[n].center - f.pose.center))[:3]
            for j, db in enumerate(dbs):
                lines.append(f"{f.name} {db}\n")
                bf = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
                found = bf.match(feats.descriptors, m.local_features(db).descriptors)
                found = [x for x in found if x.distance < 0.7]
                qi = np.array([x.queryIdx for x in found])
                di = np.array([x.trainIdx for x in found])
                if (k + j) % 2:  # stored as db/query, as hloc does when the pair was listed that way
                    matches0 = np.full(len(m.local_features(db)), -1, np.int16)
                    matches0[di] = qi
                    grp = fm.create_group(_hloc_key(db, f.name))
                    scores = np.zeros(len(matches0), np.float16)
                    scores[di] = 1.0
                else:
                    matches0 = np.full(len(feats), -1, np.int16)
                    matches0[qi] = di
                    grp = fm.create_group(_hloc_key(f.name, db))
                    scores = np.zeros(len(matches0), np.float16)
                    scores[qi] = 1.0
                grp["matches0"], grp["matching_scores0"] = matches0, scores
    pairs.write_text("".join(lines))
    out = tmp_path / "poses.txt"
    summary = localize(tiny_map, tiny_world, out, LocalizeConfig("pnp"), pairs=pairs,
                       features=tmp_path / "feats-hloc.h5", matches=tmp_path / "matches-hloc.h5")
    estimates = read_poses(out)
    assert summary.num_localized >= 0.9 * len(test) and not summary.skipped
    errors = [pose_error(estimates[f.name], f.pose) for f in test if f.name in estimates]
    assert np.median([t for t, _ in errors]) < 0.01 and np.median([r for _, r in errors]) < 0.3


def test_match_file_without_features_or_pairs_is_refused(tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--features"):
        localize(tiny_map, tiny_world, tmp_path / "p.txt", matches=tmp_path / "m.h5")
    with pytest.raises(InputError, match="--pairs"):
        localize(tiny_map, tiny_world, tmp_path / "p.txt", matches=tmp_path / "m.h5", features=tmp_path / "f.h5")


def test_query_missing_from_the_pairs_file_is_skipped_and_reported(tiny_world: Path, tiny_map: Path, tmp_path: Path) -> None:
    test = load_frames(tiny_world, split="test")
    pairs = tmp_path / "pairs.txt"
    retrieve(tiny_map, test.frames[1:], pairs)
    summary = localize(tiny_map, test, tmp_path / "poses.txt", pairs=pairs)
    assert [s.name for s in summary.skipped] == [test.frames[0].name]
    assert "no pairs" in summary.skipped[0].reason
    assert len(summary.results) == len(test.frames) - 1


def test_retrieval_only_map_of_an_image_folder_without_poses(tiny_world: Path, tmp_path: Path) -> None:
    """A folder of photos (names are relative paths, searched recursively) indexed without poses."""
    photos = tmp_path / "photos"
    train = load_frames(tiny_world, split="train").frames[::4]
    for f in train:
        dst = photos / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(f.image_path.read_bytes())
    summary = build_map(photos, tmp_path / "map", MapConfig(extractor_options={"max_keypoints": 512}, points="none"))
    m = Map(tmp_path / "map")
    assert summary.num_images == len(train) and not m.has_poses and not m.has_points
    assert sorted(m.names) == sorted(f.name for f in train)  # e.g. "scene_00/seq-01/frame-000000.color.png"
    with pytest.raises(ConfigError, match="retrieval-only"):
        Localizer(m)
    pairs = tmp_path / "pairs.txt"
    retrieve(m, photos, pairs, RetrievalConfig(num_retrieved=2))
    ranked = read_pairs(pairs)
    assert all(q == d for q, d in ranked[::2])  # each photo finds itself first
    retrieve(m, photos, pairs, RetrievalConfig(num_retrieved=2, exclude_self=True))
    assert all(q != d for q, d in read_pairs(pairs))


@pytest.mark.real_data
def test_landmark_photos_search_each_other(real_data: Path, tmp_path: Path) -> None:
    """The shared landmark photos (5 landmarks, 32 photos in one folder per landmark) as a retrieval-only
    map: names are relative paths, and a photo's best other match shows the same landmark far more often
    than chance (about 1 in 5)."""
    root = real_data / "landmarks_mini"
    if not root.is_dir():
        pytest.skip(f"landmarks_mini not found under {real_data}")
    build_map(root, tmp_path / "map", MapConfig(extractor_options={"max_keypoints": 1024}, points="none"))
    pairs = tmp_path / "pairs.txt"
    summary = retrieve(tmp_path / "map", root, pairs, RetrievalConfig(num_retrieved=1, exclude_self=True))
    top1 = read_pairs(pairs)
    assert summary.num_queries == len(top1) == 32
    assert "london_bridge/78916675_4568141288.jpg" in {q for q, _ in top1}
    same = np.mean([q.split("/")[0] == d.split("/")[0] for q, d in top1])
    assert same >= 0.5, same
    # the whole ranking against the shared labels: mAP far above chance (about 0.2 for 5 landmarks)
    from visloc.evaluation.retrieval import evaluate_pairs_with_labels, read_labels_csv

    retrieve(tmp_path / "map", root, pairs, RetrievalConfig(num_retrieved=32, exclude_self=True))
    results = evaluate_pairs_with_labels(pairs, read_labels_csv(root / "labels.csv"), Map(tmp_path / "map").names)
    assert results.num_queries == 32 and results.protocols["labels"]["mAP"] >= 0.5
