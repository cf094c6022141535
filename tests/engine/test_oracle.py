"""Oracle tests: ideal network outputs must be clustered and linked back into the ground truth.

The ideal outputs (``oracle.ideal_outputs``) are what a perfect model would predict; clustering
and linking them must reproduce masks and lineage exactly (up to track id renaming) and score
SEG = DET = TRA = 1 with the CTC metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from napari_embedtrack.engine.cluster import ClusterParams
from napari_embedtrack.engine.link import cluster_and_link, iter_cluster_and_link
from napari_embedtrack.engine.progress import Progress
from napari_embedtrack.io import ctc

from .oracle import assert_same_tracking, ideal_outputs, simplify_ground_truth

log = logging.getLogger(__name__)

G = 1.0 / 255.0
PARAMS = ClusterParams(min_size=1, grid_spacing=G)
SIM_GT = Path("/work/shared/data/ctc/Fluo-N2DH-SIM+/01_GT")


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def handmade_movie() -> tuple[np.ndarray, np.ndarray]:
    """6 frames, 80x100: moving cells, two touching cells, a division, an entering cell,
    a cell leaving, a three-generation lineage."""
    shape = (80, 100)
    n_t = 6
    lab = np.zeros((n_t, *shape), dtype=np.int32)
    for t in range(n_t):
        # 1 and 2 touch (squares sharing an edge), moving right together
        lab[t, 10:25, 10 + 2 * t : 25 + 2 * t] = 1
        lab[t, 10:25, 25 + 2 * t : 40 + 2 * t] = 2
        if t < 4:  # 3 leaves after frame 3
            lab[t][_disk(shape, 50, 20 + 3 * t, 7)] = 3
        if t < 2:  # 4 divides into 5 and 6 at frame 2
            lab[t][_disk(shape, 55, 70, 9)] = 4
        else:
            lab[t][_disk(shape, 47 - t, 70, 5)] = 5
            lab[t][_disk(shape, 63 + t, 70, 5)] = 6
        if t >= 3:  # 7 enters at frame 3 where nothing was
            lab[t][_disk(shape, 30, 85, 6)] = 7
    lab[5][lab[5] == 7] = 0  # 7 divides into 8 and 9 at frame 5
    lab[5][_disk(shape, 26, 85, 4)] = 8
    lab[5][_disk(shape, 35, 85, 4)] = 9
    lineage = np.array(
        [
            [1, 0, 5, 0],
            [2, 0, 5, 0],
            [3, 0, 3, 0],
            [4, 0, 1, 0],
            [5, 2, 5, 4],
            [6, 2, 5, 4],
            [7, 3, 4, 0],
            [8, 5, 5, 7],
            [9, 5, 5, 7],
        ],
        dtype=np.int64,
    )
    return lab, lineage


def _evaluate(tmp: Path, name: str, labels, lineage, gt_labels, gt_lineage) -> dict:
    """Write GT (TRA and SEG = full masks) and results, return CTC scores."""
    gt_dir = tmp / f"{name}_GT"
    res_dir = tmp / f"{name}_RES"
    ctc.write_ground_truth(
        gt_dir, gt_labels, gt_lineage, seg={t: f for t, f in enumerate(gt_labels)}
    )
    ctc.write_results(res_dir, labels, lineage)
    return ctc.evaluate(gt_dir, res_dir)


def _check_oracle(tmp_path, gt_labels, gt_lineage, name="seq"):
    outputs = ideal_outputs(gt_labels, gt_lineage, G)
    tracked, lineage = cluster_and_link(outputs, PARAMS)
    assert tracked.dtype == np.uint32 and tracked.shape == gt_labels.shape
    assert lineage.dtype == np.int64 and lineage.shape[1] == 4
    assert_same_tracking(tracked, lineage, gt_labels, gt_lineage)
    scores = _evaluate(tmp_path, name, tracked, lineage, gt_labels, gt_lineage)
    log.info("oracle %s: %s", name, {k: scores[k] for k in ("SEG", "DET", "TRA")})
    for key in ("SEG", "DET", "TRA"):
        assert scores[key] == pytest.approx(1.0), (key, scores)
    return tracked, lineage


def test_oracle_handmade(tmp_path):
    lab, lineage = handmade_movie()
    _check_oracle(tmp_path, lab, lineage)


def test_generator_variant_yields_progress():
    lab, lineage = handmade_movie()
    outputs = ideal_outputs(lab, lineage, G)
    gen = iter_cluster_and_link(outputs, PARAMS)
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            tracked, lin = stop.value
            break
    assert all(isinstance(p, Progress) for p in steps)
    assert [p.done for p in steps] == list(range(1, lab.shape[0] + 1))
    assert all(p.total == lab.shape[0] for p in steps)
    assert steps[0].info["n_cells"] == 4
    expected = cluster_and_link(outputs, PARAMS)
    np.testing.assert_array_equal(tracked, expected[0])
    np.testing.assert_array_equal(lin, expected[1])


def test_simplify_ground_truth_merges_single_children_and_tiny_masks():
    lab = np.zeros((4, 10, 10), dtype=np.int32)
    lab[0:2, 1:4, 1:4] = 1
    lab[2:4, 1:4, 1:4] = 2  # single child of 1
    lab[3, 8, 8] = 3  # one pixel
    lin = np.array([[1, 0, 1, 0], [2, 2, 3, 1], [3, 3, 3, 0]])
    s_lab, s_lin = simplify_ground_truth(lab, lin)
    assert set(np.unique(s_lab)) == {0, 1}
    np.testing.assert_array_equal(s_lin, [[1, 0, 3, 0]])


def _synthetic():
    return pytest.importorskip("napari_embedtrack.synthetic")


@pytest.mark.parametrize("seed", [0, 1])
def test_oracle_synthetic(tmp_path, seed):
    movie = _synthetic().make_movie(n_frames=10, shape=(128, 128), n_cells=6, seed=seed)
    gt_labels, gt_lineage = simplify_ground_truth(movie.labels, movie.lineage)
    _check_oracle(tmp_path, gt_labels, gt_lineage)


def test_oracle_synthetic_via_ctc_folders(tmp_path):
    synthetic = _synthetic()
    movie = synthetic.make_movie(n_frames=8, shape=(96, 96), n_cells=5, seed=3)
    synthetic.write_ctc(movie, tmp_path / "data", seq="01")
    gt = ctc.read_ground_truth(tmp_path / "data" / "01_GT")
    gt_labels, gt_lineage = simplify_ground_truth(gt.tra, gt.lineage)
    tracked, lineage = cluster_and_link(ideal_outputs(gt_labels, gt_lineage, G), PARAMS)
    assert_same_tracking(tracked, lineage, gt_labels, gt_lineage)
    ctc.write_results(tmp_path / "data" / "01_RES", tracked, lineage)
    scores = ctc.evaluate(tmp_path / "data" / "01_GT", tmp_path / "data" / "01_RES")
    log.info("oracle synthetic CTC folders: %s", str(scores))
    # the original GT folder: only what simplify_ground_truth removed can cost anything
    if np.array_equal(gt_labels, gt.tra) and np.array_equal(gt_lineage, gt.lineage):
        for key in ("SEG", "DET", "TRA"):
            assert scores[key] == pytest.approx(1.0), (key, scores)


def _sim_gt(start: int, stop: int):
    if not (SIM_GT / "TRA" / "man_track.txt").is_file():
        pytest.skip(f"{SIM_GT} not available")
    return ctc.read_ground_truth(SIM_GT).select_frames(start, stop)


def _check_sim(tmp_path, start, stop):
    gt = _sim_gt(start, stop)
    gt_labels, gt_lineage = simplify_ground_truth(gt.tra, gt.lineage)
    tracked, lineage = _check_oracle(tmp_path, gt_labels, gt_lineage, name="sim")
    raw = _evaluate(tmp_path, "raw", tracked, lineage, gt.tra, gt.lineage)
    log.info(
        "oracle SIM+ frames %d-%d, unsimplified GT: %s",
        start,
        stop - 1,
        {k: raw[k] for k in ("SEG", "DET", "TRA")},
    )
    assert raw["SEG"] > 0.99 and raw["DET"] > 0.99 and raw["TRA"] > 0.99


def test_oracle_sim_subset(tmp_path):
    # frames 17-23 hold 7 divisions and a single-child link (28 -> 53)
    _check_sim(tmp_path, 17, 24)


@pytest.mark.slow
def test_oracle_sim_full(tmp_path):
    _check_sim(tmp_path, 0, 65)
