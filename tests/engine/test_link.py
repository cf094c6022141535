"""Unit tests of engine.link on hand-made label movies."""

from __future__ import annotations

import numpy as np
import pytest

from napari_embedtrack.engine.link import Linker, link_movie, vote

SHAPE = (40, 60)


def _offsets_to(labels: np.ndarray, targets: dict[int, tuple[float, float]]) -> np.ndarray:
    """Tracking offsets sending every pixel of instance k to targets[k] (y, x)."""
    yy, xx = np.mgrid[0 : labels.shape[0], 0 : labels.shape[1]]
    off = np.zeros((2, *labels.shape), dtype=np.float32)
    for k, (ty, tx) in targets.items():
        m = labels == k
        off[0][m] = ty - yy[m]
        off[1][m] = tx - xx[m]
    return off


def _frame(*boxes: tuple[int, int, int, int, int]) -> np.ndarray:
    f = np.zeros(SHAPE, dtype=np.int32)
    for lab, y0, y1, x0, x1 in boxes:
        f[y0:y1, x0:x1] = lab
    return f


def _track_of(tracked: np.ndarray, y: int, x: int) -> int:
    return int(tracked[y, x])


def test_continuation_keeps_id_and_first_frame_ignores_offsets():
    f0 = _frame((7, 5, 15, 5, 15))
    f1 = _frame((3, 6, 16, 8, 18))  # moved; different instance label
    linker = Linker()
    t0 = linker.add(f0, np.full((2, *SHAPE), 100.0))
    t1 = linker.add(f1, _offsets_to(f1, {3: (10, 10)}))
    assert t0.dtype == np.uint32 and t1.dtype == np.uint32
    assert _track_of(t0, 10, 10) == _track_of(t1, 10, 12) == 1
    np.testing.assert_array_equal(linker.lineage, [[1, 0, 1, 0]])
    assert linker.n_frames == 2


def test_division_creates_two_daughters_with_parent():
    f0 = _frame((1, 10, 20, 10, 20))
    f1 = _frame((1, 5, 14, 10, 20), (2, 16, 25, 10, 20))
    tracked, lineage = link_movie(
        np.stack([f0, f1]),
        np.stack([np.zeros((2, *SHAPE)), _offsets_to(f1, {1: (15, 15), 2: (15, 15)})]),
    )
    assert _track_of(tracked[0], 15, 15) == 1
    a, b = _track_of(tracked[1], 8, 15), _track_of(tracked[1], 20, 15)
    assert {a, b} == {2, 3}
    np.testing.assert_array_equal(lineage, [[1, 0, 0, 0], [2, 1, 1, 1], [3, 1, 1, 1]])


def test_three_way_split_keeps_two_best_as_daughters():
    f0 = _frame((1, 5, 35, 20, 40))
    f1 = _frame((1, 5, 12, 20, 40), (2, 15, 22, 20, 40), (3, 25, 32, 20, 40))
    # instance 1: all pixels on the parent; 2: 70 %; 3: 100 % -> daughters 1 and 3, 2 new
    off = _offsets_to(f1, {1: (20, 30), 2: (20, 30), 3: (20, 30)})
    off[:, 15:17, 20:40] = 0.0  # rows 15-16 of instance 2 stay put -> land on the parent too
    off[:, 17:19, 20:40] = np.array([-18.0, 0.0])[:, None, None]  # -> row 0: background
    tracked, lineage = link_movie(np.stack([f0, f1]), np.stack([np.zeros_like(off), off]))
    d1, new2, d3 = (_track_of(tracked[1], y, 30) for y in (8, 18, 28))
    rows = {int(r[0]): r.tolist() for r in lineage}
    assert rows[d1][3] == 1 and rows[d3][3] == 1
    assert rows[new2][3] == 0 and rows[new2][1] == 1
    assert rows[1] == [1, 0, 0, 0]


def test_pointing_to_background_starts_new_track():
    f0 = _frame((1, 5, 15, 5, 15))
    f1 = _frame((1, 5, 15, 5, 15), (2, 20, 30, 40, 50))
    off = _offsets_to(f1, {1: (10, 10), 2: (25, 45)})  # 2 points to background at t-1
    tracked, lineage = link_movie(np.stack([f0, f1]), np.stack([np.zeros_like(off), off]))
    assert _track_of(tracked[1], 10, 10) == 1
    assert _track_of(tracked[1], 25, 45) == 2
    np.testing.assert_array_equal(lineage, [[1, 0, 1, 0], [2, 1, 1, 0]])


def test_majority_background_beats_minority_cell():
    f0 = _frame((1, 0, 10, 0, 10))
    f1 = _frame((1, 0, 10, 5, 15))  # zero offsets: 50 px on cell 1, 50 on background
    f2 = _frame((1, 0, 10, 6, 16))  # zero offsets: 40 px on cell 1, 60 on background
    zeros = np.zeros((2, *SHAPE))
    _ids, pred, votes, sizes = vote(f1, zeros, f0)
    assert pred.tolist() == [1] and votes.tolist() == [50] and sizes.tolist() == [100]
    _ids, pred, votes, sizes = vote(f2, zeros, f0)
    assert pred.tolist() == [0] and votes.tolist() == [60]


def test_disappearing_track_gets_new_id_on_return():
    f = _frame((1, 5, 15, 5, 15))
    empty = np.zeros(SHAPE, dtype=np.int32)
    off = _offsets_to(f, {1: (10, 10)})
    movie = np.stack([f, empty, f])
    tracked, lineage = link_movie(movie, np.stack([off, off, off]))
    assert _track_of(tracked[0], 10, 10) == 1
    assert _track_of(tracked[2], 10, 10) == 2
    np.testing.assert_array_equal(lineage, [[1, 0, 0, 0], [2, 2, 2, 0]])


def test_none_offsets_start_new_tracks_and_shape_checks():
    f = _frame((1, 5, 15, 5, 15))
    linker = Linker()
    linker.add(f)
    assert _track_of(linker.add(f, None), 10, 10) == 2
    with pytest.raises(ValueError, match="shape"):
        linker.add(np.zeros((5, 5), np.int32), None)
    with pytest.raises(ValueError, match="track_offsets"):
        linker.add(f, np.zeros((2, 5, 5)))
    with pytest.raises(ValueError, match="integer"):
        linker.add(f.astype(float))


def test_empty_frames_and_large_label_values():
    big = _frame((70000, 5, 15, 5, 15))
    empty = np.zeros(SHAPE, dtype=np.int64)
    off = _offsets_to(big, {70000: (10, 10)})
    tracked, lineage = link_movie(
        np.stack([empty, big.astype(np.int64), big.astype(np.int64)]),
        np.stack([off, off, off]),
    )
    assert tracked[0].max() == 0
    np.testing.assert_array_equal(lineage, [[1, 1, 2, 0]])
    assert Linker().lineage.shape == (0, 4)


def test_offsets_outside_frame_are_clipped():
    f0 = _frame((1, 0, 10, 0, 10))
    off = np.full((2, *SHAPE), -1000.0)  # clipped to pixel (0, 0), which is on cell 1
    _tracked, lineage = link_movie(np.stack([f0, f0]), np.stack([off, off]))
    np.testing.assert_array_equal(lineage, [[1, 0, 1, 0]])


def test_nested_divisions_and_continuations():
    # t0: A; t1: A divides into B, C; t2: B continues, C divides into D, E
    f0 = _frame((1, 10, 20, 10, 20))
    f1 = _frame((1, 5, 12, 10, 20), (2, 20, 27, 10, 20))
    f2 = _frame((5, 5, 12, 12, 22), (6, 18, 22, 10, 20), (7, 25, 30, 10, 20))
    o1 = _offsets_to(f1, {1: (15, 15), 2: (15, 15)})
    o2 = _offsets_to(f2, {5: (8, 15), 6: (23, 15), 7: (23, 15)})
    tracked, lineage = link_movie(np.stack([f0, f1, f2]), np.stack([o1 * 0, o1, o2]))
    b, c = _track_of(tracked[1], 8, 15), _track_of(tracked[1], 23, 15)
    assert _track_of(tracked[2], 8, 15) == b
    d, e = _track_of(tracked[2], 20, 15), _track_of(tracked[2], 27, 15)
    rows = {int(r[0]): r.tolist() for r in lineage}
    assert rows[b] == [b, 1, 2, 1]
    assert rows[c] == [c, 1, 1, 1]
    assert rows[d] == [d, 2, 2, c] and rows[e] == [e, 2, 2, c]
    assert len(rows) == 5
