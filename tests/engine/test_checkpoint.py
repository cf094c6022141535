"""Checkpoints of tracking runs: an interrupted run continues to the uninterrupted result."""

from __future__ import annotations

import numpy as np
import pytest

from napari_embedtrack.engine.checkpoint import CheckpointMismatch, RunCheckpoint
from napari_embedtrack.engine.link import Linker
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.pipeline import track_movie
from napari_embedtrack.engine.progress import run

FINGERPRINT = {"movie": "synthetic", "model": "Fluo-N2DH-SIM+"}


@pytest.fixture(scope="module")
def sim():
    return load_model("Fluo-N2DH-SIM+", device="cpu")


def _track(movie, model, **kw):
    return run(track_movie(movie, model, device="cpu", keep_outputs=False, **kw))


@pytest.fixture(scope="module")
def whole(sim, synthetic_movie):
    """The uninterrupted run."""
    result = _track(synthetic_movie.image, sim)
    assert len(result.lineage) > 3 and result.labels.any()
    return result


@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_resumed_run_equals_an_uninterrupted_one(sim, synthetic_movie, whole, tmp_path, stop_after):
    movie = synthetic_movie.image
    ckpt = RunCheckpoint(tmp_path / "run", FINGERPRINT)
    calls = iter(range(100))
    part = _track(movie, sim, checkpoint=ckpt, should_stop=lambda: next(calls) + 1 >= stop_after)
    assert not part.complete and part.labels.shape[0] == stop_after
    assert ckpt.frames_done() == stop_after
    resumed = _track(movie, sim, checkpoint=RunCheckpoint(tmp_path / "run", FINGERPRINT),
                     resume=True)  # fmt: skip
    assert resumed.complete
    np.testing.assert_array_equal(resumed.labels, whole.labels)
    np.testing.assert_array_equal(resumed.lineage, whole.lineage)


def test_resuming_a_finished_run_needs_no_network(sim, synthetic_movie, tmp_path):
    movie = synthetic_movie.image[:4]
    ckpt = RunCheckpoint(tmp_path / "run", FINGERPRINT)
    whole = _track(movie, sim, checkpoint=ckpt)
    again = _track(movie, sim, checkpoint=ckpt, resume=True)
    np.testing.assert_array_equal(again.labels, whole.labels)
    np.testing.assert_array_equal(again.lineage, whole.lineage)


def test_checkpoint_of_another_run_is_refused(sim, synthetic_movie, tmp_path):
    movie = synthetic_movie.image[:3]
    _track(movie, sim, checkpoint=RunCheckpoint(tmp_path / "run", FINGERPRINT))
    other = RunCheckpoint(tmp_path / "run", {**FINGERPRINT, "model": "Fluo-N2DH-GOWT1"})
    with pytest.raises(CheckpointMismatch, match="other model"):
        _track(movie, sim, checkpoint=other, resume=True)
    with pytest.raises(ValueError, match="keeps the network outputs"):
        run(track_movie(movie, sim, device="cpu", checkpoint=other, resume=True))


def test_linker_state_round_trip(synthetic_movie):
    """A restored linker links the next frame exactly as the one it was saved from."""
    labels = synthetic_movie.labels
    a = Linker()
    for t in range(3):
        last = a.add(labels[t], np.zeros((2, *labels.shape[1:])) if t else None)
    b = Linker.restore(a.state(), last)
    offsets = np.zeros((2, *labels.shape[1:]))
    np.testing.assert_array_equal(a.add(labels[3], offsets), b.add(labels[3], offsets))
    np.testing.assert_array_equal(a.lineage, b.lineage)
    assert a.n_frames == b.n_frames == 4


def test_checkpoint_keeps_the_seediness_for_the_dim_cell_rims(tmp_path):
    ckpt = RunCheckpoint(tmp_path / "run", FINGERPRINT)
    ckpt.start()
    labels = np.arange(12, dtype=np.uint32).reshape(3, 4)
    seed = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    ckpt.save_frame(0, labels, {}, seed)
    ckpt.save_frame(1, labels, {})  # a run without grow_dim keeps none
    np.testing.assert_array_equal(ckpt.read_frame(0), labels)
    np.testing.assert_array_equal(ckpt.read_seediness(0), seed)
    assert ckpt.read_seediness(0).dtype == np.uint8
    assert ckpt.read_seediness(1) is None
