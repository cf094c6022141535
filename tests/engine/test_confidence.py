"""Confidence of cells, links and divisions (engine/confidence.py, issue #17): planted errors
rank at the top of the review queue; errors against ground truth are found."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_embedtrack.engine.cluster import ClusterParams
from napari_embedtrack.engine.confidence import (
    KINDS,
    iter_confidence,
    score_tracking,
    truth_errors,
)
from napari_embedtrack.engine.pipeline import retrack
from napari_embedtrack.engine.progress import Progress, run

from .planted import G, noisy_outputs, planted_movie

PARAMS = ClusterParams(grid_spacing=G)
NEAR = 30.0  # px: a suspect within this distance and one frame of a planted error is about it


@pytest.fixture(scope="module")
def planted():
    return planted_movie(seed=3)


def about(suspect, errors) -> list[str]:
    """Names of the planted errors a suspect is about (near in time and space)."""
    return [
        name
        for name, t, y, x in errors
        if abs(suspect.frame - t) <= 1 and np.hypot(suspect.y - y, suspect.x - x) < NEAR
    ]


def first_rank(suspects, errors) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for k, s in enumerate(suspects):
        for name in about(s, errors):
            ranks.setdefault(name, k)
    return ranks


def test_planted_errors_rank_top(planted):
    report = score_tracking(planted.labels, planted.lineage, planted.outputs, params=PARAMS)
    suspects = report.suspects
    names = [e[0] for e in planted.errors]
    assert names == ["merge", "split", "broken link", "false division"]
    ranks = first_rank(suspects, planted.errors)
    # every planted error has an item among the first 8 (two per error) ...
    assert set(ranks) == set(names) and max(ranks.values()) < 8, ranks
    # ... the first four items are all about planted errors, and everything the queue
    # doubts seriously (confidence < 0.5) is about one of them
    assert all(about(s, planted.errors) for s in suspects[:4])
    doubtful = [s for s in suspects if s.confidence < 0.5]
    assert len(doubtful) >= 4 and all(about(s, planted.errors) for s in doubtful), doubtful
    # the items say what is wrong
    by_error = {n: [s for s in suspects if n in about(s, planted.errors)] for n in names}
    assert any(s.kind == "cell" and "merge" in s.reason for s in by_error["merge"])
    assert any(s.kind == "cell" and "split" in s.reason for s in by_error["split"])
    assert any(s.kind == "track-start" and "broken link" in s.reason
               for s in by_error["broken link"])  # fmt: skip
    assert any(s.kind == "division" for s in by_error["false division"])
    assert {s.kind for s in suspects} <= set(KINDS)
    assert suspects == sorted(suspects, key=lambda s: s.confidence)
    assert all(0.0 <= s.confidence <= 1.0 and s.reason for s in suspects)


def test_correct_tracking_is_trusted(planted):
    """The true tracking of the same movie: nothing is seriously doubted."""
    report = score_tracking(planted.truth, planted.truth_lineage, planted.outputs, params=PARAMS)
    assert min((s.confidence for s in report.suspects), default=1.0) > 0.8
    assert np.all(report.node_confidence() > 0.8)
    divisions = report.divisions
    assert len(divisions["parent"]) == 9  # the movie's divisions, all trusted
    assert np.all(divisions["confidence"] > 0.8)


def test_geometric_cues_without_outputs(planted):
    """Labels without network outputs (e.g. read from a results folder): area jumps, tracks
    appearing mid-movie and implausible divisions still put the errors first."""
    report = score_tracking(planted.labels, planted.lineage)
    ranks = first_rank(report.suspects, planted.errors)
    assert set(ranks) == {"merge", "split", "broken link", "false division"}
    assert max(ranks.values()) < 12, ranks
    assert np.all(np.isnan(report.cells["seediness"]))


def test_dim_false_cell_planted_in_outputs(planted):
    """A dim blob planted in the outputs, clustered and linked by the pipeline: its cells
    rank first, as dim, and its track as appearing and vanishing mid-movie."""
    outs = noisy_outputs(planted.truth, planted.truth_lineage, sigma=0.2)
    free = planted.truth[4:8].max(0) == 0
    free[[0, -1]] = free[:, [0, -1]] = False
    dist = ndimage.distance_transform_edt(free)
    y, x = np.unravel_index(np.argmax(dist), free.shape)
    yy, xx = np.mgrid[: free.shape[0], : free.shape[1]]
    blob = (yy - y) ** 2 + (xx - x) ** 2 <= 36
    for o in outs[4:8]:
        o.seediness[blob] = 0.6
        o.offsets[0][blob] = (y - yy)[blob]
        o.offsets[1][blob] = (x - xx)[blob]
    result = run(retrack(outs, PARAMS))
    report = score_tracking(result.labels, result.lineage, outs, params=PARAMS)
    top = report.suspects[:6]
    assert all(np.hypot(s.y - y, s.x - x) < 3 for s in top), top
    assert [s.kind for s in top[:4]] == ["cell"] * 4 and "dim" in top[0].reason
    assert {s.kind for s in top[4:]} == {"track-start", "track-end"}
    assert all(s.confidence > 0.85 for s in report.suspects[6:])


def test_truth_errors_find_the_planted_errors(planted):
    errors = truth_errors(planted.labels, planted.lineage, planted.truth, planted.truth_lineage)
    got = sorted((s.kind, s.frame) for s in errors)
    assert got == [("link-error", 5), ("link-error", 8), ("merge", 3), ("split", 6)]
    assert all(s.confidence == 0 and s.reason for s in errors)
    assert truth_errors(planted.truth, planted.truth_lineage, planted.truth,
                        planted.truth_lineage) == []  # fmt: skip
    # a missed cell and a false one
    res = planted.truth.copy()
    res[2][res[2] == 1] = 0
    res[2, 0:8, 0:8] = 99
    kinds = {(s.kind, s.frame, s.label) for s in truth_errors(res, None, planted.truth, None)}
    assert ("missed", 2, 1) in kinds and ("false-positive", 2, 99) in kinds


def test_report_tables_and_progress(planted):
    gen = iter_confidence(planted.labels, planted.lineage, planted.outputs, params=PARAMS)
    steps = []
    report = run(gen, steps.append)
    assert all(isinstance(p, Progress) for p in steps)
    assert steps[-1].done == steps[-1].total == planted.labels.shape[0]
    cells = report.cells
    n = sum(len(np.unique(f)) - 1 for f in planted.labels)
    assert all(len(v) == n for v in cells.values())
    order = np.lexsort((cells["label"], cells["t"]))
    assert np.array_equal(order, np.arange(n))  # frame, then label
    # the first frame has no links; every later cell of a track has one
    assert np.all(np.isnan(cells["link_confidence"][cells["t"] == 0]))
    tracks = report.track_confidence()
    assert set(tracks) == set(np.unique(planted.labels[planted.labels > 0]).tolist())
    assert min(tracks.values()) < 0.1
    # outputs of a part of the movie only: its frames get the network's cues
    part = score_tracking(planted.labels, planted.lineage, planted.outputs[4:7],
                          params=PARAMS, output_start=4)  # fmt: skip
    has = ~np.isnan(part.cells["seediness"])
    assert set(part.cells["t"][has].tolist()) == {4, 5, 6}


def test_bad_input():
    with pytest.raises(ValueError, match="expected \\(T, Y, X\\) integers"):
        score_tracking(np.zeros((2, 8, 8), np.float32))
    labels = np.zeros((2, 8, 8), np.int32)
    outs = noisy_outputs(labels[:1] * 0 + 0, np.zeros((0, 4), np.int64))
    with pytest.raises(ValueError, match="frame shape"):
        score_tracking(np.zeros((2, 9, 9), np.int32), None, outs)
    assert score_tracking(labels).suspects == []
