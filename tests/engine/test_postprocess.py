"""Outcome tests of engine.postprocess (issue #13) and the clustering acceptance option."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_embedtrack.engine.cluster import ClusterParams, cluster
from napari_embedtrack.engine.postprocess import (
    RIM_REACH,
    add_dim_rims,
    close_gaps,
    dim_rim,
    drop_single_frame_tracks,
    drop_small_tracks,
    finish_tracks,
    merge_fragments,
    reference_area,
    repair_divisions,
    seediness_u8,
)
from napari_embedtrack.io.tracks import consistent_tracks

from .oracle import ideal_bandwidth

G = 1.0 / 255.0

# --------------------------------------------------------------------------- helpers


def _lineage(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _rows(lineage: np.ndarray) -> dict[int, tuple[int, int, int]]:
    return {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in np.asarray(lineage)}


def _assert_consistent(labels: np.ndarray, lineage: np.ndarray) -> None:
    """Every id's frames are exactly [start, end]; parents end the frame before their
    children start; labels and lineage name the same ids; consistent_tracks agrees."""
    lineage = np.asarray(lineage)
    assert lineage.dtype == np.int64 and lineage.ndim == 2 and lineage.shape[1] == 4
    table = _rows(lineage)
    assert len(table) == len(lineage), "duplicate ids in lineage"
    ids_in_labels = set(np.unique(labels).tolist()) - {0}
    assert ids_in_labels == set(table), (ids_in_labels, set(table))
    for tid, (s, e, p) in table.items():
        frames = np.nonzero((labels == tid).any(axis=(1, 2)))[0].tolist()
        assert frames == list(range(s, e + 1)), (tid, frames, s, e)
        if p:
            assert p in table, (tid, p)
            assert table[p][1] == s - 1, (tid, p, table[p], s)
    _, ctc_lineage = consistent_tracks(labels, lineage)
    np.testing.assert_array_equal(ctc_lineage, lineage[np.argsort(lineage[:, 0])])


def _movie(t: int, h: int = 20, w: int = 20) -> np.ndarray:
    return np.zeros((t, h, w), dtype=np.uint32)


# --------------------------------------------------------------------------- merge_fragments


def test_merge_small_piece_touching_a_cell_joins_it():
    lab = np.zeros((20, 20), dtype=np.uint32)
    lab[2:12, 2:12] = 3  # 100 px cell
    lab[5:7, 12:14] = 7  # 4 px piece touching it
    lab[15:17, 15:17] = 9  # 4 px isolated piece
    before = lab.copy()
    out = merge_fragments(lab, fragment_size=10)
    np.testing.assert_array_equal(lab, before)  # input not modified
    assert out.dtype == lab.dtype and out.shape == lab.shape
    assert (out[5:7, 12:14] == 3).all()
    assert (out[2:12, 2:12] == 3).all()
    assert (out[15:17, 15:17] == 9).all()  # isolated small instance is kept
    assert set(np.unique(out).tolist()) == {0, 3, 9}
    assert ((out > 0) == (lab > 0)).all()


def test_merge_piece_size_must_be_below_fragment_size():
    lab = np.zeros((20, 20), dtype=np.int32)
    lab[2:12, 2:12] = 1
    lab[5:7, 12:14] = 2  # 4 px
    assert (merge_fragments(lab, 4) == lab).all()  # not smaller than 4
    assert (merge_fragments(lab, 5)[5:7, 12:14] == 1).all()


def test_merge_picks_the_longest_shared_border():
    lab = np.zeros((20, 30), dtype=np.uint32)
    lab[2:18, 2:10] = 1  # left cell, cols 2..9
    lab[2:18, 13:25] = 2  # right cell, cols 13..24
    lab[6:10, 11:13] = 5  # piece: border 4 with cell 2 ...
    lab[6:8, 10] = 5  # ... and 2 with cell 1
    out = merge_fragments(lab, fragment_size=20)
    np.testing.assert_array_equal(out[lab == 5], 2)
    np.testing.assert_array_equal(out[lab != 5], lab[lab != 5])
    # the other way round: border 4 with cell 1, 2 with cell 2
    lab[lab == 5] = 0
    lab[6:10, 10:12] = 5
    lab[6:8, 12] = 5
    out = merge_fragments(lab, fragment_size=20)
    np.testing.assert_array_equal(out[lab == 5], 1)


def test_merge_tie_goes_to_the_larger_neighbour():
    lab = np.zeros((20, 30), dtype=np.uint32)
    lab[6:12, 11:15] = 1  # 24 px
    lab[2:18, 2:10] = 2  # 128 px
    lab[7:9, 10] = 4  # 2 px piece: border 2 with each cell
    out = merge_fragments(lab, fragment_size=10)
    np.testing.assert_array_equal(out[7:9, 10], 2)
    np.testing.assert_array_equal(out[lab == 1], 1)


def test_merge_fragment_size_zero_is_a_no_op():
    lab = np.zeros((20, 20), dtype=np.uint32)
    lab[2:12, 2:12] = 1
    lab[5:7, 12:14] = 2
    out = merge_fragments(lab, 0)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(merge_fragments(np.zeros((5, 5), np.uint32), 10), 0)


def test_merge_only_touching_4_connected():
    lab = np.zeros((20, 20), dtype=np.uint32)
    lab[2:12, 2:12] = 1
    lab[12, 12] = 2  # diagonal contact only
    out = merge_fragments(lab, 10)
    assert out[12, 12] == 2


@pytest.mark.parametrize("smaller_next_to_cell", [False, True])
def test_merge_chain_ends_in_the_big_cell(smaller_next_to_cell):
    lab = np.zeros((20, 30), dtype=np.uint32)
    lab[2:18, 2:12] = 1  # big cell, cols 2..11
    if smaller_next_to_cell:
        lab[6:10, 12] = 3  # 4 px, border 4 with the cell
        lab[6:10, 13] = 4  # 6 px, touches only piece 3
        lab[7:9, 14] = 4
    else:
        lab[6:10, 12:14] = 3  # 8 px, border 4 with the cell, 2 with piece 4
        lab[7:9, 14] = 4  # 2 px, touches only piece 3
    assert not ((lab[:, :-1] == 1) & (lab[:, 1:] == 4)).any()
    out = merge_fragments(lab, fragment_size=10)
    np.testing.assert_array_equal(out[lab > 0], 1)
    np.testing.assert_array_equal(out[lab == 0], 0)


def test_merge_isolated_pair_of_small_pieces_becomes_one_instance():
    """Two small pieces that touch only each other: each one's best neighbour is the other,
    so by the rule they join (one instance, kept as it is isolated)."""
    lab = np.zeros((20, 20), dtype=np.uint32)
    lab[5:8, 5] = 2  # 3 px
    lab[5:9, 6] = 3  # 4 px
    out = merge_fragments(lab, fragment_size=10)
    assert np.unique(out[lab > 0]).size == 1, np.unique(out[lab > 0])


def test_merge_cycle_of_small_pieces_next_to_a_cell():
    """Piece A (3 px) touches only piece B; B (4 px) touches A along 3 pixels and the cell
    along 1. A's best neighbour is B and B's best neighbour is A (a cycle): the pieces must
    not both stay separate instances beside the cell."""
    lab = np.zeros((20, 20), dtype=np.uint32)
    lab[2:12, 2:10] = 1  # cell, cols 2..9
    lab[5, 10] = 3  # B: (5, 10) touches the cell at (5, 9) ...
    lab[5:8, 11] = 3  # ... and rows 5..7 of col 11
    lab[5:8, 12] = 2  # A: rows 5..7 of col 12, touches only B
    out = merge_fragments(lab, fragment_size=10)
    a_labels = set(np.unique(out[lab == 2]).tolist())
    b_labels = set(np.unique(out[lab == 3]).tolist())
    assert a_labels == b_labels == {1}, f"A -> {a_labels}, B -> {b_labels}; expected the cell"


# --------------------------------------------------------------------------- repair_divisions


def _division_movie(d2_size: int, d2_frames: int, d1_frames: int = 3) -> np.ndarray:
    """Parent 1 in frames 0-2, daughters 2 (48 px) and 3 (d2_size = 4 or 40 px) from frame 3."""
    lab = _movie(3 + max(d1_frames, d2_frames), 20, 30)
    lab[0:3, 4:12, 4:12] = 1
    lab[3 : 3 + d1_frames, 4:10, 4:12] = 2
    rows, cols = (1, 4) if d2_size == 4 else (5, 8)
    lab[3 : 3 + d2_frames, 12 : 12 + rows, 4 : 4 + cols] = 3
    return lab


def test_repair_tiny_daughter():
    lab = _division_movie(d2_size=4, d2_frames=3)
    lin = _lineage([[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 5, 1]])
    lab0, lin0 = lab.copy(), lin.copy()
    out, olin = repair_divisions(lab, lin, min_daughter_size=10)
    np.testing.assert_array_equal(lab, lab0)
    np.testing.assert_array_equal(lin, lin0)
    assert out.dtype == lab.dtype
    np.testing.assert_array_equal(out[lab == 2], 1)  # big daughter continues the parent
    np.testing.assert_array_equal(out[lab == 3], 3)
    np.testing.assert_array_equal(out[lab == 1], 1)
    assert _rows(olin) == {1: (0, 5, 0), 3: (3, 5, 0)}
    _assert_consistent(out, olin)


def test_repair_unequal_daughters_by_their_ratio():
    """Daughters of 48 and 4 px (ratio 0.08): undone with min_daughter_ratio 0.25 whatever the
    absolute size rule; 48 and 40 px (0.83) kept; the ratio alone is off at 0."""
    lab = _division_movie(d2_size=4, d2_frames=3)
    lin = _lineage([[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 5, 1]])
    out, olin = repair_divisions(lab, lin, min_daughter_size=0)
    np.testing.assert_array_equal(olin, lin)
    out, olin = repair_divisions(lab, lin, min_daughter_size=0, min_daughter_ratio=0.25)
    assert _rows(olin) == {1: (0, 5, 0), 3: (3, 5, 0)}
    np.testing.assert_array_equal(out[lab == 2], 1)  # the larger daughter continues
    _assert_consistent(out, olin)
    lab = _division_movie(d2_size=40, d2_frames=3)
    out, olin = repair_divisions(lab, lin, min_daughter_size=0, min_daughter_ratio=0.8)
    np.testing.assert_array_equal(olin, lin)
    out, olin = repair_divisions(lab, lin, min_daughter_size=0, min_daughter_ratio=0.9)
    assert _rows(olin) == {1: (0, 5, 0), 3: (3, 5, 0)}


def test_repair_one_frame_daughter_even_without_size_rule():
    lab = _division_movie(d2_size=40, d2_frames=1, d1_frames=3)
    lin = _lineage([[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 3, 1]])
    out, olin = repair_divisions(lab, lin, min_daughter_size=0)
    np.testing.assert_array_equal(out[lab == 2], 1)
    np.testing.assert_array_equal(out[lab == 3], 3)
    assert _rows(olin) == {1: (0, 5, 0), 3: (3, 3, 0)}
    _assert_consistent(out, olin)


def test_repair_keeps_plausible_division():
    lab = _division_movie(d2_size=40, d2_frames=2, d1_frames=3)
    lin = _lineage([[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 4, 1]])
    out, olin = repair_divisions(lab, lin, min_daughter_size=10)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)
    _assert_consistent(out, olin)


def test_repair_one_frame_daughter_that_divides_again_is_plausible():
    lab = _movie(6, 20, 30)
    lab[0:3, 4:12, 4:12] = 1
    lab[3:6, 4:10, 4:12] = 2
    lab[3, 12:18, 4:12] = 3  # one frame, then divides
    lab[4:6, 12:18, 4:8] = 4
    lab[4:6, 12:18, 9:13] = 5
    lin = _lineage([[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 3, 1], [4, 4, 5, 3], [5, 4, 5, 3]])
    out, olin = repair_divisions(lab, lin, min_daughter_size=10)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)


def test_repair_larger_daughter_wins_even_if_it_has_the_higher_id():
    lab = _movie(6, 20, 30)
    lab[0:3, 4:12, 4:12] = 1
    lab[3:6, 4:6, 4:6] = 2  # tiny, lower id
    lab[3:6, 8:14, 4:12] = 3  # big
    lin = _lineage([[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 5, 1]])
    out, olin = repair_divisions(lab, lin, min_daughter_size=10)
    np.testing.assert_array_equal(out[lab == 3], 1)
    np.testing.assert_array_equal(out[lab == 2], 2)
    assert _rows(olin) == {1: (0, 5, 0), 2: (3, 5, 0)}
    _assert_consistent(out, olin)


def _cascade_movie(grandchildren_big: bool):
    lab = _movie(9, 24, 30)
    lab[0:3, 4:12, 4:12] = 1  # parent
    lab[3:6, 4:10, 4:12] = 2  # big daughter, divides at frame 6
    lab[3:5, 14:16, 4:6] = 3  # tiny daughter (4 px)
    lab[6:9, 4:10, 4:10] = 4  # grandchildren
    g5 = (slice(6, 9), slice(14, 20), slice(14, 22)) if grandchildren_big else (6, 14, 14)
    lab[g5] = 5
    lin = _lineage(
        [
            [1, 0, 2, 0],
            [2, 3, 5, 1],
            [3, 3, 4, 1],
            [4, 6, 8, 2],
            [5, 6, 8 if grandchildren_big else 6, 2],
        ]
    )
    return lab, lin


def test_repair_cascade_passes_later_division_to_the_parent():
    lab, lin = _cascade_movie(grandchildren_big=True)
    _assert_consistent(lab, lin)
    out, olin = repair_divisions(lab, lin, min_daughter_size=10)
    np.testing.assert_array_equal(out[lab == 2], 1)
    for k in (3, 4, 5):
        np.testing.assert_array_equal(out[lab == k], k)
    assert _rows(olin) == {1: (0, 5, 0), 3: (3, 4, 0), 4: (6, 8, 1), 5: (6, 8, 1)}
    _assert_consistent(out, olin)


def test_repair_cascade_of_two_implausible_divisions():
    lab, lin = _cascade_movie(grandchildren_big=False)  # 5: one pixel, one frame
    out, olin = repair_divisions(lab, lin, min_daughter_size=10)
    np.testing.assert_array_equal(out[lab == 2], 1)
    np.testing.assert_array_equal(out[lab == 4], 1)
    np.testing.assert_array_equal(out[lab == 5], 5)
    assert _rows(olin) == {1: (0, 8, 0), 3: (3, 4, 0), 5: (6, 6, 0)}
    _assert_consistent(out, olin)


def test_repair_without_divisions_is_identity():
    lab = _movie(3)
    lab[:, 2:6, 2:6] = 1
    lab[1:, 10:14, 10:14] = 2
    lin = _lineage([[1, 0, 2, 0], [2, 1, 2, 0]])
    out, olin = repair_divisions(lab, lin, min_daughter_size=100)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)


# --------------------------------------------------------------------------- drop_single


def test_drop_single_frame_tracks():
    lab = _movie(4, 20, 30)
    lab[0:2, 2:6, 2:6] = 1  # parent, two frames
    lab[2, 2:6, 2:6] = 2  # one-frame daughter (kept)
    lab[2:4, 8:12, 2:6] = 3  # daughter
    lab[1, 14:18, 14:18] = 4  # one-frame, no parent, no children: dropped
    lab[0, 14:18, 2:6] = 5  # one-frame parent (kept)
    lab[1:4, 14:18, 2:4] = 6
    lab[1:4, 14:18, 5:7] = 7
    lab[3, 0:2, 25:28] = 8  # one-frame at the last frame: kept (the movie ends there)
    lab[0, 0:2, 25:28] = 9  # one-frame at the first frame: kept
    lin = _lineage(
        [
            [1, 0, 1, 0],
            [2, 2, 2, 1],
            [3, 2, 3, 1],
            [4, 1, 1, 0],
            [5, 0, 0, 0],
            [6, 1, 3, 5],
            [7, 1, 3, 5],
            [8, 3, 3, 0],
            [9, 0, 0, 0],
        ]
    )
    _assert_consistent(lab, lin)
    lab0 = lab.copy()
    out, olin = drop_single_frame_tracks(lab, lin)
    np.testing.assert_array_equal(lab, lab0)
    assert set(_rows(olin)) == {1, 2, 3, 5, 6, 7, 8, 9}
    assert not np.isin(out, [4]).any()
    keep = ~np.isin(lab, [4])
    np.testing.assert_array_equal(out[keep], lab[keep])
    _assert_consistent(out, olin)


def test_drop_single_frame_tracks_removing_everything():
    lab = _movie(3)
    lab[1, 2:4, 2:4] = 1
    lab[1, 8:10, 8:10] = 2
    out, olin = drop_single_frame_tracks(lab, _lineage([[1, 1, 1, 0], [2, 1, 1, 0]]))
    assert out.max() == 0 and olin.shape == (0, 4)


# --------------------------------------------------------------------------- close_gaps


def _gap_movie(b_col: int, t: int = 5):
    lab = _movie(t, 20, 40)
    lab[0:2, 5:9, 5:9] = 1  # A, centroid (6.5, 6.5)
    lab[3:5, 5:9, b_col : b_col + 4] = 2  # B
    lin = _lineage([[1, 0, 1, 0], [2, 3, 4, 0]])
    return lab, lin


def test_close_gap_joins_nearby_track():
    lab, lin = _gap_movie(b_col=9)  # B centroid (6.5, 10.5): 4 px away
    lab0 = lab.copy()
    out, olin = close_gaps(lab, lin, gap_distance=6)
    np.testing.assert_array_equal(lab, lab0)
    assert _rows(olin) == {1: (0, 4, 0)}
    np.testing.assert_array_equal(out[3:5][lab[3:5] == 2], 1)
    ys, xs = np.nonzero(out[2] == 1)
    assert ys.size == 16
    assert np.mean(ys) == pytest.approx(6.5)
    assert np.mean(xs) == pytest.approx(8.5)  # half-way between 6.5 and 10.5
    assert set(np.unique(out[2]).tolist()) == {0, 1}
    _assert_consistent(out, olin)


def test_close_gap_too_far_or_off():
    lab, lin = _gap_movie(b_col=20)  # 15 px away
    out, olin = close_gaps(lab, lin, gap_distance=6)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)
    lab, lin = _gap_movie(b_col=9)
    out, olin = close_gaps(lab, lin, gap_distance=0)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)
    out, olin = close_gaps(lab, lin, gap_distance=3.9)  # 4 px away
    np.testing.assert_array_equal(out, lab)


def test_close_gap_requires_exactly_one_missing_frame():
    lab = _movie(6, 20, 40)
    lab[0:2, 5:9, 5:9] = 1
    lab[4:6, 5:9, 7:11] = 2  # two frames missing
    lin = _lineage([[1, 0, 1, 0], [2, 4, 5, 0]])
    out, olin = close_gaps(lab, lin, gap_distance=10)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)


def test_close_gap_of_several_frames_with_max_gap():
    """Two frames missing: bridged with max_gap 2 (not with 1); the mask moves 1/3 and 2/3 of
    the way in the missing frames."""
    lab = _movie(6, 20, 40)
    lab[0:2, 5:9, 5:9] = 1  # centroid (6.5, 6.5)
    lab[4:6, 5:9, 11:15] = 2  # centroid (6.5, 12.5): 6 px away
    lin = _lineage([[1, 0, 1, 0], [2, 4, 5, 0]])
    out, olin = close_gaps(lab, lin, gap_distance=10, max_gap=1)
    np.testing.assert_array_equal(out, lab)
    out, olin = close_gaps(lab, lin, gap_distance=10, max_gap=2)
    assert _rows(olin) == {1: (0, 5, 0)}
    for t, x in ((2, 8.5), (3, 10.5)):
        ys, xs = np.nonzero(out[t] == 1)
        assert ys.size == 16 and np.mean(xs) == pytest.approx(x)
    np.testing.assert_array_equal(out[4:6][lab[4:6] == 2], 1)
    _assert_consistent(out, olin)
    out, olin = close_gaps(lab, lin, gap_distance=5, max_gap=3)  # too far
    np.testing.assert_array_equal(out, lab)


def _broken_movie(t: int = 5, split: int = 2, b_col: int = 9):
    """Track 1 in frames 0 .. split-1, track 2 (no parent) from ``split`` on, nothing missing:
    one cell whose link the linker missed (B's centroid 4 px from A's with ``b_col`` 9)."""
    lab = _movie(t, 20, 40)
    lab[:split, 5:9, 5:9] = 1
    lab[split:, 5:9, b_col : b_col + 4] = 2
    return lab, _lineage([[1, 0, split - 1, 0], [2, split, t - 1, 0]])


def test_min_gap_0_joins_a_track_broken_between_consecutive_frames():
    lab, lin = _broken_movie()
    out, olin = close_gaps(lab, lin, gap_distance=6)  # min_gap 1: a break is no gap
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)
    lab0 = lab.copy()
    out, olin = close_gaps(lab, lin, gap_distance=6, min_gap=0)
    np.testing.assert_array_equal(lab, lab0)
    assert _rows(olin) == {1: (0, 4, 0)}
    np.testing.assert_array_equal(out > 0, lab > 0)  # relabelled, nothing painted
    np.testing.assert_array_equal(out[lab > 0], 1)
    _assert_consistent(out, olin)
    out, olin = close_gaps(lab, lin, gap_distance=3.9, min_gap=0)  # 4 px: too far
    np.testing.assert_array_equal(olin, lin)


def test_min_gap_0_joins_breaks_in_the_last_frame_and_in_two_frame_movies():
    for t, split in ((5, 4), (2, 1)):
        lab, lin = _broken_movie(t, split)
        out, olin = close_gaps(lab, lin, gap_distance=6, min_gap=0)
        assert _rows(olin) == {1: (0, t - 1, 0)}, (t, split)
        _assert_consistent(out, olin)


def test_min_gap_0_leaves_divisions_alone_and_prefers_the_break_to_a_gap():
    """A parent's track ends where its daughters start: not a break. A break (no frame
    missing) is joined before a one-frame gap, even when the gap's track is nearer."""
    lab = _movie(5, 20, 40)
    lab[0:2, 5:9, 5:9] = 1  # parent, ends at 1
    lab[2:5, 5:9, 9:13] = 2  # daughter
    lab[2:5, 12:16, 5:9] = 3  # daughter
    lab[2:5, 0:3, 9:13] = 4  # starts at 2 without parent, next to the parent
    lin = _lineage([[1, 0, 1, 0], [2, 2, 4, 1], [3, 2, 4, 1], [4, 2, 4, 0]])
    out, olin = close_gaps(lab, lin, gap_distance=20, min_gap=0)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)
    lab = _movie(5, 20, 40)
    lab[0:2, 5:9, 5:9] = 1
    lab[2:5, 5:9, 12:16] = 2  # break, 7 px away
    lab[3:5, 5:9, 6:10] = 3  # one-frame gap, 1 px away
    lin = _lineage([[1, 0, 1, 0], [2, 2, 4, 0], [3, 3, 4, 0]])
    out, olin = close_gaps(lab, lin, gap_distance=10, min_gap=0)
    assert _rows(olin) == {1: (0, 4, 0), 3: (3, 4, 0)}
    _assert_consistent(out, olin)


def test_close_gap_prefers_the_shorter_gap_to_the_nearer_track():
    lab = _movie(6, 20, 40)
    lab[0:2, 5:9, 5:9] = 1
    lab[3:6, 5:9, 10:14] = 2  # one frame missing, 5 px away
    lab[4:6, 5:9, 6:10] = 3  # two frames missing, 1 px away: the longer gap loses
    lin = _lineage([[1, 0, 1, 0], [2, 3, 5, 0], [3, 4, 5, 0]])
    out, olin = close_gaps(lab, lin, gap_distance=10, max_gap=3)
    assert _rows(olin) == {1: (0, 5, 0), 3: (4, 5, 0)}
    _assert_consistent(out, olin)


def test_drop_small_tracks_by_median_area():
    """The threshold is a fraction of the movie's median cell area (36 px here)."""
    lab = _movie(4, 20, 40)
    for tid, (y, x) in zip((1, 8, 9, 10), ((2, 2), (2, 20), (12, 20), (12, 30)), strict=True):
        lab[0:4, y : y + 6, x : x + 6] = tid  # 36 px: the movie's cells
    lab[1:3, 12:14, 2:4] = 2  # 4 px, no parent or children: dropped
    lab[0:3, 12:16, 12:16] = 3  # 16 px in two frames, 1 px in one: median 16
    lab[2, 12:16, 12:16] = 0
    lab[2, 12, 12] = 3
    lab[0, 2:4, 30:32] = 4  # small parent of two small daughters: all kept
    lab[1:4, 2:4, 30:32] = 5
    lab[1:4, 6:8, 30:32] = 6
    lab[1:3, 18:20, 38:40] = 7  # 4 px but in the corner (cut by the field of view): kept
    rows = [[1, 0, 3, 0], [2, 1, 2, 0], [3, 0, 2, 0], [4, 0, 0, 0], [5, 1, 3, 4],
            [6, 1, 3, 4], [7, 1, 2, 0], [8, 0, 3, 0], [9, 0, 3, 0], [10, 0, 3, 0]]  # fmt: skip
    lin = _lineage(rows)
    _assert_consistent(lab, lin)
    cells = {1, 8, 9, 10}
    out, olin = drop_small_tracks(lab, lin, 0.3)  # below 10.8 px
    assert set(_rows(olin)) == cells | {3, 4, 5, 6, 7}
    assert not (out == 2).any()
    np.testing.assert_array_equal(out[lab != 2], lab[lab != 2])
    _assert_consistent(out, olin)
    out, olin = drop_small_tracks(lab, lin, 0.5)  # below 18 px: 3 goes too
    assert set(_rows(olin)) == cells | {4, 5, 6, 7}
    params = ClusterParams(small_track_fraction=0.5)
    np.testing.assert_array_equal(finish_tracks(lab, lin, params)[0], out)
    # the same movie with every length doubled: the same tracks go (relative threshold)
    big = lab.repeat(2, axis=1).repeat(2, axis=2)
    assert set(_rows(drop_small_tracks(big, lin, 0.5)[1])) == cells | {4, 5, 6, 7}


def test_reference_area_pixel_weighted_ignores_many_small_pieces():
    cells, pieces = [100] * 10, [10] * 30  # more pieces than cells, few of the pixels
    assert reference_area(cells + pieces, "count") == 10
    assert reference_area(cells + pieces, "pixels") == 100
    assert reference_area([5, 5, 5], "pixels") == 5
    assert reference_area([], "pixels") == 0.0
    with pytest.raises(ValueError, match="'count' or 'pixels'"):
        reference_area([1], "mean")
    with pytest.raises(ValueError, match="small_track_reference"):
        ClusterParams(small_track_reference="mean")


def test_drop_small_tracks_pixel_reference_removes_debris_that_outnumbers_cells():
    """Four 36-px cells and six 9-px pieces: the median cell area is 9 px (the pieces), so
    the count reference keeps the pieces; the pixel-weighted one (36 px) removes them."""
    lab = _movie(3, 30, 40)
    rows = []
    for tid, (y, x) in enumerate(((2, 2), (2, 20), (12, 20), (12, 30)), start=1):
        lab[:, y : y + 6, x : x + 6] = tid
        rows.append([tid, 0, 2, 0])
    for i, (y, x) in enumerate(((22, 2), (22, 8), (22, 14), (22, 20), (26, 26), (12, 10))):
        lab[:, y : y + 3, x : x + 3] = 11 + i
        rows.append([11 + i, 0, 2, 0])
    lin = _lineage(rows)
    _assert_consistent(lab, lin)
    assert len(drop_small_tracks(lab, lin, 0.5, "count")[1]) == 10
    out, olin = drop_small_tracks(lab, lin, 0.5, "pixels")
    assert set(_rows(olin)) == {1, 2, 3, 4}
    assert set(np.unique(out).tolist()) == {0, 1, 2, 3, 4}
    params = ClusterParams(small_track_fraction=0.5, small_track_reference="pixels")
    np.testing.assert_array_equal(finish_tracks(lab, lin, params)[0], out)


def test_drop_small_tracks_edge_fraction_judges_edge_tracks_by_their_largest_area():
    """A cell entering the field of view (small on the edge, then whole) stays; a piece that
    stays small on the edge goes with an edge fraction and stays without one."""
    lab = _movie(4, 20, 40)
    lab[:, 2:8, 14:20] = 1  # a 36-px cell
    lab[:, 12:18, 24:30] = 2  # another
    lab[0, 8:14, 0:1] = 3  # entering: 6 px on the edge, then whole
    lab[1, 8:14, 0:3] = 3
    lab[2:4, 8:14, 0:6] = 3
    lab[:, 18:20, 36:38] = 4  # 4 px in the corner in every frame
    lin = _lineage([[1, 0, 3, 0], [2, 0, 3, 0], [3, 0, 3, 0], [4, 0, 3, 0]])
    _assert_consistent(lab, lin)
    # median track areas 36, 36, 27 (6, 18, 36, 36), 4: 0.5 of 36 px is 18 px
    assert set(_rows(drop_small_tracks(lab, lin, 0.5)[1])) == {1, 2, 3, 4}
    assert set(_rows(drop_small_tracks(lab, lin, 0.5, edge_fraction=0.1)[1])) == {1, 2, 3, 4}
    out, olin = drop_small_tracks(lab, lin, 0.5, edge_fraction=0.2)  # below 7.2 px
    assert set(_rows(olin)) == {1, 2, 3}
    assert not (out == 4).any()
    params = ClusterParams(small_track_fraction=0.5, small_track_edge_fraction=0.2)
    np.testing.assert_array_equal(finish_tracks(lab, lin, params)[0], out)
    with pytest.raises(ValueError, match="small_track_edge_fraction"):
        ClusterParams(small_track_edge_fraction=1.0)


def test_close_gap_ignores_tracks_with_children_or_parent():
    lab = _movie(5, 20, 40)
    lab[0:2, 5:9, 5:9] = 1  # A has children 3, 4 starting at frame 2 elsewhere
    lab[2:5, 14:18, 20:24] = 3
    lab[2:5, 14:18, 30:34] = 4
    lab[3:5, 5:9, 9:13] = 2  # B near A's end
    lin = _lineage([[1, 0, 1, 0], [2, 3, 4, 0], [3, 2, 4, 1], [4, 2, 4, 1]])
    out, olin = close_gaps(lab, lin, gap_distance=10)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)
    # B with a parent (ending at frame 2) is not joined either
    lab = _movie(5, 20, 40)
    lab[0:2, 5:9, 5:9] = 1
    lab[0:3, 14:18, 20:24] = 3
    lab[3:5, 5:9, 9:13] = 2
    lab[3:5, 14:18, 30:34] = 4
    lin = _lineage([[1, 0, 1, 0], [2, 3, 4, 3], [3, 0, 2, 0], [4, 3, 4, 3]])
    _assert_consistent(lab, lin)
    out, olin = close_gaps(lab, lin, gap_distance=10)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)


def test_close_gap_passes_children_and_paints_background_only():
    lab = _movie(7, 20, 40)
    lab[0:2, 5:9, 5:9] = 1  # A
    lab[3:5, 5:9, 9:13] = 2  # B, 4 px right of A, divides at frame 5
    lab[5:7, 3:7, 9:13] = 3
    lab[5:7, 8:12, 9:13] = 4
    lab[2, 5:9, 9] = 9  # one-frame track in the gap frame, under the moved mask
    lin = _lineage([[1, 0, 1, 0], [2, 3, 4, 0], [3, 5, 6, 2], [4, 5, 6, 2], [9, 2, 2, 0]])
    _assert_consistent(lab, lin)
    out, olin = close_gaps(lab, lin, gap_distance=6)
    assert _rows(olin) == {1: (0, 4, 0), 3: (5, 6, 1), 4: (5, 6, 1), 9: (2, 2, 0)}
    assert (out[2, 5:9, 9] == 9).all()  # painted on background only
    assert (out[2, 5:9, 7:9] == 1).all()
    assert (out[2, 5:9, 10] == 1).all()
    _assert_consistent(out, olin)


def test_close_gap_moved_mask_keeps_its_shape_for_odd_distances():
    """B is 3 px right of A: the half-way shift is 1.5 px; the mask painted in the gap frame
    should be A's mask moved as a whole (16 px, a 4x4 square), not torn apart."""
    lab = _movie(5, 20, 40)
    lab[0:2, 5:9, 5:9] = 1
    lab[3:5, 5:9, 8:12] = 2
    lin = _lineage([[1, 0, 1, 0], [2, 3, 4, 0]])
    out, olin = close_gaps(lab, lin, gap_distance=6)
    assert _rows(olin) == {1: (0, 4, 0)}
    ys, xs = np.nonzero(out[2] == 1)
    assert ys.size == 16, f"gap mask has {ys.size} px, columns {sorted(set(xs.tolist()))}"
    assert sorted(set(xs.tolist())) in ([6, 7, 8, 9], [7, 8, 9, 10])


def test_close_gap_picks_nearest_and_chains():
    lab = _movie(7, 30, 40)
    lab[0:2, 5:9, 5:9] = 1  # A, ends frame 1, centroid (6.5, 6.5)
    lab[3, 5:9, 9:13] = 2  # B: 4 px away, one frame
    lab[3, 12:16, 5:9] = 3  # C: 7 px away, one frame
    lab[5:7, 5:9, 11:15] = 4  # D: 2 px from B, 8.6 from C -> continues B, i.e. A
    lin = _lineage([[1, 0, 1, 0], [2, 3, 3, 0], [3, 3, 3, 0], [4, 5, 6, 0]])
    _assert_consistent(lab, lin)
    out, olin = close_gaps(lab, lin, gap_distance=8)
    assert _rows(olin) == {1: (0, 6, 0), 3: (3, 3, 0)}
    np.testing.assert_array_equal(out[lab == 2], 1)
    np.testing.assert_array_equal(out[lab == 4], 1)
    np.testing.assert_array_equal(out[lab == 3], 3)
    assert (out[2] == 1).sum() == 16 and (out[4] == 1).sum() == 16
    _assert_consistent(out, olin)


def test_close_gap_short_movie_is_unchanged():
    lab = _movie(2)
    lab[0, 2:4, 2:4] = 1
    lab[1, 2:4, 2:4] = 2
    lin = _lineage([[1, 0, 0, 0], [2, 1, 1, 0]])
    out, olin = close_gaps(lab, lin, gap_distance=5)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)


# --------------------------------------------------------------------------- finish_tracks


def _finish_movie():
    lab = _movie(7, 24, 40)
    lab[0:2, 4:12, 4:12] = 1  # parent
    lab[2:4, 4:10, 4:12] = 2  # big daughter, frames 2-3
    lab[2, 14:16, 4:6] = 3  # tiny one-frame daughter
    lab[5:7, 4:10, 8:16] = 4  # the big daughter again after a missed frame 4 (4 px away)
    lab[3, 18:20, 30:32] = 5  # one-frame noise
    lin = _lineage([[1, 0, 1, 0], [2, 2, 3, 1], [3, 2, 2, 1], [4, 5, 6, 0], [5, 3, 3, 0]])
    return lab, lin


def test_finish_tracks_combines_the_rules():
    lab, lin = _finish_movie()
    _assert_consistent(lab, lin)
    lab0, lin0 = lab.copy(), lin.copy()
    params = ClusterParams(min_daughter_size=10, gap_distance=5, drop_single=True)
    out, olin = finish_tracks(lab, lin, params)
    np.testing.assert_array_equal(lab, lab0)
    np.testing.assert_array_equal(lin, lin0)
    assert _rows(olin) == {1: (0, 6, 0)}
    np.testing.assert_array_equal(out[np.isin(lab, [1, 2, 4])], 1)
    assert not np.isin(out, [2, 3, 4, 5]).any()
    assert (out[4] == 1).sum() == 48  # the gap frame got the moved mask
    _assert_consistent(out, olin)


def test_finish_tracks_each_rule_alone():
    lab, lin = _finish_movie()
    # default params: nothing changes
    out, olin = finish_tracks(lab, lin, ClusterParams())
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)
    # division check only
    out, olin = finish_tracks(lab, lin, ClusterParams(min_daughter_size=10))
    assert _rows(olin) == {1: (0, 3, 0), 3: (2, 2, 0), 4: (5, 6, 0), 5: (3, 3, 0)}
    _assert_consistent(out, olin)
    # one-frame rule only (min_daughter_size=0): daughter 3 lasts one frame -> repaired
    out, olin = finish_tracks(lab, lin, ClusterParams(min_daughter_size=0))
    assert _rows(olin) == {1: (0, 3, 0), 3: (2, 2, 0), 4: (5, 6, 0), 5: (3, 3, 0)}
    # gap closing only: 2 has a parent but no children, 4 starts without parent -> joined
    out, olin = finish_tracks(lab, lin, ClusterParams(gap_distance=5))
    assert _rows(olin) == {1: (0, 1, 0), 2: (2, 6, 1), 3: (2, 2, 1), 5: (3, 3, 0)}
    _assert_consistent(out, olin)
    # drop only: 3 is a daughter and is kept, 5 is dropped
    out, olin = finish_tracks(lab, lin, ClusterParams(drop_single=True))
    assert set(_rows(olin)) == {1, 2, 3, 4}
    _assert_consistent(out, olin)


def test_finish_tracks_empty_movie():
    lab = np.zeros((0, 8, 8), np.uint32)
    lin = np.zeros((0, 4), np.int64)
    params = ClusterParams(min_daughter_size=10, gap_distance=5, drop_single=True)
    out, olin = finish_tracks(lab, lin, params)
    assert out.shape == (0, 8, 8) and olin.shape == (0, 4)
    out, olin = finish_tracks(np.zeros((3, 8, 8), np.uint32), lin, params)
    assert out.max() == 0 and olin.shape == (0, 4)


# --------------------------------------------------------------------------- clustering


def test_params_validation_of_new_options():
    with pytest.raises(ValueError, match="acceptance"):
        ClusterParams(acceptance="other")
    with pytest.raises(ValueError, match="fragment_size"):
        ClusterParams(fragment_size=-1)
    with pytest.raises(ValueError):
        ClusterParams(gap_distance=-0.5)
    with pytest.raises(ValueError):
        ClusterParams(min_daughter_size=-2)
    with pytest.raises(ValueError, match="max_gap"):
        ClusterParams(max_gap=0)
    for bad in (-1, 2):
        with pytest.raises(ValueError, match="min_gap"):
            ClusterParams(min_gap=bad)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="min_daughter_ratio"):
            ClusterParams(min_daughter_ratio=bad)
    with pytest.raises(ValueError, match="small_track_fraction"):
        ClusterParams(small_track_fraction=-0.1)
    with pytest.raises(ValueError, match="small_track_fraction"):
        ClusterParams(small_track_fraction=1.0)
    ClusterParams(acceptance="gain", fragment_size=0, min_daughter_size=-1)
    assert ClusterParams().acceptance == "proposal"


def _rim_outputs():
    """Cell A (100 px, seediness 1) points at (10, 10) with a 3 px kernel. A rim (20 px,
    seediness 0.9) right of it points at (10, 15) with an 8 px kernel: the rim's kernel
    covers all of A (distance 5 < 8, but A keeps its better score) plus the rim itself."""
    h, w = 24, 30
    seed = np.zeros((h, w), np.float32)
    cy = np.zeros((h, w))
    cx = np.zeros((h, w))
    seed[5:15, 5:15] = 1.0
    cy[5:15, 5:15], cx[5:15, 5:15] = 10, 10
    seed[5:15, 15:17] = 0.9
    cy[5:15, 15:17], cx[5:15, 15:17] = 10, 15
    yy, xx = np.mgrid[0:h, 0:w]
    off = np.stack([cy - yy, cx - xx]).astype(np.float32)
    bw = np.full((2, h, w), ideal_bandwidth(G, 3.0), np.float32)
    bw[:, :, 14:] = ideal_bandwidth(G, 8.0)  # smoothed at (y, 15) -> the 8 px kernel
    bw[:, :, 12:14] = ideal_bandwidth(G, 3.0)
    return seed, bw, off


@pytest.mark.parametrize(("acceptance", "n_expected"), [("gain", 2), ("proposal", 1)])
def test_acceptance_rule_on_a_rim_next_to_an_accepted_cell(acceptance, n_expected):
    seed, bw, off = _rim_outputs()
    params = ClusterParams(min_size=10, acceptance=acceptance)
    labels = cluster(seed, bw, off, params)
    assert labels.max() == n_expected
    a = labels[10, 10]
    assert a > 0 and (labels[5:15, 5:15] == a).all()
    rim = labels[5:15, 15:17]
    if acceptance == "gain":
        assert (rim > 0).all() and (rim != a).all() and np.unique(rim).size == 1
    else:
        assert (rim == 0).all()
    # with a min_size above the rim, gain rejects it too
    params = ClusterParams(min_size=21, acceptance=acceptance)
    assert cluster(seed, bw, off, params).max() == 1


def _fragment_outputs():
    """A (100 px, seed 1.0), fragment F (12 px, seed 0.95) touching A, C (60 px, seed 0.9);
    each points at its own centre, 3 px kernels: created in the order A, F, C."""
    h, w = 30, 40
    seed = np.zeros((h, w), np.float32)
    cy = np.zeros((h, w))
    cx = np.zeros((h, w))
    gt = np.zeros((h, w), np.int32)
    for k, (sl, s, c) in enumerate(
        [
            ((slice(5, 15), slice(5, 15)), 1.0, (10, 10)),
            ((slice(8, 12), slice(15, 18)), 0.95, (10, 16)),
            ((slice(20, 26), slice(25, 35)), 0.9, (23, 30)),
        ],
        start=1,
    ):
        seed[sl], cy[sl], cx[sl], gt[sl] = s, c[0], c[1], k
    yy, xx = np.mgrid[0:h, 0:w]
    off = np.stack([cy - yy, cx - xx]).astype(np.float32)
    bw = np.full((2, h, w), ideal_bandwidth(G, 3.0), np.float32)
    return gt, seed, bw, off


def test_cluster_fragment_size_merges_and_renumbers():
    gt, seed, bw, off = _fragment_outputs()
    labels = cluster(seed, bw, off, ClusterParams(min_size=1))
    np.testing.assert_array_equal(labels, gt)  # three instances, in creation order
    labels = cluster(seed, bw, off, ClusterParams(min_size=1, fragment_size=20))
    assert labels.dtype == np.int32
    assert set(np.unique(labels).tolist()) == {0, 1, 2}  # consecutive after the merge
    assert (labels[(gt == 1) | (gt == 2)] == 1).all()
    assert (labels[gt == 3] == 2).all()
    assert (labels[gt == 0] == 0).all()
    # fragment_size not above the fragment: nothing merged
    labels = cluster(seed, bw, off, ClusterParams(min_size=1, fragment_size=12))
    np.testing.assert_array_equal(labels, gt)


def test_cluster_fragment_size_keeps_isolated_small_cell():
    gt, seed, bw, off = _fragment_outputs()
    labels = cluster(seed, bw, off, ClusterParams(min_size=1, fragment_size=80))
    # C (60 px) is small but touches nothing: kept; F joins A
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    assert (labels[gt == 3] == 2).all()
    assert (labels[gt == 2] == 1).all()


def test_repair_divisions_keeps_a_division_in_the_last_frame():
    """Daughters born in the movie's last frame cannot last longer: not a reason to undo."""
    lab = np.zeros((3, 20, 30), dtype=np.uint32)
    lab[0:2, 4:12, 4:12] = 1
    lab[2, 4:12, 4:8] = 2
    lab[2, 4:12, 9:13] = 3
    lin = np.array([[1, 0, 1, 0], [2, 2, 2, 1], [3, 2, 2, 1]], dtype=np.int64)
    out, olin = repair_divisions(lab, lin, min_daughter_size=0)
    np.testing.assert_array_equal(out, lab)
    np.testing.assert_array_equal(olin, lin)


# ----------------------------------------------------------------- dim-cell rims (session 17)
def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _two_cells():
    """A bright cell (id 1, seediness 0.95) and a dim one (id 2, 0.6), each with a 2-px rim of
    seediness 0.45 that the clustering left out, and a blob of 0.9 touching no cell."""
    shape = (60, 90)
    labels = np.zeros(shape, np.uint32)
    seed = np.zeros(shape, np.float32)
    for i, (cx, value) in enumerate([(20, 0.95), (60, 0.6)], start=1):
        seed[_disc(shape, 30, cx, 14)] = 0.45
        seed[_disc(shape, 30, cx, 12)] = value
        labels[_disc(shape, 30, cx, 12)] = i
    seed[50:55, 80:85] = 0.9
    return labels, seed


def test_dim_rim_takes_the_edge_of_a_dim_cell_and_leaves_a_bright_one():
    labels, seed = _two_cells()
    rim = dim_rim(labels, seed, 0.65)  # limits: 0.62 for the bright cell, 0.39 for the dim one
    ring = _disc(labels.shape, 30, 60, 14) & ~_disc(labels.shape, 30, 60, 12)
    assert (rim[ring] == 2).all()
    assert not (rim == 1).any()  # the bright cell keeps its mask
    assert not rim[labels > 0].any() and not rim[50:55, 80:85].any()  # no blob, no new cell
    assert set(np.unique(rim)) == {0, 2}
    # the limit is a fraction of the cell's own seediness: at 0.8 the dim cell wants 0.48
    assert not dim_rim(labels, seed, 0.8).any()
    # uint8 seediness (what a run keeps) gives the same rim
    np.testing.assert_array_equal(dim_rim(labels, seediness_u8(seed), 0.65), rim)
    grown = add_dim_rims(labels, seed, 0.65)
    np.testing.assert_array_equal(grown, np.where(rim > 0, rim, labels))
    assert add_dim_rims(labels, seed, 0.0) is labels and add_dim_rims(labels, None, 0.65) is labels


def test_dim_rim_grows_a_mask_by_a_rim_where_the_seediness_does_not_fall_off():
    """An untrained model's flat seediness: masks grow by a quarter of their radius, not over
    the whole frame (which would leave no background)."""
    labels, _ = _two_cells()
    flat = np.full(labels.shape, 0.5, np.float32)
    grown = add_dim_rims(labels, flat, 0.65)
    dist = ndimage.distance_transform_edt(labels == 0)
    assert (grown > 0).sum() > (labels > 0).sum()
    assert dist[grown > 0].max() <= RIM_REACH * 12 + 1 and (grown == 0).any()


def test_a_piece_the_clean_up_removed_is_taken_back_by_its_dim_cell():
    labels, seed = _two_cells()
    piece = _disc(labels.shape, 30, 60, 12) & (np.mgrid[:60, :90][1] > 70)  # within reach
    labels[piece] = 3  # split off the dim cell, then removed by a rule (its track dropped)
    tracked = labels[None].copy()
    finished = np.where(tracked == 3, 0, tracked).astype(np.uint32)
    seeds = seediness_u8(seed)[None]
    want = add_dim_rims(finished[0], seeds[0], 0.65)
    assert (want[piece] == 2).all()
    # finish_tracks adds the rims after its rules when given the seediness
    params = ClusterParams(grow_dim=0.65)
    got, _ = finish_tracks(finished, np.array([[1, 0, 0, 0], [2, 0, 0, 0]]), params, seeds)
    np.testing.assert_array_equal(got[0], want)
    same, _ = finish_tracks(finished, np.array([[1, 0, 0, 0], [2, 0, 0, 0]]), params)
    np.testing.assert_array_equal(same, finished)  # no seediness: no rims


def test_grow_dim_must_be_a_fraction():
    with pytest.raises(ValueError, match="grow_dim"):
        ClusterParams(grow_dim=1.2)
