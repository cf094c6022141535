"""engine/proxy.py: validation proxies harder than the training movie (issue #13)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_embedtrack.engine.proxy import (
    cell_factor_map,
    noise_sd,
    restyle_movie,
    scale_above_background,
    warp_field,
    warp_movie,
    warp_sequence,
)
from napari_embedtrack.io import ctc
from napari_embedtrack.synthetic import make_movie


@pytest.fixture(scope="module")
def movie():
    return make_movie(n_frames=6, shape=(160, 144), n_cells=8, seed=3, radius=(9.0, 12.0))


def test_hard_style_dims_cells_and_keeps_the_background_noise(movie):
    rng = np.random.default_rng(0)
    frames = movie.image.astype(np.float32) + rng.normal(0, 0.03, movie.image.shape).astype(
        np.float32
    )
    hard = restyle_movie(frames, "hard", seed=1)
    assert hard.shape == frames.shape and hard.dtype == np.float32
    for f, h, lab in zip(frames, hard, movie.labels, strict=True):
        cells, bg = lab > 0, lab == 0
        before = np.median(f[cells]) - np.median(f[bg])
        after = np.median(h[cells]) - np.median(h[bg])
        assert 0.1 * before < after < 0.3 * before  # contrast x0.2 under a 0.6-1.2 gain
        assert noise_sd(h) == pytest.approx(noise_sd(f), rel=0.1)
    assert np.array_equal(hard, restyle_movie(frames, "hard", seed=1))
    with pytest.raises(ValueError, match="style must be one of"):
        restyle_movie(frames, "dark")


def test_warp_field_is_smooth_bounded_and_zero_at_the_edge():
    field = warp_field((300, 260), cell_diameter=20.0, seed=5)
    assert field.shape == (2, 300, 260)
    assert np.array_equal(field, warp_field((300, 260), cell_diameter=20.0, seed=5))
    assert not np.array_equal(field, warp_field((300, 260), cell_diameter=20.0, seed=6))
    for edge in (field[:, 0], field[:, -1], field[:, :, 0], field[:, :, -1]):
        assert np.abs(edge).max() < 1e-6
    assert 2.0 < np.abs(field).max() < 3 * 0.3 * 20.0 * 2
    # local stretch (1 + d field / d position) stays within about a quarter
    stretch_y = 1 + np.gradient(field[0], axis=0)
    stretch_x = 1 + np.gradient(field[1], axis=1)
    assert stretch_y.min() > 0.55 and stretch_y.max() < 1.45
    assert stretch_x.min() > 0.55 and stretch_x.max() < 1.45
    with pytest.raises(ValueError, match="cell_diameter"):
        warp_field((10, 10), cell_diameter=0)


def test_warp_movie_moves_pixels_by_the_field_and_keeps_labels():
    img = np.zeros((40, 50), np.float32)
    img[20, 25] = 1.0
    field = np.zeros((2, 40, 50), np.float32)
    field[0, 18, 22] = 2.0  # output (18, 22) takes the input at (20, 25)
    field[1, 18, 22] = 3.0
    out = warp_movie(img, field)
    assert out[18, 22] == 1.0 and out.sum() == pytest.approx(2.0)  # and (20, 25) itself
    lab = np.zeros((40, 50), np.uint16)
    lab[10:20, 10:20] = 7
    w = warp_movie(lab, warp_field(lab.shape, 10.0, seed=1), labels=True)
    assert w.dtype == np.uint16 and set(np.unique(w)) == {0, 7}
    with pytest.raises(ValueError, match="does not match"):
        warp_movie(img, field[:, :30])


def test_warped_truth_is_consistent_and_scores_1_against_itself(tmp_path, movie):
    seg = {1: movie.labels[1], 4: movie.labels[4]}
    frames, tra, seg_w = warp_sequence(movie.image, movie.labels, seg, movie.lineage, seed=2)
    assert frames.shape == movie.image.shape and tra.shape == movie.labels.shape
    assert set(seg_w) == {1, 4}
    changed = np.mean(tra != movie.labels)
    assert changed > 0.02  # cells have moved and changed shape
    for t in range(len(tra)):  # the same cells in every frame, areas within a factor ~1.5
        ids = np.unique(movie.labels[t])[1:]
        assert np.array_equal(np.unique(tra[t])[1:], ids)
        a0 = np.bincount(movie.labels[t].ravel())[ids]
        a1 = np.bincount(tra[t].ravel(), minlength=ids.max() + 1)[ids]
        assert np.all((a1 > 0.6 * a0) & (a1 < 1.6 * a0))
    # the image moves with the truth: cells stay bright inside the warped masks
    assert frames[tra > 0].mean() > 3 * frames[tra == 0].mean()
    # an ideal result on the warped movie scores 1 against the warped truth
    ctc.write_ground_truth(tmp_path / "GT", tra, movie.lineage, seg_w)
    ctc.write_results(tmp_path / "RES", tra, movie.lineage)
    scores = ctc.score_results(tmp_path / "GT", tmp_path / "RES")
    for key in ("SEG", "DET", "TRA", "CT", "TF", "BC(1)", "CCA"):
        if scores.get(key) is not None:
            assert scores[key] == pytest.approx(1.0), key


def test_warp_that_squeezes_a_track_away_is_refused():
    tra = np.zeros((2, 60, 60), np.uint16)
    tra[:, 20:40, 20:40] = 1
    tra[:, 30, 10] = 2  # a one-pixel marker, likely moved off by the warp
    lineage = np.array([[1, 0, 1, 0], [2, 0, 1, 0]])
    frames = np.zeros((2, 60, 60), np.float32)
    with pytest.raises(ValueError, match="squeezed away track 2 in frame 0"):
        warp_sequence(frames, tra, {}, lineage, strength=1.5, seed=2)
    _, tra_w, _ = warp_sequence(frames, tra, {}, lineage, strength=1.5, seed=0)
    assert (tra_w[0] == 2).any() and (tra_w[1] == 2).any()  # this one survives


def test_uneven_style_gives_each_cell_its_own_brightness_for_its_whole_track(movie):
    rng = np.random.default_rng(0)
    frames = movie.image.astype(np.float32) + rng.normal(0, 0.03, movie.image.shape).astype(
        np.float32
    )
    with pytest.raises(ValueError, match="needs labels"):
        restyle_movie(frames, "uneven")
    out = restyle_movie(frames, "uneven", labels=movie.labels, seed=3)

    def contrast(x, t):
        lab, bg = movie.labels[t], np.median(x[t][movie.labels[t] == 0])
        return {i: np.median(x[t][lab == i]) - bg for i in np.unique(lab)[1:]}

    ratios = []
    for t in range(len(frames)):
        before, after = contrast(frames, t), contrast(out, t)
        ratios.append({i: after[i] / before[i] for i in before})
        assert noise_sd(out[t]) == pytest.approx(noise_sd(frames[t]), rel=0.15)
    first = ratios[0]
    spread = max(first.values()) / min(first.values())
    assert spread > 2.0  # cells of unequal brightness
    assert all(0.04 < r < 1.1 for r in first.values())
    for later in ratios[1:]:  # a cell keeps its brightness from frame to frame
        for i in set(first) & set(later):
            assert later[i] == pytest.approx(first[i], rel=0.35, abs=0.06)


def test_cells_of_unequal_brightness_leave_the_empty_background_as_it_was():
    """A per-cell brightness map spreads each cell's factor over the pixels nearest it; the
    empty background must keep its level there (session 14: scaling its offset above the
    20th percentile drew the map's regions as edges 0.7-0.9 noise SDs deep on MSC 01)."""
    rng = np.random.default_rng(5)
    shape = (240, 320)
    labels = np.zeros(shape, np.int32)
    labels[40:70, 40:70] = 1  # a dim cell on the left, a bright one on the right
    labels[150:180, 250:280] = 2
    ramp = np.linspace(0.0, 0.3, shape[1], dtype=np.float32)[None]  # uneven illumination
    sd = 0.03
    frame = 0.1 + ramp + rng.normal(0.0, sd, shape).astype(np.float32)
    frame[labels > 0] += 0.5
    scale = cell_factor_map(labels, {1: 0.1, 2: 1.0})
    out = scale_above_background(frame, scale, noise_sd(frame), rng)

    far = ndimage.distance_transform_edt(labels == 0) > 25
    for region in (scale < 0.2, scale > 0.9):
        shift = (out - frame)[far & region].mean()
        assert abs(shift) < 0.25 * sd, shift  # kept in both regions (old rule: 0.49 SD)
    assert noise_sd(out) == pytest.approx(sd, rel=0.15)
    cell_contrast = (out - frame)[labels == 1].mean() + 0.5
    assert cell_contrast == pytest.approx(0.05, abs=0.02)  # the dim cell at a tenth
    assert (out - frame)[labels == 2].mean() == pytest.approx(0.0, abs=0.15 * sd)


def test_restyle_with_a_given_contrast_and_given_cell_factors():
    """``contrast`` replaces the style's (a tenth of the light leaves half the signal of a
    fifth); ``factors`` replace the drawn per-cell brightness of ``uneven``."""
    movie = make_movie(n_frames=2, shape=(128, 128), n_cells=3, seed=2, radius=(7.0, 9.0))
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.03, movie.image.shape).astype(np.float32)
    frames = movie.image.astype(np.float32) + noise
    bg = movie.labels == 0

    def signal(x, cells):
        return np.median(x[cells]) - np.median(x[bg])

    fifth = restyle_movie(frames, "hard", seed=1)
    tenth = restyle_movie(frames, "hard", seed=1, contrast=0.1)
    cells = movie.labels > 0
    assert signal(tenth, cells) == pytest.approx(signal(fifth, cells) / 2, rel=0.1)
    assert np.array_equal(fifth, restyle_movie(frames, "hard", seed=1, contrast=0.2))
    with pytest.raises(ValueError, match=r"contrast must lie in \(0, 1\]"):
        restyle_movie(frames, "hard", contrast=0.0)
    ids = np.unique(movie.labels[cells]).tolist()
    factors = {k: 0.1 for k in ids} | {ids[0]: 1.0}  # one bright cell, the rest dim
    out = restyle_movie(frames, "uneven", labels=movie.labels, seed=3, factors=factors)
    for k in ids:
        cell = movie.labels == k
        assert signal(out, cell) / signal(frames, cell) == pytest.approx(factors[k], abs=0.03)
