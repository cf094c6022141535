"""The fine-tune widget: trains a few steps, installs a loadable model, refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_embedtrack._widgets import FineTuneWidget, TrackWidget
from napari_embedtrack._widgets._layers import reviewed_frames, tag_of
from napari_embedtrack._widgets._models import registry
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.io.tracks import lineage_to_tracks

TIMEOUT = 180_000  # ms


@pytest.fixture
def setup(make_napari_viewer, movie, tiny_model):
    """Viewer with image, ground-truth labels and tracks, both widgets docked."""
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="movie")
    labels = viewer.add_labels(movie.labels, name="truth")
    data, graph, props = lineage_to_tracks(movie.labels, movie.lineage)
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


# --------------------------------------------------------------------------- the correction loop
@pytest.fixture
def loop(qtbot, make_napari_viewer, tiny_model):
    """A 10-frame movie tracked by the track widget with the tiny model, the fine-tune widget
    opened before the run (as a user would)."""
    from napari_embedtrack.synthetic import make_movie

    movie = make_movie(n_frames=10, shape=(96, 96))
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="movie")
    track = TrackWidget(viewer)
    tune = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(track)
    viewer.window.add_dock_widget(tune)
    start = tune._init.value
    track._model.value = tiny_model
    with qtbot.waitSignal(track.runner.done, timeout=TIMEOUT):
        assert track.run() is not None
    result = viewer.layers["labels: movie"]
    tune._labels.value = result
    return viewer, track, tune, movie, result, start


def correct(layer, truth, frames):
    """Paint the true labels into ``frames`` of ``layer`` as napari's label tools do (one
    undoable edit, a paint event)."""
    for t in frames:
        ys, xs = np.nonzero(layer.data[t] != truth[t])
        layer.data_setitem((np.full(ys.size, t), ys, xs), truth[t][ys, xs])


def test_finetune_defaults_follow_the_last_run(qtbot, loop, tiny_model):
    """Without a run the widget starts from a shipped model (not random weights); after a
    run, from that run's model; it trains on the corrected and confirmed frames only."""
    from napari_embedtrack._widgets._finetune import NEW_MODEL

    viewer, track, tune, movie, result, start = loop
    assert start != NEW_MODEL and start == registry.choices()[0][1]
    assert tune._init.value == tiny_model  # the model of the last run
    assert tune._reviewed_only.value  # a plugin result: predictions until checked
    assert tune._tracks.value is viewer.layers["tracks: movie"]
    assert tune._training_frames() == []
    assert tune.start() is None  # nothing corrected yet: refused with a hint
    assert "no corrected or confirmed frames" in tune._status.value

    correct(result, movie.labels, [6, 7])
    viewer.dims.set_current_step(0, 3)
    tune.toggle_current_frame()  # confirm frame 3 as it is
    viewer.dims.set_current_step(0, 7)
    tune.toggle_current_frame()  # a corrected frame: unmarked
    tune.toggle_current_frame()  # and confirmed again
    assert reviewed_frames(result) == ([6], [3, 7])
    assert tune._training_frames() == [3, 6, 7]
    assert "training frames: 3, 6-7" in tune._review.value
    assert tag_of(result)["edited"]  # the user's now: a re-run will not overwrite it
    assert tune._replay.value  # a plugin result: the other frames are the model's own
    tune._replay.value = False
    assert tune._replay_frames(result.data, [3, 6, 7]) == []
    assert "replayed" not in tune._review.value
    tune._replay.value = True

    assert "tip: frames spread" not in tune._review.value  # frames 3-7 of 0-9

    viewer.dims.set_current_step(0, 3)
    tune.toggle_current_frame()  # 3 and 7 forgotten: frame 6 alone of 0-9 is bunched
    viewer.dims.set_current_step(0, 7)
    tune.toggle_current_frame()
    assert "training frames: 6\n" in tune._review.value
    assert "tip: frames spread over the movie" in tune._review.value
    viewer.dims.set_current_step(0, 0)
    tune.toggle_current_frame()  # and frame 0 confirmed: spread again
    assert "tip: frames spread" not in tune._review.value
    assert reviewed_frames(result) == ([6], [0])

    tune._reviewed_only.value = False  # every labelled frame of the range
    tune._first.value = 5
    assert tune._training_frames() == [t for t in range(5, 10) if result.data[t].any()]

    # a model the user picks stays, through later runs
    other = next(p for _, p in registry.choices() if p != tiny_model)
    tune._init.value = other
    track._first.value = track._last.value = 0
    with qtbot.waitSignal(track.runner.done, timeout=TIMEOUT):
        track.run()
    assert tune._init.value == other


def test_correction_loop(qtbot, loop, user_models, tiny_model):
    """Fine-tune from the run's model on the corrected frames, SEG/TRA before and after on
    corrected frames held out, then re-run the movie with the new model."""
    viewer, track, tune, movie, result, _ = loop
    corrected = [6, 7, 8, 9]
    correct(result, movie.labels, corrected)
    tune._steps.value, tune._batch.value, tune._device.value = 2, 1, "cpu"
    tune._name.value = "tuned"
    assert not tune._rerun.enabled
    with qtbot.waitSignal(tune.runner.done, timeout=TIMEOUT) as blocker:
        assert tune.start() is not None
    path = blocker.args[0]
    assert path == user_models / "tuned"
    card = load_model(path).card
    assert card.training["init"] == str(tiny_model)  # started from the run's model
    assert tune.started_from == tiny_model
    assert tune.training_frames == corrected
    # the run's own results replayed: pairs away from the corrections (frames 5-9), where
    # the result has cells
    pairs = [(0, 1), (3, 4)]
    data = result.data
    replayed = [f for a, b in pairs if data[a].any() and data[b].any() for f in (a, b)]
    assert replayed and tune.replayed_frames == replayed
    # trained on where the start segments the held-out corrections well, else left out
    if card.validation["start"]["SEG_plain"] >= 0.6:
        assert card.training["replayed_frames"] == {"tuned-replay": replayed}
    else:
        assert "replayed_frames" not in card.training
    assert card.training["replay"] in tune._status.value
    assert f"the model's results replayed: {len(replayed)} frames" in tune._review.value
    scores = tune.scores
    assert scores["held_out"] and scores["frames"] == [8, 9]  # the last fifth of the movie
    for m in ("SEG_plain", "TRA_plain", "CT_plain"):
        assert 0 <= scores["before"][m] <= 1 and 0 <= scores["after"][m] <= 1
    assert scores["before"]["SEG_plain"] == card.validation["start"]["SEG_plain"]
    text = tune._scores.value
    assert "held-out labelled frames 8-9" in text and "SEG " in text and " -> " in text
    assert "CT " in text
    assert "unequal brightness" in text
    assert "SEG_uneven" in scores["after"]

    # re-run the movie with the new model: a new result; the corrections stay
    kept = result.data.copy()
    assert tune._rerun.enabled
    with qtbot.waitSignal(track.runner.done, timeout=TIMEOUT):
        assert tune.rerun() is not None
    assert track.state.record.model_path == path
    assert track._model.value == path.resolve()
    assert track.state.record.frame_range == (0, 9)
    own = [ly for ly in viewer.layers if (tag_of(ly) or {}).get("kind") == "labels"]
    assert len(own) == 2 and own[0] is result and np.array_equal(result.data, kept)
    assert tag_of(own[1])["model"] == str(path)
    # the next round starts from the new model once its result is the labels corrected
    assert tune._init.value == tiny_model  # the labels picked were made by the tiny model
    tune._labels.value = own[1]
    assert tune._init.value == path.resolve()


def test_rerun_opens_the_track_widget(qtbot, make_napari_viewer, movie, tiny_model):
    """Re-running with a fine-tuned model where no track widget is open docks one and
    tracks the fine-tune widget's image with that model, over the whole movie."""
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="movie")
    tune = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(tune)
    assert tune.rerun() is None  # nothing trained yet
    tune.new_model = tiny_model  # as after a fine-tuning run
    worker = tune.rerun()
    assert worker is not None
    track = tune.session.track_widget
    assert isinstance(track, TrackWidget)
    qtbot.waitUntil(lambda: not track.runner.running, timeout=TIMEOUT)
    assert track.state.record.model_path == tiny_model
    assert track.state.record.frame_range == (0, 5)
    assert "labels: movie" in viewer.layers
