"""The fine-tune widget: trains a few steps, installs a loadable model, refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_embedtrack import ctc
from napari_embedtrack._widgets import FineTuneWidget, TrackWidget
from napari_embedtrack._widgets._models import registry
from napari_embedtrack.engine.modelfile import load_model

TIMEOUT = 180_000  # ms


@pytest.fixture
def setup(make_napari_viewer, movie, tiny_model):
    """Viewer with image, ground-truth labels and tracks, both widgets docked."""
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="movie")
    labels = viewer.add_labels(movie.labels, name="truth")
    data, graph, props = ctc.lineage_to_tracks(movie.labels, movie.lineage)
    tracks = viewer.add_tracks(data, graph=graph, properties=props, name="truth tracks")
    tune = FineTuneWidget(viewer)
    track = TrackWidget(viewer)
    viewer.window.add_dock_widget(tune)
    viewer.window.add_dock_widget(track)
    tune._labels.value, tune._tracks.value = labels, tracks
    tune._init.value = tiny_model
    tune._steps.value, tune._batch.value = 2, 1
    tune._device.value = "cpu"
    tune._name.value = "tuned"
    return viewer, tune, track


def test_finetune_installs_a_model_the_track_widget_lists(qtbot, setup, user_models):
    _, tune, track = setup
    assert not tune._crop.enabled  # crop size comes from the model being fine-tuned
    with qtbot.waitSignal(tune.runner.done, timeout=TIMEOUT) as blocker:
        assert tune.start() is not None
    path = blocker.args[0]
    assert path == user_models / "tuned"
    model = load_model(path)
    assert model.card.name == "tuned" and model.card.crop_size == 64
    assert not (path / "checkpoint.pt").exists()
    assert not any((user_models / ".training").iterdir())
    assert path in [p for _, p in registry.choices()]
    assert path.resolve() in track._model.choices
    assert tune.plot.steps == [1, 2]
    assert "saved model tuned" in tune._status.value


def test_finetune_cancel_saves_nothing(qtbot, setup, user_models):
    _, tune, _ = setup
    tune._steps.value = 50
    with qtbot.waitSignal(tune.runner.done, timeout=TIMEOUT) as blocker:
        worker = tune.start()
        worker.yielded.connect(lambda p: "loss" in p.info and tune.cancel())
    assert blocker.args[0] is None
    assert not (user_models / "tuned").exists()
    assert not any((user_models / ".training").iterdir())
    assert "cancelled" in tune._status.value
    assert tune._train.enabled and not tune._cancel.enabled


def test_finetune_refuses_bad_input(setup, user_models, monkeypatch, errors, movie):
    viewer, tune, _ = setup
    tune._name.value = "has space"
    assert tune.start() is None
    assert "model name" in errors()[-1]

    tune._name.value = "tiny"  # exists: asks, and stops when the answer is no
    asked = []
    monkeypatch.setattr(
        FineTuneWidget, "_confirm_overwrite", lambda _self, name: asked.append(name) or False
    )
    assert tune.start() is None
    assert asked == ["tiny"] and (user_models / "tiny" / "card.json").is_file()

    tune._labels.value = viewer.add_labels(movie.labels[:, :50], name="cropped")
    assert tune.start() is None
    assert "have shape (6, 50, 96) but the image has shape (6, 96, 96)" in errors()[-1]

    tune._labels.value = viewer.add_labels(np.zeros_like(movie.labels), name="empty")
    tune._name.value = "other"
    assert tune.start() is None
    assert "no labels in frames 0-5" in errors()[-1]

    tune._image.value = viewer.add_image(movie.image[0], name="one frame")
    assert tune.start() is None
    assert "at least 2 frames" in errors()[-1]
    assert not tune.runner.running


def test_model_pickers_start_on_the_default_shipped_model():
    from napari_embedtrack._widgets._models import DEFAULT_MODEL

    labels = [label for label, _ in registry.choices()]
    assert labels[0] == DEFAULT_MODEL
    assert {"Fluo-N2DH-GOWT1", "Fluo-C2DL-MSC"} <= set(labels)


def test_finetune_from_sparse_corrections(qtbot, setup, user_models):
    """Only some cells labelled per frame (the sparse switch): trains and installs a model,
    and the starting model's validation comes first (the stop rule)."""
    viewer, tune, _ = setup
    labels = viewer.layers["truth"]
    sparse = labels.data.copy()
    for t in range(sparse.shape[0]):  # keep one cell per frame
        ids = np.unique(sparse[t])[1:]
        sparse[t][~np.isin(sparse[t], ids[:1])] = 0
    tune._labels.value = viewer.add_labels(sparse, name="some cells")
    tune._sparse.value = True
    seen = []
    with qtbot.waitSignal(tune.runner.done, timeout=TIMEOUT) as blocker:
        worker = tune.start()
        worker.yielded.connect(seen.append)
    assert blocker.args[0] == user_models / "tuned"
    assert any(p.info.get("start") for p in seen)
    assert "validation score" in tune._status.value
