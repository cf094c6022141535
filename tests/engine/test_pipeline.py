"""predict -> cluster -> link for whole movies, and re-tracking from stored outputs."""

from __future__ import annotations

import numpy as np
import pytest

from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.pipeline import (
    default_cluster_params,
    retrack,
    track_movie,
)
from napari_embedtrack.engine.progress import Progress, run
from napari_embedtrack.io import ctc

from .oracle import ideal_outputs


def test_track_movie_progress_and_shapes(tiny_model_dir, small_movie):
    steps: list[Progress] = []
    result = run(track_movie(small_movie.image, str(tiny_model_dir), tta=False), steps.append)
    t, y, x = small_movie.image.shape
    assert result.labels.shape == (t, y, x)
    assert result.complete
    assert len(result.outputs) == t
    assert [p.done for p in steps] == list(range(t + 1))
    assert all(p.total == t for p in steps)
    # lineage and labels agree: every label id is a track covering that frame
    for tid, start, end, _parent in result.lineage:
        present = [int(f) for f in range(t) if np.any(result.labels[f] == tid)]
        assert present == list(range(start, end + 1))


def test_single_frame_is_segmentation_only(tiny_model_dir, small_movie):
    result = run(track_movie(small_movie.image[0], str(tiny_model_dir), tta=False))
    assert result.labels.shape == (1, *small_movie.image.shape[1:])
    assert np.all(result.lineage[:, 3] == 0)
    assert np.all(result.outputs[0].track_offsets == 0)


def test_should_stop_returns_consistent_partial_result(tiny_model_dir, small_movie):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) >= 2

    result = run(track_movie(small_movie.image, str(tiny_model_dir), tta=False, should_stop=stop))
    assert not result.complete
    assert result.labels.shape[0] == 2
    assert np.all(result.lineage[:, 2] <= 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_raise(tiny_model_dir, small_movie, bad):
    movie = small_movie.image.copy()
    movie[1, 3, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        run(track_movie(movie, str(tiny_model_dir), tta=False))


def test_empty_and_constant_frames_give_no_cells(tiny_model_dir):
    movie = np.zeros((3, 40, 50), np.uint16)
    movie[1] = 7
    result = run(track_movie(movie, str(tiny_model_dir), tta=False))
    assert result.labels.shape == (3, 40, 50)
    assert np.isfinite(result.outputs[1].seediness).all()


def test_wrong_shape_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ValueError, match=r"\(T, Y, X\)"):
        run(track_movie(np.zeros((2, 3, 20, 20)), str(tiny_model_dir)))


def test_retrack_from_ideal_outputs_reproduces_ground_truth(synthetic_movie, tmp_path):
    card = load_model_card_for_oracle()
    outputs = ideal_outputs(synthetic_movie.labels, synthetic_movie.lineage, card.grid_spacing)
    params = default_cluster_params(card, min_size=1)
    result = run(retrack(outputs, params))
    scores = _score_against_truth(synthetic_movie, result, tmp_path)
    assert scores["SEG"] == pytest.approx(1.0)
    assert scores["TRA"] == pytest.approx(1.0)


def _score_against_truth(movie, result, tmp_path) -> dict:
    """Official scores (SEG/DET/TRA and the lineage measures) of a result against the
    synthetic movie's truth."""
    gt_dir = tmp_path / "01_GT"
    ctc.write_ground_truth(
        gt_dir, movie.labels, movie.lineage, {t: m for t, m in enumerate(movie.labels)}
    )
    ctc.write_results(tmp_path / "01_RES", result.labels, result.lineage)
    return ctc.score_results(gt_dir, tmp_path / "01_RES")


def load_model_card_for_oracle():
    from napari_embedtrack.engine.modelfile import ModelCard

    return ModelCard(grid_spacing=1 / 255, min_size=1)


def test_model_object_accepted(tiny_model_dir, small_movie):
    loaded = load_model(tiny_model_dir)
    a = run(track_movie(small_movie.image[:2], loaded, tta=False))
    b = run(track_movie(small_movie.image[:2], str(tiny_model_dir), tta=False))
    np.testing.assert_array_equal(a.labels, b.labels)


def test_default_cleanup_scales_with_the_card_cell_size():
    from napari_embedtrack.engine.modelfile import ModelCard
    from napari_embedtrack.engine.pipeline import (
        DAUGHTER_RATIO,
        FRAGMENT_FRACTION,
        MAX_GAP,
        MIN_GAP,
        SMALL_TRACK_EDGE_FRACTION,
        SMALL_TRACK_FRACTION,
    )

    params = default_cluster_params(ModelCard(cell_size=1000))
    assert params.fragment_size == round(FRAGMENT_FRACTION * 1000)
    assert params.small_track_fraction == SMALL_TRACK_FRACTION
    assert params.small_track_edge_fraction == SMALL_TRACK_EDGE_FRACTION > 0
    assert params.small_track_reference == "pixels"
    assert params.max_gap == MAX_GAP > 1
    assert params.min_gap == MIN_GAP == 0  # broken tracks joined (session 15)
    assert params.gap_distance == pytest.approx(2 * np.sqrt(1000 / np.pi))
    assert params.min_daughter_size == 0  # the one-frame daughter rule
    assert params.min_daughter_ratio == DAUGHTER_RATIO == 0.25  # unequal daughters (session 15)
    assert params.acceptance == "proposal"
    assert not params.drop_single
    assert default_cluster_params(ModelCard(cell_size=1000, drop_single=True)).drop_single
    unknown = default_cluster_params(ModelCard())  # old cards: no size-based rules
    assert unknown.fragment_size == 0 and unknown.gap_distance == 0
    assert unknown.small_track_fraction == 0 and unknown.small_track_edge_fraction == 0


def test_retrack_with_default_cleanup_keeps_a_perfect_lineage(synthetic_movie, tmp_path):
    """Ideal outputs with the track clean-up on (card cell size from the movie's masks): every
    official measure, the lineage ones included, stays 1.0: the rules do not undo real
    divisions, bridge real ends or merge touching cells."""
    from napari_embedtrack.engine.modelfile import ModelCard

    sizes = np.concatenate([np.bincount(f.ravel())[1:] for f in synthetic_movie.labels])
    card = ModelCard(grid_spacing=1 / 255, min_size=1, cell_size=int(np.median(sizes[sizes > 0])))
    outputs = ideal_outputs(synthetic_movie.labels, synthetic_movie.lineage, card.grid_spacing)
    result = run(retrack(outputs, default_cluster_params(card)))
    scores = _score_against_truth(synthetic_movie, result, tmp_path)
    for key in (*ctc.TECHNICAL_METRICS, *ctc.LINEAGE_METRICS):
        assert scores[key] == pytest.approx(1.0), key
    assert scores["tracks"] == scores["gt_tracks"]


def test_dim_cell_rims_are_added_to_the_finished_frames(synthetic_movie):
    """``grow_dim`` (on by default): the rules and the lineage are those without it; each
    finished frame gets exactly its :func:`dim_rim` computed from the frame's seediness."""
    from dataclasses import replace

    from napari_embedtrack.engine.postprocess import add_dim_rims, seediness_u8

    model = load_model("Fluo-N2DH-SIM+", device="cpu")
    params = default_cluster_params(model.card)
    assert params.grow_dim > 0
    movie = synthetic_movie.image
    grown = run(track_movie(movie, model, tta=False, device="cpu", params=params))
    bare = run(
        track_movie(movie, model, tta=False, device="cpu", params=replace(params, grow_dim=0.0))
    )
    np.testing.assert_array_equal(grown.lineage, bare.lineage)
    kept = bare.labels > 0
    np.testing.assert_array_equal(grown.labels[kept], bare.labels[kept])  # masks only grow
    assert (grown.labels > 0).sum() > kept.sum() + 100  # the shipped model's dim edges
    for t, out in enumerate(grown.outputs):
        want = add_dim_rims(bare.labels[t], seediness_u8(out.seediness), params.grow_dim)
        np.testing.assert_array_equal(grown.labels[t], want)
