"""Tests of engine.metrics: the in-memory SEG equals the official one (py-ctcmetrics)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_embedtrack.engine.metrics import seg_ious, seg_score
from napari_embedtrack.io import ctc
from napari_embedtrack.synthetic import make_movie, write_ctc


def _perturb(labels: np.ndarray) -> np.ndarray:
    """Eroded masks everywhere, one cell dropped in frame 1, one pair merged in frame 2."""
    out = np.zeros_like(labels)
    for t, frame in enumerate(labels):
        for lab in np.unique(frame)[1:]:
            m = ndimage.binary_erosion(frame == lab, iterations=1 + (lab % 2))
            out[t][m] = lab
    ids1 = np.unique(out[1])[1:]
    out[1][out[1] == ids1[0]] = 0  # dropped
    ids2 = np.unique(out[2])[1:]
    a, b = ids2[0], ids2[1]
    # merged: the pair and the pixels between them become one label
    merged = ndimage.binary_closing((labels[2] == a) | (labels[2] == b), iterations=3)
    out[2][merged & ((out[2] == 0) | (out[2] == b))] = a
    out[2][out[2] == b] = a
    return out


def test_seg_ious_by_hand():
    ref = np.zeros((10, 10), int)
    ref[0:4, 0:4] = 1  # 16 px
    ref[6:10, 6:10] = 2  # 16 px
    ref[0:2, 8:10] = 3  # 4 px, not found
    pred = np.zeros((10, 10), int)
    pred[0:4, 0:5] = 5  # covers 1 fully, 20 px -> IoU 16/20
    pred[6:10, 6:8] = 9  # covers exactly half of 2 -> not a match (needs > half)
    np.testing.assert_allclose(seg_ious(ref, pred), [0.8, 0.0, 0.0])
    pred[6:10, 8] = 9  # now 12/16 covered, 12 px predicted -> IoU 12/16
    np.testing.assert_allclose(seg_ious(ref, pred), [0.8, 0.75, 0.0])
    assert seg_score([ref, ref], [pred, ref]) == pytest.approx((0.8 + 0.75 + 3) / 6)
    assert seg_ious(ref, np.zeros_like(ref)).tolist() == [0.0, 0.0, 0.0]
    assert seg_ious(np.zeros_like(ref), pred).size == 0
    assert seg_score([], []) == 0.0
    assert seg_score([np.zeros((4, 4), int)], [pred[:4, :4]]) == 0.0


def test_seg_score_equals_ctc_evaluate(tmp_path):
    movie = make_movie(n_frames=4, shape=(64, 64), n_cells=5, seed=2, radius=(5.0, 8.0))
    _, gt_dir = write_ctc(movie, tmp_path, seq="01")
    pred = _perturb(movie.labels.astype(np.int32))
    written, _ = ctc.write_results(tmp_path / "01_RES", pred)
    official = ctc.evaluate(gt_dir, tmp_path / "01_RES", metrics=("SEG",))["SEG"]
    mine = seg_score(list(movie.labels), list(written))
    assert 0.3 < official < 0.9  # the perturbations matter
    assert mine == pytest.approx(official, abs=1e-9)


def test_seg_score_sparse_seg_frames(tmp_path):
    """Only frames with SEG masks count (as in GOWT1 / MSC)."""
    movie = make_movie(n_frames=4, shape=(64, 64), n_cells=4, seed=5, radius=(5.0, 8.0))
    gt_dir = tmp_path / "01_GT"
    frames = [1, 2]
    ctc.write_ground_truth(
        gt_dir, movie.labels, movie.lineage, seg={t: movie.labels[t] for t in frames}
    )
    pred = _perturb(movie.labels.astype(np.int32))
    written, _ = ctc.write_results(tmp_path / "01_RES", pred)
    official = ctc.evaluate(gt_dir, tmp_path / "01_RES", metrics=("SEG",))["SEG"]
    mine = seg_score([movie.labels[t] for t in frames], [written[t] for t in frames])
    assert mine == pytest.approx(official, abs=1e-9)
