"""Tests of engine.replay: a starting model's own results as a replayed training sequence."""

from __future__ import annotations

import numpy as np

from napari_embedtrack.engine import data as D
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.pipeline import track_movie
from napari_embedtrack.engine.progress import run
from napari_embedtrack.engine.replay import model_replay
from napari_embedtrack.synthetic import make_movie


def _corrections(annotated: list[int]) -> D.TrainingSequence:
    movie = make_movie(n_frames=12, shape=(96, 96), n_cells=3, seed=2, radius=(10.0, 13.0))
    return D.sequence_from_arrays(
        "movie", movie.image, movie.labels, movie.lineage, annotated_frames=annotated
    )


def test_the_models_results_on_the_frames_away_from_the_annotations():
    seq = _corrections([8, 9, 10, 11])
    model = load_model("Fluo-N2DH-SIM+")
    replay = run(model_replay(seq, model, device="cpu", cell_diameter="model"))
    frames = D.replay_frames(12, [8, 9, 10, 11])
    assert replay.replay and replay.name == "movie-replay"
    assert list(replay.seg_frames) == frames
    assert replay.image is seq.image  # the movie's frames shared, not a second copy
    result = run(track_movie(seq.image, model, device="cpu", keep_outputs=False))
    for t in frames:  # the model's own instances, one label each
        ours, theirs = replay.seg[t], result.labels[t]
        assert len(np.unique(ours)) == len(np.unique(theirs)) > 1
        assert np.array_equal(ours > 0, theirs > 0)


def test_nothing_to_replay_when_the_annotations_cover_the_movie():
    seq = _corrections(list(range(12)))
    # nothing is run: not even the model is loaded
    assert run(model_replay(seq, "no such model", device="cpu")) is None


def test_frames_where_the_model_found_no_cells_are_not_replayed():
    """A frame without a single cell is one the model failed on, not one known to be empty:
    its pair is left out, as the fine-tune widget leaves it out."""
    movie = make_movie(n_frames=12, shape=(96, 96), n_cells=3, seed=2, radius=(10.0, 13.0))
    dark = movie.image.copy()
    dark[:2] = 0  # frames 0 and 1: nothing to find (and no track before them to bridge)
    seq = D.sequence_from_arrays(
        "movie", dark, movie.labels, movie.lineage, annotated_frames=[10, 11]
    )
    model = load_model("Fluo-N2DH-SIM+")
    replay = run(model_replay(seq, model, device="cpu", cell_diameter="model"))
    every = D.replay_frames(12, [10, 11])
    assert every == [0, 1, 3, 4, 6, 7]  # without the rule 0 and 1 replayed as background
    assert list(replay.seg_frames) == [3, 4, 6, 7]  # the pair (0, 1) left out
    assert all(replay.seg[t].any() for t in replay.seg_frames)


def test_pairs_with_cells():
    labels = np.zeros((8, 4, 4), np.int32)
    labels[[0, 1, 2, 4, 5, 7], 1, 1] = 1
    assert D.pairs_with_cells([0, 1, 2, 3, 5, 6], labels) == [0, 1, 2]
    assert D.pairs_with_cells([4, 5, 6, 7], labels) == [4, 5]
    assert D.pairs_with_cells([], labels) == []
