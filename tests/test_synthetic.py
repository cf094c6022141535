"""Tests for napari_embedtrack.synthetic: deterministic movies with consistent ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from napari_embedtrack.io.ctc import evaluate, read_ground_truth, read_movie, write_results
from napari_embedtrack.io.tracks import consistent_tracks, lineage_from_labels
from napari_embedtrack.synthetic import SyntheticMovie, make_movie, write_ctc


def _assert_consistent(movie: SyntheticMovie) -> None:
    labels, lineage = movie.labels, movie.lineage
    assert labels.dtype == np.uint16
    assert lineage.dtype == np.int64 and lineage.shape[1] == 4
    # ids and frame ranges match the masks exactly, no time gaps
    span = lineage_from_labels(labels)
    np.testing.assert_array_equal(span[:, :3], lineage[:, :3])
    fixed_labels, fixed = consistent_tracks(labels, lineage)
    np.testing.assert_array_equal(fixed, lineage)
    np.testing.assert_array_equal(fixed_labels, labels)
    # every child starts the frame after its parent ends; divisions give exactly two children
    rows = {int(r[0]): r for r in lineage}
    for tid, start, _end, parent in lineage:
        if parent:
            assert start == rows[int(parent)][2] + 1, (tid, parent)
    parents, counts = np.unique(lineage[lineage[:, 3] > 0, 3], return_counts=True)
    assert np.all(counts == 2), dict(zip(parents, counts, strict=True))
    # tracks that end before the last frame end by dividing (cells never leave the frame)
    ended = lineage[lineage[:, 2] < labels.shape[0] - 1, 0]
    assert set(ended.tolist()) <= set(parents.tolist())


def test_default_movie(synthetic_movie):
    movie = synthetic_movie
    assert movie.image.shape == movie.labels.shape == (10, 128, 128)
    assert movie.image.dtype == np.float32
    assert movie.n_divisions >= 1
    _assert_consistent(movie)
    # cells are brighter than the background, every frame
    for img, lab in zip(movie.image, movie.labels, strict=True):
        assert img[lab > 0].mean() > img[lab == 0].mean() + 0.2
    # varied brightness between cells
    means = [movie.image[0][movie.labels[0] == i].mean() for i in np.unique(movie.labels[0])[1:]]
    assert np.ptp(means) > 0.1


def test_deterministic_by_seed():
    a, b = make_movie(seed=3), make_movie(seed=3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.lineage, b.lineage)
    c = make_movie(seed=4)
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("seed", range(5))
def test_division_and_consistency_across_seeds(seed):
    movie = make_movie(seed=seed, n_frames=8, shape=(96, 96), n_cells=4)
    assert movie.n_divisions >= 1
    _assert_consistent(movie)


def test_forced_division_only():
    movie = make_movie(n_frames=6, shape=(64, 64), n_cells=2, division_rate=0.0)
    assert movie.n_divisions == 1
    _assert_consistent(movie)
    child_start = movie.lineage[movie.lineage[:, 3] > 0, 1]
    assert np.all(child_start == 3)
    none = make_movie(
        n_frames=6, shape=(64, 64), n_cells=2, division_rate=0.0, force_division=False
    )
    assert none.n_divisions == 0


def test_long_movie_stays_consistent():
    movie = make_movie(n_frames=30, shape=(96, 96), n_cells=5, seed=7, division_rate=0.2)
    _assert_consistent(movie)
    assert movie.labels.max() <= len(movie.lineage)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_frames"):
        make_movie(n_frames=0)
    with pytest.raises(ValueError, match="too small"):
        make_movie(shape=(20, 20))


def test_write_ctc_and_evaluate_against_itself(tmp_path, synthetic_ctc, synthetic_movie):
    movie = read_movie(synthetic_ctc / "01")
    assert movie.shape == (10, 128, 128) and movie.dtype == np.uint16
    assert np.corrcoef(movie.ravel(), synthetic_movie.image.ravel())[0, 1] > 0.999
    gt = read_ground_truth(synthetic_ctc / "01_GT")
    np.testing.assert_array_equal(gt.tra, synthetic_movie.labels)
    np.testing.assert_array_equal(gt.lineage, synthetic_movie.lineage)
    assert sorted(gt.seg) == list(range(10))
    write_results(tmp_path / "01_RES", synthetic_movie.labels, synthetic_movie.lineage)
    scores = evaluate(synthetic_ctc / "01_GT", tmp_path / "01_RES")
    assert scores["SEG"] == pytest.approx(1.0)
    assert scores["DET"] == pytest.approx(1.0)
    assert scores["TRA"] == pytest.approx(1.0)


def test_write_ctc_refuses_overwrite(tmp_path, small_movie):
    write_ctc(small_movie, tmp_path, seq="02")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["02", "02_GT"]
    with pytest.raises(FileExistsError):
        write_ctc(small_movie, tmp_path, seq="02")
    write_ctc(small_movie, tmp_path, seq="02", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "02_GT").iterdir()) == ["SEG", "TRA"]
