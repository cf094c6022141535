"""Track editing and the lineage tree in a real viewer (issue #17 parts 2 and 3): the planted
errors corrected through the edit widget score 1.0; labels and tracks change together, with
undo; pins survive re-clustering; the tree and the viewer select each other's cells."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from napari.layers import Tracks
from qtpy.QtCore import Qt

from napari_embedtrack._widgets import EditWidget, LineageWidget, TrackWidget
from napari_embedtrack._widgets._edit import pins_of
from napari_embedtrack._widgets._layers import reviewed_frames, tag_of
from napari_embedtrack._widgets._state import RunRecord
from napari_embedtrack.engine import edit as E
from napari_embedtrack.engine.cluster import ClusterParams
from napari_embedtrack.engine.modelfile import ModelCard
from napari_embedtrack.engine.pipeline import default_cluster_params
from napari_embedtrack.engine.progress import run
from napari_embedtrack.evaluation import iter_evaluate
from napari_embedtrack.io.tracks import tracks_to_lineage

TIMEOUT = 120_000
ENGINE_TESTS = Path(__file__).resolve().parents[1] / "engine"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"embedtrack_test_{name}", ENGINE_TESTS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def planted():
    return _load("planted").planted_movie(seed=3)


def planted_viewer(make_napari_viewer, planted):
    """The planted result shown by the track widget (as if its last run made it), with the
    edit and lineage widgets docked."""
    viewer = make_napari_viewer()
    viewer.add_image(planted.image, name="movie")
    track = TrackWidget(viewer)
    viewer.window.add_dock_widget(track)
    record = RunRecord(
        source="movie", outputs=planted.outputs, card=ModelCard(name="ideal"),
        params=ClusterParams(grid_spacing=1 / 255), first_frame=0, n_frames=12, is_2d=False,
        labels=planted.labels.astype(np.uint32), lineage=planted.lineage,
    )  # fmt: skip
    track.state.record = record
    track._show(record)
    edit = EditWidget(viewer)
    viewer.window.add_dock_widget(edit)
    return viewer, track, edit


def layer_lineage(viewer) -> np.ndarray:
    tracks = viewer.layers["tracks: movie"]
    return tracks_to_lineage(np.asarray(tracks.data), tracks.graph)


def test_planted_errors_corrected_in_the_viewer(qtbot, make_napari_viewer, planted):
    viewer, _, edit = planted_viewer(make_napari_viewer, planted)
    labels = viewer.layers["labels: movie"]
    assert edit._labels.value is labels and edit._tracks.value is viewer.layers["tracks: movie"]
    calls = {
        "relabel_mask": edit.relabel_mask,
        "join": lambda a, b: edit.join(a, b),
        "relabel_cell": lambda t, old, new: edit.relabel(t, old, new),
    }
    states = []

    def apply(name, *args):
        if name != "noop":
            states.append((labels.data.copy(), layer_lineage(viewer)))
            assert calls[name](*args) is not None, edit._status.value
            E.check_result(labels.data, layer_lineage(viewer))  # both layers agree
        return labels.data

    _load("planted_fixes").correct_planted(planted, apply)
    fixed, fixed_lineage = labels.data.copy(), layer_lineage(viewer)
    seg = {t: planted.truth[t] for t in range(12)}
    scores = run(iter_evaluate(fixed, fixed_lineage, planted.truth, planted.truth_lineage, seg))
    scores = scores.scores
    assert all(scores[k] == 1.0 for k in ("SEG", "DET", "TRA", "CT", "TF", "BC(1)", "CCA"))
    assert len(pins_of(viewer)["movie"]) > 0
    # the edited frames count as corrections (fine-tuning trains on them); the layer stays
    # the plugin's: re-runs update it and carry the edits over as pins
    changed = {t for t in range(12) if not np.array_equal(fixed[t], planted.labels[t])}
    corrected, _ = reviewed_frames(labels)
    assert changed and changed <= set(corrected)
    assert not tag_of(labels).get("edited")

    # undo goes back through every edit, both layers together; redo comes back
    assert edit._undo.enabled
    for want_labels, want_lineage in reversed(states):
        edit._undo.clicked.emit()
        assert np.array_equal(labels.data, want_labels)
        assert np.array_equal(layer_lineage(viewer), want_lineage)
    assert not edit._undo.enabled and np.array_equal(labels.data, planted.labels)
    for _ in states:
        edit.redo()
    assert np.array_equal(labels.data, fixed)
    assert np.array_equal(layer_lineage(viewer), fixed_lineage)

    # a refused edit changes nothing and says why in one line
    assert edit.join(1, 1) is None
    assert "cannot be joined with itself" in edit._status.value
    assert np.array_equal(labels.data, fixed)


def _dimmed(outputs, gt):
    out = []
    for o, lab in zip(outputs, gt, strict=True):
        seed = o.seediness.copy()
        seed[(lab % 2 == 1) & (lab > 0)] = 0.6
        out.append(dataclasses.replace(o, seediness=seed))
    return out


def test_pins_survive_reclustering(qtbot, make_napari_viewer, oracle, movie):
    gt, lineage = oracle.simplify_ground_truth(movie.labels, movie.lineage)
    card = ModelCard(crop_size=64, grid_spacing=1 / 63, min_size=10)
    outputs = _dimmed(oracle.ideal_outputs(gt, lineage, card.grid_spacing), gt)
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="movie")
    track = TrackWidget(viewer)
    viewer.window.add_dock_widget(track)
    track._seed.value, track._score.value, track._min_size.value = 0.5, 0.5, 5
    track.state.record = RunRecord(
        source="movie", outputs=outputs, card=card, params=default_cluster_params(card),
        first_frame=0, n_frames=6, is_2d=False, labels=np.zeros((6, 96, 96), np.uint32),
        lineage=np.zeros((0, 4), np.int64),
    )  # fmt: skip
    with qtbot.waitSignal(track.runner.done, timeout=TIMEOUT):
        track.recluster()
    labels = viewer.layers["labels: movie"]
    edit = EditWidget(viewer)
    viewer.window.add_dock_widget(edit)
    assert edit._labels.value is labels

    # pin a dim cell (odd truth id) and split a bright track (even id) at frame 3
    odd = next(int(i) for i in np.unique(gt[2]) if i % 2 == 1)
    dim_id = int(np.bincount(labels.data[2][gt[2] == odd]).argmax())
    dim_mask = labels.data[2] == dim_id
    viewer.dims.set_point(0, 2)
    labels.selected_label = dim_id
    assert edit._track.value == dim_id
    edit._pin.clicked.emit()
    even = next(int(r[0]) for r in lineage if r[0] % 2 == 0 and r[1] <= 2 and r[2] >= 4)
    bright = int(np.bincount(labels.data[3][gt[3] == even]).argmax())
    viewer.dims.set_point(0, 3)
    labels.selected_label = bright
    edit._split.clicked.emit()
    assert "split before frame 3" in edit._status.value
    before_split = labels.data[2][gt[2] == even][0]
    after_split = labels.data[3][gt[3] == even][0]
    assert before_split != after_split

    # raising the seediness threshold drops the dim cells, except the pinned one
    with qtbot.waitSignal(track.runner.done, timeout=TIMEOUT):
        track._seed.value = 0.7
    assert viewer.layers["labels: movie"] is labels  # updated in place
    new = labels.data
    assert np.all(new[3][(gt[3] % 2 == 1)] == 0)  # dim cells gone where not pinned
    assert np.array_equal(new[2] > 0, (gt[2] > 0) & ((gt[2] % 2 == 0) | dim_mask))
    assert np.all(new[2][dim_mask] == new[2][dim_mask][0]) and new[2][dim_mask][0] > 0
    assert new[2][gt[2] == even][0] != new[3][gt[3] == even][0]  # still split
    lin = layer_lineage(viewer)
    E.check_result(new, lin)
    assert lin[lin[:, 0] == new[3][gt[3] == even][0]][0][3] == 0  # without parent
    np.testing.assert_array_equal(track.state.record.full_labels(), new)
    assert not edit._undo.enabled  # a new result: the edits of the old one are not undone

    # without pins the re-clustering decides everything again
    edit._clear.clicked.emit()
    with qtbot.waitSignal(track.runner.done, timeout=TIMEOUT):
        track._seed.value = 0.65
    assert np.array_equal(labels.data > 0, (gt > 0) & (gt % 2 == 0))


def test_lineage_tree_and_viewer_select_each_other(qtbot, make_napari_viewer, planted):
    viewer, _, edit = planted_viewer(make_napari_viewer, planted)
    tree = LineageWidget(viewer)
    viewer.window.add_dock_widget(tree)
    viewer.window._qt_window.resize(1400, 900)
    viewer.window._qt_window.show()
    qtbot.wait(100)
    labels, tracks = viewer.layers["labels: movie"], viewer.layers["tracks: movie"]
    assert tree._tracks.value is tracks and tree._labels.value is labels
    n_tracks = len(planted.lineage)
    assert tree._status.value.startswith(f"{n_tracks} tracks")
    assert len(tree.nodes.data) == len(tracks.data)

    # clicking a node shows its frame, centred on the cell, and selects its label
    tid, frame = 12, 7
    pos = tree.node_position(tid, frame)
    qtbot.mouseClick(tree.plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert viewer.dims.current_step[0] == frame
    assert labels.selected_label == tid
    ys, xs = np.nonzero(labels.data[frame] == tid)
    assert np.allclose(viewer.scene.camera.center[-2:], (ys.mean(), xs.mean()))
    assert tree.selected == (tid, frame)
    assert list(tree.mark.data["x"]) == [frame]

    # selecting a label in the viewer marks its node; another frame moves the mark
    labels.selected_label = 3
    assert tree.selected == (3, frame)
    assert tree.mark.data["y"][0] == pytest.approx(tree.rows[3])
    viewer.dims.set_point(0, 2)
    assert tree.selected == (3, 2) and tree.now.value() == 2

    # an edit redraws the tree (a join: one track fewer)
    edit.join(3, 31)
    assert tree._status.value.startswith(f"{n_tracks - 1} tracks")
    assert 31 not in tree.rows and tree.spans[3] == (0, 11)
    assert isinstance(tracks, Tracks) and len(tree.nodes.data) == len(tracks.data)
