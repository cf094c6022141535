"""Long movies (issue #16, parts 1-2): the streaming track clean-up and CTC writer give exactly
the in-memory result, and the pipeline streams frames through network, clustering, linking
and writing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_embedtrack.engine.cluster import ClusterParams
from napari_embedtrack.engine.link import Linker
from napari_embedtrack.engine.postprocess import StreamFinisher, finish_tracks, seediness_u8
from napari_embedtrack.engine.progress import run
from napari_embedtrack.io import ctc
from napari_embedtrack.synthetic import make_movie

from .oracle import ideal_outputs


def _corrupted_tracking(seed: int, n_frames: int = 24):
    """A synthetic movie's true masks spoiled the way a network spoils them (cells missed for
    a frame, cells cut in two, small fragments, one-frame specks), then linked with ideal
    tracking offsets: tracked labels + lineage with divisions, one-frame daughters, gaps and
    one-frame tracks."""
    movie = make_movie(n_frames=n_frames, shape=(96, 96), n_cells=7, seed=seed,
                       division_rate=0.15, radius=(5.0, 8.0))  # fmt: skip
    rng = np.random.default_rng(seed)
    truth = movie.labels
    offsets = ideal_outputs(truth, movie.lineage, 1 / 255)
    linker = Linker()
    tracked = []
    hidden: dict[int, int] = {}  # cell -> last frame it is missed in
    for t in range(n_frames):
        frame = truth[t].astype(np.int64).copy()
        ids = [i for i in np.unique(frame) if i]
        for cell in ids:
            r = rng.random()
            missed = r < 0.06 and 0 < t < n_frames - 1  # missed for one frame
            if hidden.get(cell, -1) >= t or missed:
                frame[frame == cell] = 0
            elif r < 0.09 and 0 < t < n_frames - 3:  # missed for two or three frames
                hidden[cell] = t + int(rng.integers(1, 3))
                frame[frame == cell] = 0
            elif r < 0.14:  # cut in two: a one-frame daughter or a fragment
                ys, xs = np.nonzero(frame == cell)
                cut = ys > np.median(ys) if rng.random() < 0.5 else xs > np.median(xs)
                frame[ys[cut], xs[cut]] = frame.max() + 1
        for _ in range(rng.integers(0, 3)):  # specks away from cells
            y, x = rng.integers(2, 92, size=2)
            if not frame[y - 2 : y + 2, x - 2 : x + 2].any():
                frame[y - 2 : y + 2, x - 2 : x + 2] = frame.max() + 1
        off = offsets[t].track_offsets if t else None
        tracked.append(linker.add(frame, off))
    return np.stack(tracked), linker.lineage


PARAMS = [
    ClusterParams(min_daughter_size=0, gap_distance=12.0, drop_single=True),
    ClusterParams(min_daughter_size=30, gap_distance=20.0, drop_single=False),
    ClusterParams(min_daughter_size=-1, gap_distance=12.0, drop_single=True),
    ClusterParams(min_daughter_size=0, gap_distance=0.0, drop_single=True),
    ClusterParams(
        min_daughter_size=0,
        gap_distance=12.0,
        max_gap=3,
        drop_single=True,
        small_track_fraction=0.3,
    ),
    ClusterParams(gap_distance=20.0, max_gap=2),
    ClusterParams(small_track_fraction=0.6),
    ClusterParams(gap_distance=12.0, max_gap=3, min_gap=0, min_daughter_size=0),
    ClusterParams(gap_distance=12.0, min_gap=0, drop_single=True, small_track_fraction=0.3),
    ClusterParams(min_daughter_size=0, min_daughter_ratio=0.5, gap_distance=12.0, min_gap=0),
    ClusterParams(small_track_fraction=0.5, small_track_reference="pixels"),
    ClusterParams(
        gap_distance=12.0,
        small_track_fraction=0.5,
        small_track_reference="pixels",
        small_track_edge_fraction=0.3,
    ),
    ClusterParams(),
]


def _stream(labels, lineage, params):
    finisher = StreamFinisher(lineage, params, labels.shape[0], lambda t: labels[t])
    lin = run(finisher.plan())
    frames = list(finisher.frames())
    out = np.stack(frames) if frames else np.zeros((0, *labels.shape[1:]), np.uint32)
    again = list(finisher.frames())  # a second pass reads the same
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))
    return out, lin


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_streaming_clean_up_equals_the_in_memory_one(seed):
    labels, lineage = _corrupted_tracking(seed)
    labels.flags.writeable = False  # the finisher must not change the frames it reads
    parents = lineage[lineage[:, 3] > 0, 3]
    assert np.unique(parents).size >= 2  # divisions (most of them one-frame daughters)
    changed = 0
    for params in PARAMS:
        want_labels, want_lineage = finish_tracks(labels, lineage, params)
        got_labels, got_lineage = _stream(labels, lineage, params)
        np.testing.assert_array_equal(got_labels, want_labels)
        np.testing.assert_array_equal(got_lineage, want_lineage)
        assert got_labels.dtype == want_labels.dtype
        changed += len(want_lineage) < len(lineage)
    assert changed >= 2  # the rules did something on these movies


def _break_links(labels, lineage, n: int = 3):
    """The ``n`` longest tracks cut in two at their middle frame (a new id from there on, no
    parent; the old track's daughters now hang on the new id): links the linker missed."""
    labels, rows = labels.copy(), [list(map(int, r)) for r in lineage]
    next_id = max(r[0] for r in rows) + 1
    for row in sorted(rows, key=lambda r: r[1] - r[2])[:n]:
        tid, start, end, _ = row
        mid = (start + end + 1) // 2
        part = labels[mid : end + 1]
        part[part == tid] = next_id
        for r in rows:
            r[3] = next_id if r[3] == tid else r[3]
        rows.append([next_id, mid, end, 0])
        row[2] = mid - 1
        next_id += 1
    return labels, np.asarray(rows, np.int64)


@pytest.mark.parametrize("seed", [0, 2])
def test_streaming_joins_broken_tracks_like_the_in_memory_clean_up(seed):
    labels, lineage = _break_links(*_corrupted_tracking(seed))
    labels.flags.writeable = False
    for params in PARAMS:
        if params.min_gap:
            continue
        want_labels, want_lineage = finish_tracks(labels, lineage, params)
        got_labels, got_lineage = _stream(labels, lineage, params)
        np.testing.assert_array_equal(got_labels, want_labels)
        np.testing.assert_array_equal(got_lineage, want_lineage)
        _, kept = finish_tracks(labels, lineage, replace(params, min_gap=1))
        assert len(want_lineage) <= len(kept) - 3  # the three breaks joined


def test_streaming_clean_up_of_short_and_empty_movies():
    params = PARAMS[0]
    for n in (0, 1, 2):
        labels = np.zeros((n, 8, 8), np.uint32)
        lineage = np.zeros((0, 4), np.int64)
        if n:
            labels[:, 2:4, 2:4] = 1
            lineage = np.array([[1, 0, n - 1, 0]], np.int64)
        want = finish_tracks(labels, lineage, params)
        got = _stream(labels, lineage, params)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("seed", [0, 3])
def test_streaming_results_writer_equals_write_results(seed, tmp_path):
    """Masks and res_track.txt byte for byte, also for a movie whose tracks have time gaps
    (split into new tracks by the writer)."""
    labels, lineage = _corrupted_tracking(seed)
    labels, lineage = finish_tracks(labels, lineage, PARAMS[1])
    gappy = labels.copy()
    tid = int(lineage[np.argmax(lineage[:, 2] - lineage[:, 1]), 0])
    start, end = (int(v) for v in lineage[lineage[:, 0] == tid, 1:3][0])
    gappy[(start + end) // 2][gappy[(start + end) // 2] == tid] = 0  # a hole in one track
    for k, movie in enumerate((labels, gappy)):
        ctc.write_results(tmp_path / f"a{k}", movie, lineage)
        written = ctc.write_results_frames(
            tmp_path / f"b{k}", lambda m=movie: iter(m), lineage, movie.shape
        )
        names = sorted(p.name for p in (tmp_path / f"a{k}").iterdir())
        assert names == sorted(p.name for p in (tmp_path / f"b{k}").iterdir())
        for name in names:
            a = (tmp_path / f"a{k}" / name).read_bytes()
            assert a == (tmp_path / f"b{k}" / name).read_bytes(), name
        np.testing.assert_array_equal(written, ctc.read_lineage(tmp_path / f"a{k}/res_track.txt"))
    n_plain = len(ctc.read_lineage(tmp_path / "b0/res_track.txt"))
    assert len(ctc.read_lineage(tmp_path / "b1/res_track.txt")) == n_plain + 1  # the split


@pytest.mark.parametrize("seed", [0, 3])
def test_streaming_dim_rims_equal_the_in_memory_ones(seed):
    """With ``grow_dim`` the finished frames get each cell's dim rim, after the rules, the
    same way in memory and streamed from the frame store's seediness."""
    from scipy import ndimage

    labels, lineage = _corrupted_tracking(seed)
    labels.flags.writeable = False
    # seediness: 0.9 in cells with even ids, 0.55 in odd ones, 0.4 on a 2-px ring around all
    seeds = np.zeros(labels.shape, np.float32)
    for t, frame in enumerate(labels):
        seeds[t][ndimage.binary_dilation(frame > 0, iterations=2)] = 0.4
        seeds[t][frame > 0] = np.where(frame[frame > 0] % 2 == 0, 0.9, 0.55)
    seeds = seediness_u8(seeds)
    params = replace(PARAMS[8], grow_dim=0.65)
    want_labels, want_lineage = finish_tracks(labels, lineage, params, seeds)
    finisher = StreamFinisher(lineage, params, len(labels), lambda t: labels[t], lambda t: seeds[t])
    got_lineage = run(finisher.plan())
    got_labels = np.stack(list(finisher.frames()))
    np.testing.assert_array_equal(got_labels, want_labels)
    np.testing.assert_array_equal(got_lineage, want_lineage)
    bare, bare_lineage = finish_tracks(labels, lineage, params)  # no seediness: no rims
    np.testing.assert_array_equal(bare_lineage, want_lineage)
    grown = (want_labels > 0) & (bare == 0)
    ring = grown & (seeds == seediness_u8(np.float32(0.4)))
    assert ring.sum() > 100  # the dim cells' rings
    for t in range(len(labels)):  # a ring pixel joins a dim cell (0.55), never a bright one
        for cell in np.unique(want_labels[t][ring[t]]):
            assert np.median(seeds[t][bare[t] == cell]) < seediness_u8(np.float32(0.6))
    np.testing.assert_array_equal(want_labels[bare > 0], bare[bare > 0])  # masks only grow
