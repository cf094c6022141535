"""Tests of engine.data: medoids, labels from sparse ground truth, crops, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_embedtrack.engine import data as D
from napari_embedtrack.synthetic import make_movie


# --------------------------------------------------------------------------- helpers
def _brute_medoid_cost(pts: np.ndarray) -> np.ndarray:
    p = pts.astype(np.float64)
    return np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)).sum(1)


def _disk(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _c_shape(size: int = 41) -> np.ndarray:
    """A thick ring open to the right: its centroid lies in the hole, outside the shape."""
    yy, xx = np.mgrid[0:size, 0:size]
    c = size // 2
    r = np.hypot(yy - c, xx - c)
    return (r >= 8) & (r <= 18) & ~((xx > c) & (np.abs(yy - c) < 6))


def _seq_from_movie(movie, **kw) -> D.TrainingSequence:
    return D.sequence_from_arrays("synthetic", movie.image, movie.labels, movie.lineage, **kw)


@pytest.fixture(scope="module")
def movie():
    return make_movie(n_frames=6, shape=(64, 64), n_cells=4, seed=3, radius=(5.0, 8.0))


# --------------------------------------------------------------------------- medoids
def test_medoid_equals_brute_force_on_small_sets():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 65))
        pts = rng.integers(0, 30, (n, 2))
        m = D.medoid(pts)
        assert any((pts == m).all(1)), "the medoid is one of the points"
        cost = _brute_medoid_cost(pts)
        mine = np.sqrt(((pts - m) ** 2).sum(1)).sum()
        assert mine == pytest.approx(cost.min(), rel=1e-5)


def test_medoid_of_c_shape_is_inside_and_not_the_centroid():
    mask = _c_shape()
    pts = np.argwhere(mask)
    m = D.medoid(pts)
    y, x = (int(v) for v in m)
    assert mask[y, x]
    centroid = pts.mean(0)
    cy, cx = np.round(centroid).astype(int)
    assert not mask[cy, cx]
    assert np.hypot(*(m - centroid)) > 5
    cost = _brute_medoid_cost(pts)
    mine = np.sqrt(((pts - m) ** 2).sum(1)).sum()
    assert mine == pytest.approx(cost.min(), rel=1e-4)


def test_medoid_of_large_cell_is_cheap():
    """A 20k-pixel cell: no n x n matrix (it would be 3 GB); result close to the optimum."""
    pts = np.argwhere(_disk((200, 200), 100, 100, 80))
    assert len(pts) > 20000
    m = D.medoid(pts)
    np.testing.assert_allclose(m, [100, 100], atol=1)


def test_instance_medoids():
    lab = np.zeros((50, 60), np.int32)
    lab[5:12, 5:20] = 2
    lab[20:45, 10:50][_c_shape(41)[:25, :40]] = 7
    med = D.instance_medoids(lab, np.array([2, 7]))
    assert med.dtype == np.float32 and med.shape == (2, 2)
    for (y, x), lab_id in zip(med, (2, 7), strict=True):
        assert lab[int(y), int(x)] == lab_id
    np.testing.assert_array_equal(med[0], [8, 12])
    assert D.instance_medoids(lab, np.array([], int)).shape == (0, 2)


# --------------------------------------------------------------------------- labels
def test_build_labels_sparse_seg():
    t_n, shape = 3, (40, 60)
    tra = np.zeros((t_n, *shape), np.uint16)
    cells = {1: (10, 10), 2: (25, 30), 3: (12, 48)}
    for t in range(t_n):
        for tid, (cy, cx) in cells.items():
            tra[t][_disk(shape, cy + t, cx, 2)] = tid  # small markers
    seg1 = np.zeros(shape, np.uint16)
    seg1[_disk(shape, 11, 10, 6)] = 5  # SEG labels are not track ids
    seg1[_disk(shape, 26, 30, 7)] = 9
    seg1[_disk(shape, 34, 8, 3)] = 4  # a mask without marker
    seg_lab, track_lab, ignore, seg_frames, full = D.build_labels(tra, {1: seg1}, ignore_radius=5.0)
    assert not full
    assert seg_frames == [1]
    assert seg_lab.dtype == np.int32 and track_lab.dtype == np.int32 and ignore.dtype == bool
    # SEG frame: masks relabelled with track ids; the unmatched mask gets a fresh id
    np.testing.assert_array_equal(seg_lab[1][seg1 == 5], 1)
    np.testing.assert_array_equal(seg_lab[1][seg1 == 9], 2)
    fresh = np.unique(seg_lab[1][seg1 == 4])
    assert fresh.size == 1 and fresh[0] > tra.max()
    assert not seg_lab[0].any() and not seg_lab[2].any()
    # track map: full masks where known, markers elsewhere
    np.testing.assert_array_equal(track_lab[1][seg1 == 5], 1)
    np.testing.assert_array_equal(track_lab[1][tra[1] == 3], 3)
    np.testing.assert_array_equal(track_lab[0], tra[0])
    # ignore: around marker 3 (no mask) in frame 1, around every marker in frames 0 and 2
    assert ignore[1][tra[1] == 3].all()
    assert ignore[1][_disk(shape, 13, 48, 6.5) & ~_disk(shape, 13, 48, 2)].any()
    assert not ignore[1][seg_lab[1] > 0].any()
    assert not ignore[1][0:3, 20:40].any()  # far from every marker
    for t in (0, 2):
        assert ignore[t][tra[t] > 0].all()
        assert ignore[t].sum() > 3 * np.pi * 5**2 * 0.8
    # the frame's ignore region stays within ignore_radius of the markers
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(tra[0] == 0)
    assert (dist[ignore[0]] <= 5.0).all()


def test_build_labels_fresh_ids_differ_between_frames():
    """Unmatched SEG masks in consecutive frames must not look like one tracked cell."""
    shape = (30, 30)
    tra = np.zeros((2, *shape), np.uint16)
    tra[:, 5:8, 5:8] = 1
    seg = {t: np.zeros(shape, np.uint16) for t in (0, 1)}
    for t in (0, 1):
        seg[t][4:10, 4:10] = 1
        seg[t][18:26, 18:26] = 2  # no marker in either frame
    seg_lab, _, _, _, _ = D.build_labels(tra, seg)
    a, b = np.unique(seg_lab[0][18:26, 18:26]), np.unique(seg_lab[1][18:26, 18:26])
    assert a.size == b.size == 1 and a[0] != b[0]


def test_build_labels_full_markers():
    movie = make_movie(n_frames=3, shape=(48, 48), n_cells=2, seed=0, radius=(5.0, 6.0))
    seg = {1: movie.labels[1]}
    seg_lab, track_lab, ignore, seg_frames, full = D.build_labels(movie.labels, seg)
    assert full
    assert seg_frames == [0, 1, 2]
    np.testing.assert_array_equal(seg_lab, movie.labels)
    np.testing.assert_array_equal(track_lab, movie.labels)
    assert not ignore.any()


def test_sequence_from_arrays_unannotated_frames(movie):
    labels = movie.labels.copy()
    labels[2] = 0  # frame 2 not annotated
    seq = D.sequence_from_arrays("s", movie.image, labels, movie.lineage)
    assert seq.seg_frames == [0, 1, 3, 4, 5]
    assert seq.ignore[2].all() and not seq.ignore[[0, 1, 3]].any()
    assert seq.image.dtype == np.float32 and seq.seg.dtype == np.int32
    assert seq.parents == {int(r[0]): int(r[3]) for r in movie.lineage if r[3] > 0}
    assert seq.parents, "the movie has a division"
    # explicit annotated frames: labels of other frames are dropped and ignored
    seq = D.sequence_from_arrays("s", movie.image, movie.labels, annotated_frames=[1, 4])
    assert seq.seg_frames == [1, 4]
    assert not seq.seg[[0, 2, 3, 5]].any() and seq.ignore[[0, 2, 3, 5]].all()
    np.testing.assert_array_equal(seq.seg[4], movie.labels[4])
    assert seq.parents == {} and seq.starts == {}
    # normalisation: 1st / 99.8th percentiles -> 0 / 1
    lo, hi = np.percentile(seq.image[0], (1, 99.8))
    assert lo == pytest.approx(0, abs=1e-5) and hi == pytest.approx(1, abs=1e-5)
    # a single frame
    one = D.sequence_from_arrays("one", movie.image[0], movie.labels[0])
    assert one.n_frames == 1
    with pytest.raises(ValueError, match="differ in shape"):
        D.sequence_from_arrays("bad", movie.image, movie.labels[:, :10])


def test_keep_frames(movie):
    seq = _seq_from_movie(movie)
    sub = D.keep_frames(seq, slice(2, 5))
    assert sub.n_frames == 3
    np.testing.assert_array_equal(sub.image, seq.image[2:5])
    np.testing.assert_array_equal(sub.seg, seq.seg[2:5])
    assert sub.seg_frames == [0, 1, 2]
    assert sub.starts == {k: v - 2 for k, v in seq.starts.items()}
    assert sub.name.endswith("[2:5]")
    with pytest.raises(ValueError, match="selects no frame"):
        D.keep_frames(seq, slice(10, 12))
    with pytest.raises(ValueError, match="contiguous"):
        D.keep_frames(seq, slice(0, 6, 2))


@pytest.mark.parametrize("n", [2, 3, 5, 10, 37])
@pytest.mark.parametrize("frac", [0.0, 0.1, 0.25, 0.5])
def test_split_frames_never_straddles(n, frac):
    train, val = D.split_frames(n, frac)
    assert train == sorted(train) and val == sorted(val)
    used = {f for t in train for f in (t - 1, t)}  # frames of the training pairs
    assert not used & set(val)
    assert all(t >= 1 for t in train)
    assert used | set(val) <= set(range(n))
    assert len(val) == round(n * frac)
    if val:
        assert val == list(range(n - len(val), n))  # the tail
        assert max(used, default=-1) < val[0]


# --------------------------------------------------------------------------- sampler
def test_pair_sampler_shapes_and_targets(movie):
    seq = _seq_from_movie(movie)
    cfg = D.AugmentConfig()  # full augmentation
    sampler = D.PairSampler([seq], [list(range(1, 6))], crop_size=48, augment=cfg, seed=0)
    assert len(sampler) == 5
    n_track_total = 0
    for _ in range(12):
        s = sampler.sample()
        assert s["image"].shape == (2, 48, 48) and s["image"].dtype == np.float32
        assert s["labels"].shape == (2, 48, 48) and s["labels"].dtype == np.int64
        assert s["ignore"].shape == (2, 48, 48) and s["ignore"].dtype == bool
        assert s["centres"].shape == (2, D.MAX_INSTANCES, 2)
        assert s["centres"].dtype == np.float32
        assert s["n_inst"].shape == (2,)
        assert s["track_labels"].shape == (48, 48) and s["track_labels"].dtype == np.int64
        assert s["track_centres"].shape == (D.MAX_INSTANCES, 2)
        assert np.isfinite(s["image"]).all()
        for k in range(2):
            n = int(s["n_inst"][k])
            ids = np.unique(s["labels"][k])
            np.testing.assert_array_equal(ids[ids > 0], np.arange(1, n + 1))
            assert not (s["ignore"][k] & (s["labels"][k] > 0)).any()
            for j in range(n):  # every centre is a pixel of its instance
                y, x = s["centres"][k, j].astype(int)
                assert s["labels"][k, y, x] == j + 1
            assert not s["centres"][k, n:].any()
        nt = int(s["n_track"])
        ids = np.unique(s["track_labels"])
        np.testing.assert_array_equal(ids[ids > 0], np.arange(1, nt + 1))
        # tracking targets are centres of cells at t-1 (here: pixels of the labels at t-1)
        for j in range(nt):
            y, x = s["track_centres"][j].astype(int)
            assert s["labels"][0, y, x] > 0
        n_track_total += nt
    assert n_track_total > 0
    batch = D.collate([sampler.sample(), sampler.sample()])
    assert tuple(batch["image"].shape) == (2, 2, 48, 48)
    assert tuple(batch["n_track"].shape) == (2,)


def test_pair_sampler_needs_pairs(movie):
    seq = _seq_from_movie(movie)
    with pytest.raises(ValueError, match="no training pairs"):
        D.PairSampler([seq], [[0]], crop_size=32)


def test_pair_sampler_skips_unknown_pairs(movie):
    """Sparse corrections: pairs of two unannotated (entirely ignored) frames are not drawn."""
    seq = D.sequence_from_arrays("s", movie.image, movie.labels, annotated_frames=[2])
    sampler = D.PairSampler([seq], [[1, 2, 3, 4, 5]], crop_size=32)
    assert sampler.pairs == [(0, 2), (0, 3)]
    with pytest.raises(ValueError, match="hold no labels"):
        D.PairSampler([seq], [[5]], crop_size=32)


def _bright_cell_sequence() -> D.TrainingSequence:
    """Image = (1 + frame index) inside cells, 0 outside; asymmetric cells."""
    t_n, shape = 3, (70, 90)
    seg = np.zeros((t_n, *shape), np.int32)
    for t in range(t_n):
        seg[t, 10 + t : 16 + t, 20:50] = 1  # long horizontal bar
        seg[t, 30:60, 60 + t : 66 + t] = 2  # long vertical bar
        seg[t][_disk(shape, 50, 25, 8)] = 3
    image = ((seg > 0) * (1.0 + np.arange(t_n)[:, None, None])).astype(np.float32)
    return D.TrainingSequence("bright", image, seg, seg.copy(), np.zeros(seg.shape, bool))


def _no_intensity(**kw) -> D.AugmentConfig:
    base = {
        "flip_rot": False,
        "p_scale": 0.0,
        "p_shift": 0.0,
        "p_contrast": 0.0,
        "p_gain_field": 0.0,
        "p_gamma": 0.0,
        "p_blur": 0.0,
        "p_clahe": 0.0,
    }
    return D.AugmentConfig(**{**base, **kw})


@pytest.mark.parametrize("scale_shift", [False, True])
def test_augmentation_keeps_image_and_labels_aligned(scale_shift):
    """A bright cell stays under its label in both frames, through flips, rotations, scaling
    and the shift of frame t-1 (image value = frame index + 1 inside cells)."""
    seq = _bright_cell_sequence()
    p = 1.0 if scale_shift else 0.0
    cfg = _no_intensity(flip_rot=True, p_scale=p, p_shift=p)
    sampler = D.PairSampler([seq], [[1, 2]], crop_size=40, augment=cfg, seed=1)
    orientations = set()
    for _ in range(16):
        s = sampler.sample()
        for k in range(2):
            img, lab, ign = s["image"][k], s["labels"][k], s["ignore"][k]
            want = (lab > 0) * (img.max() if scale_shift else float(np.round(img.max())))
            err = np.abs(img - want)[~ign]
            if scale_shift:  # bilinear image vs nearest labels: the edges differ
                assert err.mean() < 0.15 * max(img.max(), 1)
            else:
                assert err.max() == 0
        if not scale_shift:
            # frame order kept: frame t is one brighter than frame t-1
            v0, v1 = s["image"][0].max(), s["image"][1].max()
            assert v0 == 0 or v1 == 0 or v1 == v0 + 1
            for j in range(1, int(s["n_inst"][1]) + 1):  # orientation of the bars at t
                ys, xs = np.nonzero(s["labels"][1] == j)
                if np.ptp(ys) > 2.5 * np.ptp(xs) + 3 or np.ptp(xs) > 2.5 * np.ptp(ys) + 3:
                    orientations.add("v" if np.ptp(ys) > np.ptp(xs) else "h")
    if not scale_shift:
        assert orientations == {"h", "v"}


def test_flip_rot_transforms_image_and_labels_alike():
    """The same crop without and with flips/rotations: one of the 8 symmetries maps both."""
    seq = _bright_cell_sequence()
    seen = set()
    for seed in range(12):
        plain = D.PairSampler([seq], [[1]], 64, _no_intensity(), seed=seed).sample()
        aug = D.PairSampler([seq], [[1]], 64, _no_intensity(flip_rot=True), seed=seed).sample()
        for k in range(8):

            def tf(a, k=k):
                r = np.rot90(a, k % 4, axes=(1, 2))
                return r[:, :, ::-1] if k >= 4 else r

            if np.array_equal(tf(plain["image"]), aug["image"]):
                seen.add(k)
                np.testing.assert_array_equal(tf(plain["labels"] > 0), aug["labels"] > 0)
                np.testing.assert_array_equal(tf(plain["ignore"]), aug["ignore"])
                break
        else:
            pytest.fail(f"seed {seed}: augmented crop is no flip/rotation of the plain one")
    assert len(seen) >= 3


def test_intensity_augmentation_keeps_labels(movie):
    seq = _seq_from_movie(movie)
    plain_cfg = _no_intensity()
    strong = _no_intensity(p_contrast=1, p_gain_field=1, p_gamma=1, p_blur=1, p_clahe=1)
    a = D.PairSampler([seq], [[3]], crop_size=48, augment=plain_cfg, seed=2).sample()
    b = D.PairSampler([seq], [[3]], crop_size=48, augment=strong, seed=2).sample()
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(a["track_labels"], b["track_labels"])
    assert not np.allclose(a["image"], b["image"])
    assert np.isfinite(b["image"]).all()


def test_split_frames_moves_the_window_onto_sparse_annotations():
    seg = [2, 5, 6, 7, 8, 10, 12, 20, 30, 40, 44, 47]  # none in the tail of 92 frames
    train, val = D.split_frames(92, 0.1, seg)
    assert val == [47]
    assert 47 not in train and 48 not in train
    assert 46 in train and 49 in train
    # annotations in the tail: the plain tail split
    assert D.split_frames(20, 0.1, [3, 19]) == D.split_frames(20, 0.1)


def test_split_frames_explicit_window():
    train, val = D.split_frames(92, 0.1, [2, 33, 47], window=(31, 36))
    assert val == [31, 32, 33, 34, 35]
    assert 31 not in train and 36 not in train  # 36's partner 35 is held out
    assert 30 in train and 37 in train and 91 in train
    assert D.split_frames(10, 0.5, window=(8, 100))[1] == [8, 9]  # clipped to the movie
    with pytest.raises(ValueError, match="outside the 10 frames"):
        D.split_frames(10, 0.1, window=(12, 15))


def test_only_frames_makes_other_frames_unknown():
    movie = make_movie(n_frames=5, shape=(48, 48), n_cells=2, seed=3)
    seq = D.sequence_from_arrays("s", movie.image, movie.labels, movie.lineage)
    sub = D.only_frames(seq, [1, 2])
    assert sub.seg_frames == [1, 2]
    assert sub.ignore[[0, 3, 4]].all() and not sub.seg[[0, 3, 4]].any()
    np.testing.assert_array_equal(sub.seg[[1, 2]], seq.seg[[1, 2]])
    np.testing.assert_array_equal(sub.ignore[[1, 2]], seq.ignore[[1, 2]])


# --------------------------------------------------------------------------- large cells, scale
def test_reach_of_masks_measures_how_far_cells_extend_beyond_markers():
    shape = (80, 80)
    tra = np.zeros((1, *shape), np.uint16)
    tra[0][_disk(shape, 40, 40, 2)] = 1  # a small marker in the middle of a big cell
    seg = np.zeros(shape, np.int32)
    seg[_disk(shape, 40, 40, 30)] = 1  # labelled with its marker's track id
    reach = D.reach_of_masks(tra, {0: seg})
    # 95 % of a disk of radius 30 lies within 0.975 * 30 of its centre; minus the marker
    assert 26 <= reach <= 28
    assert D.reach_of_masks(tra, {}) == 0.0


def test_build_labels_ignores_as_far_as_annotated_cells_reach():
    """Cells much bigger than their markers (MSC): around a marker without a mask, the
    unknown region covers where annotated cells of this movie reach, not just a median
    radius, so the parts of unannotated cells far from their marker are not background."""
    shape = (100, 200)
    tra = np.zeros((2, *shape), np.uint16)
    for t in range(2):
        tra[t][_disk(shape, 50, 50, 2)] = 1
        tra[t][_disk(shape, 50, 150, 2)] = 2
    seg = np.zeros(shape, np.uint16)
    seg[40:60, 10:90] = 1  # an elongated cell: 40 px from the marker at its ends
    _, _, ignore, _, _ = D.build_labels(tra, {0: seg})
    # frame 1 has no masks: the region around marker 2 reaches ~35 px, not the 22 px radius
    # of a disk as big as the cell
    assert ignore[1][50, 150 + 34] and ignore[1][50, 150 - 34]
    assert not ignore[1][50, 150 + 45]
    assert not ignore[0][seg > 0].any()


def test_rescale_sequence_halves_frames_and_keeps_labels(movie):
    seq = _seq_from_movie(movie)
    half = D.rescale_sequence(seq, 0.5)
    assert D.rescale_sequence(seq, 1.0) is seq
    assert half.image.shape == (6, 32, 32) and half.image.dtype == np.float32
    for name in ("seg", "track", "ignore"):
        arr = getattr(half, name)
        assert arr.shape == (6, 32, 32) and arr.dtype == getattr(seq, name).dtype
    # labels are sampled, never blended: every id present is an id of the original
    assert set(np.unique(half.seg)) <= set(np.unique(seq.seg))
    # each cell keeps about a quarter of its area, and the image its brightness
    for tid in np.unique(seq.seg[2])[1:]:
        a, b = (seq.seg[2] == tid).sum(), (half.seg[2] == tid).sum()
        assert abs(b - a / 4) <= 0.25 * a / 4 + 4
    assert abs(float(half.image.mean()) - float(seq.image.mean())) < 0.02
    assert half.parents == seq.parents and half.seg_frames == seq.seg_frames


def test_intensity_keeps_a_dim_cell_dim_in_an_empty_crop():
    """The crop is normalised with the frame's levels, not its own percentiles: a cell at 0.2
    of the frame's range stays at 0.2 (per-crop re-normalisation made it 1.0)."""
    img = np.zeros((64, 64), np.float32)
    img[20:40, 20:40] = 0.2
    rng = np.random.default_rng(0)
    cfg = D.AugmentConfig()
    for params in ({"contrast": 1.0}, {"contrast": 0.3}, {"gain": np.full((64, 64), 0.5)}):
        out = D._intensity(img, rng, cfg, params)
        assert out[30, 30] == pytest.approx(0.2, abs=1e-3), params
        assert out[5, 5] == pytest.approx(0.0, abs=1e-3), params
    # noise widens the frame's range a little: the cell's step above background shrinks
    noisy = D._intensity(img, rng, cfg, {"contrast": 0.3, "noise": 0.02})
    step = float(np.median(noisy[22:38, 22:38]) - np.median(noisy[:10, :10]))
    assert 0.1 < step < 0.2


def test_sparse_corrections_leave_the_rest_of_the_frame_unknown():
    """Frames where only some cells were corrected: those cells are learnt, every other pixel
    is unknown (not background); complete frames keep their background; tracking targets
    only where both frames of a pair are labelled."""
    movie = make_movie(n_frames=5, shape=(64, 64), n_cells=3, seed=3, radius=(5.0, 7.0))
    labels = movie.labels.copy()
    one = int(np.unique(labels[2])[1])
    labels[2][labels[2] != one] = 0  # frame 2: one cell corrected, the others not
    seq = D.sequence_from_arrays(
        "s", movie.image, labels, movie.lineage, annotated_frames=[1], sparse_frames=[2]
    )
    assert seq.seg_frames == [1, 2]
    np.testing.assert_array_equal(seq.ignore[2], labels[2] == 0)
    np.testing.assert_array_equal(seq.seg[2], labels[2])
    assert not seq.ignore[1].any() and seq.ignore[0].all() and seq.ignore[3].all()
    sample = D.PairSampler([seq], [[2]], 64, None, seed=0).sample()  # pair (1, 2)
    assert sample["ignore"][1].sum() == (labels[2] == 0).sum()
    assert (sample["labels"][1] > 0).sum() == (labels[2] == one).sum()
    # the corrected cell at 2 was labelled at 1 too: it has a tracking target
    assert sample["track_labels"].max() >= 1
    # a pair whose earlier frame is unknown teaches no tracking
    alone = D.sequence_from_arrays("a", movie.image, labels, movie.lineage, [], sparse_frames=[2])
    sample = D.PairSampler([alone], [[2]], 64, None, seed=0).sample()
    assert sample["track_labels"].max() == 0


def test_cell_to_noise_cap_keeps_cells_visible(movie):
    """Contrast + noise augmentation can bury cells in noise; ``min_cell_to_noise`` caps the
    noise so augmented crops keep cells at least that many noise SDs above the background."""
    seq = _seq_from_movie(movie)
    dim = dict(p_contrast=1, contrast_range=(0.08, 0.3), noise_range=(0.1, 0.12))

    def ratios(**kw):
        cfg = _no_intensity(**dim, **kw)
        sampler = D.PairSampler([seq], [[1, 2, 3, 4, 5]], crop_size=48, augment=cfg, seed=4)
        out = []
        for _ in range(40):
            b = sampler.sample()
            r = D.cell_to_noise(b["image"][1], b["labels"][1])
            if r is not None:
                out.append(r)
        return np.array(out)

    free, capped = ratios(), ratios(min_cell_to_noise=1.0)
    assert len(free) > 20 and len(capped) > 20
    # measured: without the cap 10 % of crops below 0.44 (median 0.76); with it >= 0.87
    assert np.percentile(free, 10) < 0.6
    assert capped.min() > 0.75 and np.percentile(capped, 10) > 0.85


def test_intensity_levels_match_normalising_the_whole_augmented_frame():
    """With the frame's pixel subsample as ``ref``, a crop's augmented intensities are those
    of the same crop cut from the whole frame dimmed, noised and normalised as inference
    normalises frames (the analytic levels made a dim noisy frame's cells too dim)."""
    rng = np.random.default_rng(0)
    frame = rng.normal(0.1, 0.02, (256, 256)).astype(np.float32)
    yy, xx = np.mgrid[:256, :256]
    cells = np.zeros((256, 256), bool)
    for cy, cx in rng.integers(20, 236, (12, 2)):
        cells |= (yy - cy) ** 2 + (xx - cx) ** 2 < 12**2
    frame[cells] += 0.6 + 0.3 * rng.random(cells.sum())
    frame = D.normalize_frame(frame)
    params = {"contrast": 0.2, "noise": 0.06}
    crop = (slice(0, 128), slice(0, 128))
    bg_crop = float(np.percentile(frame[crop], 20))  # _intensity's contrast anchor
    whole = bg_crop + (frame - bg_crop) * params["contrast"]
    whole = D.normalize_frame(whole + rng.normal(0, params["noise"], whole.shape))
    step = max(1, int(np.sqrt(frame.size / D.PairSampler.REFERENCE_PIXELS)))
    ref = frame[::step, ::step].ravel()
    cfg = D.AugmentConfig()
    new = D._intensity(frame[crop], rng, cfg, params, ref)
    old = D._intensity(frame[crop], rng, cfg, params)
    c = cells[crop]

    def levels(img):
        return float(np.median(img[~c])), float(np.median(img[c]))

    want = levels(whole[crop])
    assert levels(new) == pytest.approx(want, abs=0.02)
    # measured: want (0.326, 0.703), new (0.326, 0.691), analytic levels (0.292, 0.601):
    # cells too dim against their background
    assert levels(old)[1] - levels(old)[0] < want[1] - want[0] - 0.05


def test_cell_gain_gives_each_cell_its_own_brightness_in_both_frames():
    movie = make_movie(n_frames=4, shape=(96, 96), n_cells=8, seed=5, radius=(8.0, 11.0))
    seq = _seq_from_movie(movie)
    rng = np.random.default_rng(0)
    arrs = {
        "image": movie.image[1:3].astype(np.float32)
        + rng.normal(0, 0.02, (2, 96, 96)).astype(np.float32),
        "seg": movie.labels[1:3].astype(np.int32),
        "track": movie.labels[1:3].astype(np.int32),
    }
    out = D._cell_gain(arrs, np.random.default_rng(1), (0.08, 1.0))
    assert out.shape == arrs["image"].shape and out.dtype == np.float32
    ratios = []
    for k in range(2):
        lab, bg0 = arrs["seg"][k], np.median(arrs["image"][k][arrs["seg"][k] == 0])
        bg1 = np.median(out[k][lab == 0])
        ratios.append(
            {
                int(i): (np.median(out[k][lab == i]) - bg1)
                / (np.median(arrs["image"][k][lab == i]) - bg0)
                for i in np.unique(lab)[1:]
            }
        )
    both = sorted(set(ratios[0]) & set(ratios[1]))
    assert len(both) >= 5
    r0 = np.array([ratios[0][i] for i in both])
    r1 = np.array([ratios[1][i] for i in both])
    assert r0.max() / max(r0.min(), 1e-3) > 2.0  # unequal brightness
    np.testing.assert_allclose(r0, r1, atol=0.1)  # a cell keeps its factor in both frames
    assert np.all((r0 > 0.0) & (r0 < 1.1))
    # sampler: off by default (the crops are exactly the old ones), on with p_cell_gain
    plain = D.PairSampler([seq], [[1, 2, 3]], crop_size=48, augment=D.AugmentConfig(), seed=2)
    again = D.PairSampler([seq], [[1, 2, 3]], crop_size=48, augment=D.AugmentConfig(), seed=2)
    for _ in range(3):
        np.testing.assert_array_equal(plain.sample()["image"], again.sample()["image"])
    cfg = D.AugmentConfig(p_cell_gain=1.0, p_contrast=0, p_gain_field=0, p_gamma=0, p_blur=0,
                          p_clahe=0, flip_rot=False, p_scale=0, p_shift=0)  # fmt: skip
    off = dict(cfg.__dict__, p_cell_gain=0.0)
    a = D.PairSampler([seq], [[1, 2, 3]], crop_size=48, augment=cfg, seed=4).sample()
    b = D.PairSampler([seq], [[1, 2, 3]], crop_size=48, augment=D.AugmentConfig(**off), seed=4)
    b = b.sample()
    np.testing.assert_array_equal(a["labels"], b["labels"])  # same crop, same targets
    assert not np.allclose(a["image"], b["image"])


def test_warp_deforms_images_and_labels_of_both_frames_together():
    """One smooth field for the whole pair: every pixel of a cell still lies on that cell's
    brightness (images and labels move together), cells keep their ids in both frames and
    roughly their area, and the shapes change."""
    movie = make_movie(n_frames=4, shape=(96, 96), n_cells=8, seed=5, radius=(8.0, 11.0))
    labels = movie.labels[1:3].astype(np.int32)
    arrs = {
        "image": (labels > 0).astype(np.float32) * 0.8 + 0.1,  # cells bright, background dim
        "seg": labels,
        "track": labels.copy(),
        "ignore": np.zeros_like(labels, dtype=bool),
    }
    arrs["ignore"][:, :, :10] = True
    out = D._warp_pair(arrs, np.random.default_rng(3), strength=0.3)
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
        k: (v.shape, v.dtype) for k, v in arrs.items()
    }
    assert (out["seg"] != arrs["seg"]).mean() > 0.01  # deformed
    for k in range(2):
        cells = out["seg"][k] > 0
        assert out["image"][k][cells].mean() > 0.85 and out["image"][k][~cells].mean() < 0.15
        before, after = np.bincount(arrs["seg"][k].ravel()), np.bincount(out["seg"][k].ravel())
        ids = np.flatnonzero(before[1:]) + 1
        assert set(np.flatnonzero(after[1:]) + 1) == set(ids)
        np.testing.assert_allclose(after[ids], before[ids], rtol=0.5)
        np.testing.assert_array_equal(out["track"][k], out["seg"][k])
    # the ignored strip moves with the rest: about as wide, still on the left
    assert abs(out["ignore"].mean() - arrs["ignore"].mean()) < 0.08  # 10 px, +- 7
    assert out["ignore"][:, :, :10].mean() > 0.6 and not out["ignore"][:, :, 40:].any()
    empty = {k: np.zeros_like(v) for k, v in arrs.items()}
    assert D._warp_pair(empty, np.random.default_rng(0), 0.3) is empty  # no cells: unchanged


def test_warp_is_off_by_default_and_on_with_p_warp():
    movie = make_movie(n_frames=4, shape=(96, 96), n_cells=8, seed=5, radius=(8.0, 11.0))
    seq = _seq_from_movie(movie)
    quiet = dict(p_contrast=0, p_gain_field=0, p_gamma=0, p_blur=0, p_clahe=0, flip_rot=False,
                 p_scale=0, p_shift=0)  # fmt: skip
    assert D.AugmentConfig().p_warp == 0.0
    a = D.PairSampler([seq], [[1, 2, 3]], crop_size=64, augment=D.AugmentConfig(**quiet), seed=4)
    b = D.PairSampler(
        [seq], [[1, 2, 3]], crop_size=64, augment=D.AugmentConfig(p_warp=1.0, **quiet), seed=4
    )
    a, b = a.sample(), b.sample()
    assert a["image"].shape == b["image"].shape
    assert not np.array_equal(a["labels"], b["labels"])


# --------------------------------------------------------------------------- replay
def test_replay_frames_are_pairs_away_from_the_corrections():
    frames = D.replay_frames(20, corrected=[0, 1, 2, 3, 4], every=3)
    # candidates t = 7..19 (a pair may not hold or touch frames 0-5); every third: 7, 10, ...
    assert frames == [6, 7, 9, 10, 12, 13, 15, 16, 18, 19]
    assert D.replay_frames(20, corrected=[10], every=1) == [
        t for t in range(20) if t not in (9, 10, 11)
    ]
    assert D.replay_frames(6, corrected=range(6)) == []
    with pytest.raises(ValueError, match="every"):
        D.replay_frames(10, [0], every=0)


def test_replay_sequence_holds_the_results_on_its_frames_only():
    movie = make_movie(n_frames=6, shape=(48, 48), n_cells=2, seed=3)
    corrections = D.sequence_from_arrays("c", movie.image, movie.labels, movie.lineage, [5])
    seq = D.replay_sequence("r", corrections, movie.labels, movie.lineage, [2, 3])
    assert seq.replay and seq.seg_frames == [2, 3]
    assert seq.ignore[[0, 1, 4, 5]].all() and not seq.ignore[[2, 3]].any()
    np.testing.assert_array_equal(seq.seg[2], movie.labels[2])
    assert D.keep_frames(seq, slice(1, 5)).replay  # the flag survives frame selections
    assert D.only_frames(seq, [2]).replay
    with pytest.raises(ValueError, match="no frames to replay"):
        D.replay_sequence("r", corrections, movie.labels, movie.lineage, [])


def test_pair_sampler_share_of_a_group_of_sequences():
    """``set_share``: the replayed sequence's pairs drawn a given fraction of the time, the
    weights within each group kept."""
    movie = make_movie(n_frames=10, shape=(48, 48), n_cells=2, seed=3)
    corrections = D.sequence_from_arrays("c", movie.image, movie.labels, movie.lineage, [0, 1, 2])
    replay = D.replay_sequence("r", corrections, movie.labels, movie.lineage, [4, 5, 7, 8, 9])
    sampler = D.PairSampler([corrections, replay], [[1, 2], list(range(1, 10))], 32)
    group = np.array([i == 1 for i, _ in sampler.pairs])
    before = sampler.weights.copy()
    assert before[group].sum() > 0.7  # by frame, the replay's pairs dominate
    sampler.set_share({1}, 0.5)
    assert sampler.weights[group].sum() == pytest.approx(0.5)
    np.testing.assert_allclose(
        sampler.weights[group] / sampler.weights[group].sum(), before[group] / before[group].sum()
    )
