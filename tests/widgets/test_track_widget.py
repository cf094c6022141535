"""The track widget in a real viewer: run, cancel, re-cluster, inspection layers, messages."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from napari.layers import Image, Labels, Tracks, Vectors

from napari_embedtrack._widgets import TrackWidget
from napari_embedtrack._widgets._layers import reviewed_frames, tag_of
from napari_embedtrack._widgets._state import RunRecord
from napari_embedtrack.engine.modelfile import ModelCard
from napari_embedtrack.engine.outputs import FrameOutput
from napari_embedtrack.engine.pipeline import default_cluster_params

TIMEOUT = 120_000  # ms; the CPU is shared with other jobs


@pytest.fixture
def setup(make_napari_viewer, movie):
    """A viewer with the movie as layer "movie" and a docked track widget."""

    def make(image=None, name="movie"):
        viewer = make_napari_viewer()
        layer = viewer.add_image(movie.image if image is None else image, name=name)
        widget = TrackWidget(viewer)
        viewer.window.add_dock_widget(widget)
        return viewer, widget, layer

    return make


def run(qtbot, widget):
    with qtbot.waitSignal(widget.runner.done, timeout=TIMEOUT) as blocker:
        assert widget.run() is not None
    return blocker.args[0]


def own_layers(viewer, kind):
    return [ly for ly in viewer.layers if (tag_of(ly) or {}).get("kind") == kind]


def assert_tracks_match_labels(labels: np.ndarray, tracks: Tracks) -> None:
    data = np.asarray(tracks.data)
    for t, frame in enumerate(labels):
        ids = set(np.unique(frame).tolist()) - {0}
        assert ids == set(data[data[:, 1] == t, 0].astype(int).tolist()), f"frame {t}"


def test_track_end_to_end(qtbot, setup, tiny_model):
    viewer, widget, _ = setup()
    widget._model.value = tiny_model
    widget._inspect.value = True
    record = run(qtbot, widget)

    assert record is widget.state.record and record.complete
    labels = viewer.layers["labels: movie"]
    assert isinstance(labels, Labels)
    assert labels.data.shape == (6, 96, 96)
    assert labels.metadata["embedtrack"]["source"] == "movie"
    assert labels.metadata["embedtrack"]["kind"] == "labels"
    assert labels.data.max() > 0
    tracks = viewer.layers["tracks: movie"]
    assert isinstance(tracks, Tracks)
    assert_tracks_match_labels(labels.data, tracks)
    for kind in ("seediness", "y bandwidth", "x bandwidth"):
        layer = viewer.layers[f"{kind}: movie"]
        assert isinstance(layer, Image) and layer.data.shape == (6, 96, 96)
    for kind in ("offsets", "track offsets"):
        vectors = viewer.layers[f"{kind}: movie"]
        assert isinstance(vectors, Vectors)
        assert vectors.data.ndim == 3 and vectors.data.shape[1:] == (2, 3)
        assert np.all(vectors.data[:, 1, 0] == 0)  # arrows stay in their frame
    # choosing the model resets the thresholds; when that lands after the run, the result is
    # re-clustered once more: either way the status ends on the result's summary
    qtbot.waitUntil(lambda: "tracks" in widget._status.value, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=TIMEOUT)
    assert widget._run.enabled and not widget._cancel.enabled

    # bottom to top: the input, the inspection images (additive, below the labels, which
    # they would hide otherwise), the result, the arrows
    assert [ly.name for ly in viewer.layers] == [
        "movie", "seediness: movie", "y bandwidth: movie", "x bandwidth: movie",
        "labels: movie", "tracks: movie", "offsets: movie", "track offsets: movie",
    ]  # fmt: skip
    assert viewer.layers["seediness: movie"].blending == "additive"
    # the layer list shows the start of a name: every plugin layer differs there
    names = [ly.name for ly in viewer.layers if tag_of(ly)]
    assert len({name[:9] for name in names}) == len(names)
    assert labels.metadata["embedtrack"]["model"] == str(tiny_model)

    widget._inspect.value = False  # removes the inspection layers, keeps the result
    assert [ly.name for ly in viewer.layers] == ["movie", "labels: movie", "tracks: movie"]


def test_rerun_replaces_own_layers_only(qtbot, setup, tiny_model):
    viewer, widget, _ = setup()
    user = viewer.add_labels(np.zeros((6, 96, 96), np.uint8), name="labels: movie")
    widget._model.value = tiny_model
    widget._first.value, widget._last.value = 1, 2
    run(qtbot, widget)
    (own,) = own_layers(viewer, "labels")
    assert own is not user and own.name != user.name
    assert own.data.shape == (6, 96, 96)
    assert own.data[[0, 3, 4, 5]].max() == 0  # outside the frame range
    n_layers = len(viewer.layers)

    widget._first.value, widget._last.value = 3, 4
    run(qtbot, widget)
    assert own_layers(viewer, "labels") == [own]  # updated in place
    assert len(viewer.layers) == n_layers
    assert own.data[[0, 1, 2, 5]].max() == 0
    (tracks,) = own_layers(viewer, "tracks")
    assert set(np.unique(tracks.data[:, 1])) <= {3, 4}
    assert_tracks_match_labels(own.data, tracks)
    assert user.data.max() == 0 and user.name == "labels: movie"


def test_edited_labels_become_the_users(qtbot, setup, tiny_model):
    viewer, widget, _ = setup()
    widget._model.value = tiny_model
    widget._first.value, widget._last.value = 0, 1
    run(qtbot, widget)
    (own,) = own_layers(viewer, "labels")
    own.paint((1, 10, 10), 999)
    assert tag_of(own)["edited"]
    assert reviewed_frames(own) == ([1], [])  # the frame corrected, for fine-tuning
    run(qtbot, widget)
    labels = own_layers(viewer, "labels")
    assert len(labels) == 2 and labels[0] is own
    assert own.data[1, 10, 10] == 999

    # inspection layers asked for later: below the newest result, and the edited labels
    # are not duplicated
    widget._inspect.value = True
    assert len(own_layers(viewer, "labels")) == 2
    names = [ly.name for ly in viewer.layers]
    assert names.index("seediness: movie") < names.index(labels[1].name)
    assert names.index("seediness: movie") < names.index(own.name)


def test_cancel_keeps_a_consistent_partial_result(qtbot, setup, tiny_model):
    viewer, widget, _ = setup()
    widget._model.value = tiny_model
    with qtbot.waitSignal(widget.runner.done, timeout=TIMEOUT):
        worker = widget.run()
        worker.yielded.connect(lambda p: p.info.get("frame") == 0 and widget.cancel())
    record = widget.state.record
    assert not record.complete and 1 <= record.n_done < 6
    labels = viewer.layers["labels: movie"]
    assert labels.data.shape == (6, 96, 96)
    assert labels.data[record.n_done :].max() == 0
    assert record.lineage[:, 2].max() < record.n_done
    if "tracks: movie" in viewer.layers:
        assert_tracks_match_labels(labels.data, viewer.layers["tracks: movie"])
    # the summary, not the last progress message (napari's progress bar processes pending
    # events while it updates, so the result could land in the middle of a progress record)
    assert "cancelled: frames 0-" in widget._status.value
    assert widget._run.enabled and not widget._cancel.enabled


def _dimmed(outputs: list[FrameOutput], gt: np.ndarray) -> list[FrameOutput]:
    """Ideal outputs with seediness 0.6 instead of 1 in cells with an odd id."""
    out = []
    for o, lab in zip(outputs, gt, strict=True):
        seed = o.seediness.copy()
        seed[(lab % 2 == 1) & (lab > 0)] = 0.6
        out.append(dataclasses.replace(o, seediness=seed))
    return out


def test_recluster_from_cached_outputs(qtbot, setup, oracle, movie):
    gt, lineage = oracle.simplify_ground_truth(movie.labels, movie.lineage)
    assert np.count_nonzero(lineage[:, 3]) >= 2  # a division
    card = ModelCard(crop_size=64, grid_spacing=1 / 63, min_size=10)
    outputs = _dimmed(oracle.ideal_outputs(gt, lineage, card.grid_spacing), gt)
    viewer, widget, _ = setup()
    widget._seed.value, widget._score.value, widget._min_size.value = 0.5, 0.5, 5
    widget.state.record = RunRecord(
        source="movie", outputs=outputs, card=card, params=default_cluster_params(card),
        first_frame=0, n_frames=6, is_2d=False, labels=np.zeros((6, 96, 96), np.uint32),
        lineage=np.zeros((0, 4), np.int64),
    )  # fmt: skip
    with qtbot.waitSignal(widget.runner.done, timeout=TIMEOUT):
        widget.recluster()
    labels = viewer.layers["labels: movie"]
    tracks = viewer.layers["tracks: movie"]
    record = widget.state.record
    oracle.assert_same_tracking(labels.data, record.lineage, gt, lineage)
    assert_tracks_match_labels(labels.data, tracks)
    parents = [p for c, (p,) in tracks.graph.items()]
    assert any(parents.count(p) == 2 for p in parents), tracks.graph  # the division

    # a higher seediness threshold drops the dimmed (odd) cells; the timer triggers it
    with qtbot.waitSignal(widget.runner.done, timeout=TIMEOUT):
        widget._seed.value = 0.7
    assert widget.state.record.params.seed_threshold == pytest.approx(0.7)
    kept = labels.data > 0
    assert kept.any() and not np.array_equal(kept, gt > 0)
    assert np.all(gt[kept] % 2 == 0)
    assert np.array_equal(kept, (gt > 0) & (gt % 2 == 0))
    assert_tracks_match_labels(labels.data, tracks)


def test_single_image_gives_segmentation_only(qtbot, setup, tiny_model, movie):
    viewer, widget, _ = setup(image=movie.image[0], name="frame")
    widget._model.value = tiny_model
    assert not widget._first.enabled
    run(qtbot, widget)
    labels = viewer.layers["labels: frame"]
    assert labels.data.shape == (96, 96)
    assert "tracks: frame" not in viewer.layers


def test_bad_inputs_give_messages(qtbot, make_napari_viewer, tiny_model, tmp_path, errors, movie):
    viewer = make_napari_viewer()
    widget = TrackWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._model.value = tiny_model
    assert widget.run() is None
    assert "choose an image layer" in errors()[-1]

    widget._image.value = viewer.add_image(np.zeros((2, 3, 32, 32)), name="4d")
    assert widget.run() is None
    assert "expected a (T, Y, X) movie" in errors()[-1]

    widget._image.value = viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True, name="c")
    assert widget.run() is None
    assert "RGB" in errors()[-1]

    assert not widget.load_model_folder(tmp_path)
    assert "not a model folder" in errors()[-1]

    bad = movie.image.copy()
    bad[0, 5, 5] = np.nan
    widget._image.value = viewer.add_image(bad, name="nan")
    run(qtbot, widget)
    assert "NaN" in errors()[-1] and "frame 0" in errors()[-1]
    assert widget.state.record is None and "labels: nan" not in viewer.layers
    assert widget._run.enabled


def test_long_results_are_shown_lazily_from_disk(qtbot, setup, tiny_model, movie):
    """Issue #16: a dask movie is read frame by frame, the network outputs sit in an on-disk
    store, labels beyond ``lazy_bytes`` are a zarr array in the run folder (napari reads it
    lazily, painting writes into it), and re-clustering reads the store: the labels equal
    those of a run held in memory."""
    import dask.array as da

    from napari_embedtrack.io.zarr_store import OutputStore

    lazy_movie = da.from_array(movie.image, chunks=(1, *movie.image.shape[1:]))
    viewer, widget, _ = setup(image=lazy_movie, name="movie")
    widget._model.value = tiny_model
    widget._first.value, widget._last.value = 1, 4
    in_memory = run(qtbot, widget)
    assert isinstance(in_memory.outputs, OutputStore) and len(in_memory.outputs) == 4
    want = np.asarray(viewer.layers["labels: movie"].data).copy()

    widget.state.lazy_bytes = 0
    lazy = run(qtbot, widget)
    data = viewer.layers["labels: movie"].data
    assert lazy.labels_store is not None and not isinstance(data, np.ndarray)
    assert data.shape == (6, 96, 96)
    np.testing.assert_array_equal(np.asarray(data[:]), want)
    np.testing.assert_array_equal(lazy.lineage, in_memory.lineage)
    assert_tracks_match_labels(np.asarray(data[:]), viewer.layers["tracks: movie"])
    assert not (in_memory.run_dir / "outputs.zarr").exists()  # the older run's outputs left

    with qtbot.waitSignal(widget.runner.done, timeout=TIMEOUT):
        widget._min_size.value = widget._min_size.value + 20  # re-cluster from the store
    reclustered = widget.state.record
    assert reclustered.labels_store is not None and reclustered.run_dir == lazy.run_dir
    data = np.asarray(viewer.layers["labels: movie"].data[:])
    assert_tracks_match_labels(data, viewer.layers["tracks: movie"])
    from napari_embedtrack.engine.pipeline import retrack
    from napari_embedtrack.engine.progress import run as drive

    again = drive(retrack(list(reclustered.outputs), reclustered.params))  # in memory
    np.testing.assert_array_equal(data[1:5], again.labels)
    assert not data[[0, 5]].any()


def test_smoothing_defaults_to_the_card_and_reaches_the_network(qtbot, setup, tiny_model, movie):
    """The smoothing box takes the card's pre-filter; a run sees the frames smoothed by the
    box's value: its outputs are the engine's with that ``smooth_sigma``, not the card's."""
    import torch

    from napari_embedtrack.engine.modelfile import load_model, save_model
    from napari_embedtrack.engine.predict import iter_outputs

    loaded = load_model(tiny_model, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():  # random heads of a random net: outputs that follow the input
        for head in (loaded.net.seg_decoder.output_conv, loaded.net.track_decoder.output_conv):
            head.weight.normal_(0, 0.01)
    card = dataclasses.replace(loaded.card, name="tiny smooth", smooth_sigma=1.5)
    smooth_model = save_model(tiny_model.parent / "tiny-smooth", loaded.net, card).resolve()
    _, widget, _ = setup()
    widget._model.value = smooth_model
    assert widget._smooth.value == 1.5
    widget._model.value = tiny_model
    assert widget._smooth.value == 0.0
    widget._model.value = smooth_model

    def engine(sigma):
        kw = card.input_kwargs | {"smooth_sigma": sigma, "tta": False}
        return np.stack([o.offsets for o in iter_outputs(loaded.net, movie.image, **kw)])

    seen = {}
    for sigma in (1.5, 0.0):
        widget._smooth.value = sigma
        record = run(qtbot, widget)
        seen[sigma] = np.stack([o.offsets for o in record.outputs]).astype(np.float32)
        np.testing.assert_allclose(seen[sigma], engine(sigma), atol=2e-3)
    assert np.abs(seen[1.5] - seen[0.0]).max() > 0.01  # the box changed what the network saw
    assert load_model(smooth_model).card.smooth_sigma == 1.5  # the card itself is unchanged


def test_cell_diameter_sets_the_model_to_the_movies_cells(qtbot, setup):
    """Cell diameter "auto" (the default): on the bundled GOWT1 clip at half its size (cells
    ~28 px, the model's ~60) the run sets the model to the cells it measures, and the
    minimum size follows; a typed diameter is used as it is."""
    from skimage.transform import resize

    from napari_embedtrack.engine.modelfile import SHIPPED_DIR
    from napari_embedtrack.io import ctc

    clip = SHIPPED_DIR.parent / "data/gowt1_clip/01"
    frames = ctc.read_movie(clip)[:3].astype(np.float32)
    small = np.stack([resize(f, (256, 256), anti_aliasing=True, preserve_range=True)
                      for f in frames])  # fmt: skip
    _, widget, _ = setup(image=small)
    widget._model.value = (SHIPPED_DIR / "Fluo-N2DH-GOWT1").resolve()
    assert widget._diameter.value == 0 and widget._diameter.native.text() == "auto"
    trained_min = widget._min_size.value
    record = run(qtbot, widget)
    assert record.cell_diameter is not None and 25 < record.cell_diameter < 38
    assert record.model_cell_diameter == pytest.approx(60.2, abs=0.1)
    assert record.card.scale == pytest.approx(60.2 / record.cell_diameter, rel=0.01)
    assert record.params.min_size < trained_min / 2
    assert widget._min_size.value == record.params.min_size  # the box shows what was used
    assert "cells ~" in widget._status.value and "(model: 60 px)" in widget._status.value
    widget._diameter.value = 40
    record = run(qtbot, widget)
    assert record.cell_diameter == pytest.approx(40, rel=0.01)
