"""Unit tests of engine.cluster on hand-made outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_embedtrack.engine.cluster import ClusterParams, cluster, smooth_bandwidth

from .oracle import ideal_bandwidth, ideal_outputs

G = 1.0 / 255.0


def _outputs_from_centres(centres: np.ndarray, seed: np.ndarray, radius: float = 3.0):
    """Outputs where pixel p points at centres[:, p] (2, Y, X), with kernel radius in px."""
    h, w = seed.shape
    yy, xx = np.mgrid[0:h, 0:w]
    off = np.stack([centres[0] - yy, centres[1] - xx]).astype(np.float32)
    bw = np.full((2, h, w), ideal_bandwidth(G, radius), dtype=np.float32)
    return seed.astype(np.float32), bw, off


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    fg = (a > 0) | (b > 0)
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    return (
        bool((pairs > 0).all())
        and np.unique(pairs[0]).size == pairs.shape[1]
        and np.unique(pairs[1]).size == pairs.shape[1]
    )


def test_params_validation():
    with pytest.raises(ValueError, match="score_threshold"):
        ClusterParams(score_threshold=1.0)
    with pytest.raises(ValueError, match="grid_spacing"):
        ClusterParams(grid_spacing=0)


def test_smoothing_is_zero_bias_mean():
    bw = np.zeros((2, 5, 5))
    bw[0, 2, 2] = 9.0
    bw[1] = 0.3
    s = smooth_bandwidth(bw)
    np.testing.assert_allclose(s[0, 1:4, 1:4], 1.0)
    assert s[0, 0, 0] == 0.0
    np.testing.assert_allclose(s[1], 0.3)
    rng = np.random.default_rng(1)
    bw = rng.random((2, 7, 9))
    ys, xs = np.nonzero(np.ones((7, 9)))
    np.testing.assert_allclose(smooth_bandwidth(bw, ys, xs), smooth_bandwidth(bw)[:, ys, xs])


def test_touching_cells_are_separated():
    gt = np.zeros((32, 40), dtype=np.int32)
    gt[5:25, 4:20] = 1
    gt[5:25, 20:36] = 2  # touches cell 1 along a full edge
    gt[26:30, 2:8] = 3  # small separate cell (24 px)
    out = ideal_outputs(gt[None], np.zeros((0, 4)), G)[0]
    labels = cluster(out.seediness, out.bandwidth, out.offsets, ClusterParams(min_size=1))
    assert labels.dtype == np.int32
    assert labels.max() == 3
    assert _same_partition(labels, gt)


def test_boundary_pixel_goes_to_better_centre():
    h, w = 21, 30
    seed = np.zeros((h, w))
    cy = np.zeros((h, w))
    cx = np.zeros((h, w))
    seed[5:16, 3:12] = 1.0  # cell A, centre (10, 8), highest seediness -> clustered first
    cy[5:16, 3:12], cx[5:16, 3:12] = 10, 8
    seed[5:16, 12:21] = 0.9  # cell B, centre (10, 13)
    cy[5:16, 12:21], cx[5:16, 12:21] = 10, 13
    # three ambiguous pixels of B's region (lower seediness, as on real boundaries)
    cy[3 + 5, 12], cx[3 + 5, 12] = 10, 10.4  # 2.4 from A, 2.6 from B -> stays with A
    cy[4 + 5, 12], cx[4 + 5, 12] = 10, 11.3  # 3.3 from A (out), 1.7 from B -> B
    cy[6 + 5, 12], cx[6 + 5, 12] = 10, 10.7  # 2.7 from A, 2.3 from B -> moves to B
    seed[8:12, 12] = 0.8
    seed_, bw, off = _outputs_from_centres(np.stack([cy, cx]), seed, radius=3.0)
    labels = cluster(seed_, bw, off, ClusterParams(min_size=1))
    a, b = labels[10, 8], labels[10, 13]
    assert a != b and a > 0 and b > 0
    assert labels[8, 12] == a
    assert labels[9, 12] == b
    assert labels[11, 12] == b


def test_min_size_filters_small_cells():
    gt = np.zeros((40, 40), dtype=np.int32)
    gt[2:12, 2:12] = 1  # 100 px
    gt[20:24, 20:24] = 2  # 16 px
    out = ideal_outputs(gt[None], np.zeros((0, 4)), G)[0]
    args = (out.seediness, out.bandwidth, out.offsets)
    assert cluster(*args, ClusterParams(min_size=16)).max() == 2
    labels = cluster(*args, ClusterParams(min_size=17))
    assert labels.max() == 1
    assert _same_partition(labels, np.where(gt == 1, 1, 0))


def test_cell_of_min_count_pixels_is_not_found():
    gt = np.zeros((20, 20), dtype=np.int32)
    gt[5, 5:10] = 1  # 5 px: never more than min_count=5 in a 3x3 neighbourhood
    gt[12, 5:11] = 2  # 6 px: found
    out = ideal_outputs(gt[None], np.zeros((0, 4)), G)[0]
    labels = cluster(out.seediness, out.bandwidth, out.offsets, ClusterParams(min_size=1))
    assert labels.max() == 1
    assert (labels[12, 5:11] == 1).all()


@pytest.mark.parametrize("seed_value", [0.0, 0.5, 0.2])
def test_empty_or_constant_outputs_give_no_cells(seed_value):
    shape = (33, 47)
    labels = cluster(
        np.full(shape, seed_value, np.float32),
        np.full((2, *shape), 0.5, np.float32),
        np.zeros((2, *shape), np.float32),
    )
    assert labels.shape == shape and labels.dtype == np.int32
    assert labels.max() == 0


@pytest.mark.parametrize("bw_value", [0.0, 0.5, 1.0])
def test_all_foreground_zero_offsets_does_not_crash(bw_value):
    shape = (40, 50)
    labels = cluster(
        np.ones(shape, np.float32),
        np.full((2, *shape), bw_value, np.float32),
        np.zeros((2, *shape), np.float32),
        ClusterParams(min_size=1),
    )
    assert labels.max() >= 1


def test_nan_and_far_offsets_do_not_crash():
    rng = np.random.default_rng(0)
    shape = (30, 30)
    seed = rng.random(shape).astype(np.float32)
    off = rng.normal(0, 50, (2, *shape)).astype(np.float32)
    off[0, 3, 3] = np.nan
    labels = cluster(seed, rng.random((2, *shape)).astype(np.float32), off)
    assert labels.shape == shape


@pytest.mark.parametrize(("centre_y", "found"), [(-0.4, True), (-0.6, False)])
def test_centre_at_the_frame_border(centre_y, found):
    # shifted positions are histogrammed only if they round to a pixel of the frame
    gt = np.zeros((20, 20), dtype=np.int32)
    gt[0:6, 5:15] = 1
    seed, bw, off = _outputs_from_centres(
        np.stack([np.full(gt.shape, centre_y), np.full(gt.shape, 10.0)]), gt > 0, radius=2.0
    )
    labels = cluster(seed, bw, off, ClusterParams(min_size=1))
    if found:
        assert _same_partition(labels, gt)
    else:
        assert labels.max() == 0


def test_window_is_exact_and_anisotropic_bandwidth():
    # pixels spread along x around one centre: a wide x kernel keeps them together
    h, w = 20, 40
    seed = np.zeros((h, w))
    seed[8:12, 5:35] = 1
    _yy, xx = np.mgrid[0:h, 0:w]
    centres = np.stack([np.full((h, w), 10.0), 20 + (xx - 20) * 0.3])  # e_x in [15.5, 24.2]
    seed_, _, off = _outputs_from_centres(centres, seed)
    bw = np.empty((2, h, w), np.float32)
    bw[0] = ideal_bandwidth(G, 1.5)
    bw[1] = ideal_bandwidth(G, 6.0)
    labels = cluster(seed_, bw, off, ClusterParams(min_size=1))
    assert labels.max() == 1 and (labels[seed > 0] == 1).all()
    # a window smaller than the kernel radius cuts the cell into pieces
    labels = cluster(seed_, bw, off, ClusterParams(min_size=1, window=0.3))
    assert labels.max() > 1
    # the radius formula the window uses
    s = math.exp(-10 * ideal_bandwidth(G, 6.0))
    assert math.isclose(math.sqrt(s * math.log(2)) / G, 6.0, rel_tol=1e-6)


def test_instance_mostly_stealing_pixels_is_rejected():
    # a weaker centre whose kernel would mostly take pixels already in another cell
    h, w = 30, 30
    seed = np.zeros((h, w))
    seed[5:25, 5:25] = 1
    cy = np.full((h, w), 15.0)
    cx = np.full((h, w), 15.0)
    cx[5:22, 5:8] = 17.8  # 51 px: score 0.55 for centre 15 (radius 3), 0.80 for 19.5
    cx[14:17, 19:22] = 19.5  # 9 px: out of reach of centre 15
    seed[14:17, 19:22] = 0.8
    seed_, bw, off = _outputs_from_centres(np.stack([cy, cx]), seed)
    labels = cluster(seed_, bw, off, ClusterParams(min_size=1))
    assert labels.max() == 1
    assert (labels[5:22, 5:8] == 1).all()
    assert (labels[14:17, 19:22] == 0).all()


def test_grow_reaches_the_dim_rim_of_each_cell_only():
    # two touching cells whose cores are bright (seediness 0.9) and rims dim (0.3), and a dim
    # blob (0.3) that touches no cell
    gt = np.zeros((40, 60), dtype=np.int32)
    gt[5:35, 4:30] = 1
    gt[5:35, 30:56] = 2
    out = ideal_outputs(gt[None], np.zeros((0, 4)), G)[0]
    seed = np.zeros(gt.shape, dtype=np.float32)
    seed[gt > 0] = 0.3
    seed[10:30, 9:25] = 0.9  # core of cell 1
    seed[10:30, 35:51] = 0.9  # core of cell 2
    seed[37:40, 0:6] = 0.3  # dim blob, not connected to a cell
    plain = cluster(seed, out.bandwidth, out.offsets, ClusterParams(min_size=1))
    assert (plain > 0).sum() == 2 * 20 * 16  # only the cores
    grown = cluster(seed, out.bandwidth, out.offsets, ClusterParams(min_size=1, grow_threshold=0.2))
    assert _same_partition(grown, gt)  # each cell whole, split where the cells meet
    assert not grown[37:40, 0:6].any()  # the blob stays background
    # the cores keep their instances
    assert np.array_equal(grown[plain > 0], plain[plain > 0])
    higher = cluster(
        seed, out.bandwidth, out.offsets, ClusterParams(min_size=1, grow_threshold=0.35)
    )
    assert np.array_equal(higher, plain)  # the rim is not above 0.35


def test_grow_threshold_must_be_below_the_seediness_threshold():
    with pytest.raises(ValueError, match="grow_threshold"):
        ClusterParams(seed_threshold=0.4, grow_threshold=0.4)
    assert ClusterParams(seed_threshold=0.4, grow_threshold=0.2).grow_threshold == 0.2
