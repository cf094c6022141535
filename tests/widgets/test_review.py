"""The review widget in a real viewer (issue #17): the review queue ranks planted errors at
the top and jumps to them; the evaluation shows what ``embedtrack evaluate`` prints and
lists the error cells."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from napari.layers import Labels, Tracks
from napari.utils.colormaps import DirectLabelColormap

from napari_embedtrack._widgets import ReviewWidget, TrackWidget
from napari_embedtrack._widgets._review import QUEUE
from napari_embedtrack._widgets._state import RunRecord
from napari_embedtrack.cli import main
from napari_embedtrack.engine.cluster import ClusterParams
from napari_embedtrack.engine.modelfile import ModelCard
from napari_embedtrack.io import ctc

TIMEOUT = 120_000  # ms; the CPU is shared with other jobs
PLUGIN = "napari-embedtrack"
NEAR = 30.0


@pytest.fixture(scope="module")
def planted():
    """``tests/engine/planted.py``'s movie with a merge, a split, a broken link and a false
    division, and the near-ideal network outputs of the true movie."""
    path = Path(__file__).resolve().parents[1] / "engine" / "planted.py"
    spec = importlib.util.spec_from_file_location("embedtrack_test_planted", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclass looks itself up there)
    spec.loader.exec_module(module)
    return module.planted_movie(seed=3)


def about(item, errors) -> list[str]:
    return [
        name
        for name, t, y, x in errors
        if abs(item.frame - t) <= 1 and np.hypot(item.y - y, item.x - x) < NEAR
    ]


def tracked_viewer(make_napari_viewer, planted):
    """A viewer with the movie and the planted result shown by the track widget, as if its
    last run had produced them (its kept outputs are the near-ideal ones)."""
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
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review)
    return viewer, review


def test_review_queue_ranks_planted_errors(qtbot, make_napari_viewer, planted, tmp_path):
    viewer, review = tracked_viewer(make_napari_viewer, planted)
    labels, tracks = viewer.layers["labels: movie"], viewer.layers["tracks: movie"]
    assert review._labels.value is labels and review._tracks.value is tracks
    with qtbot.waitSignal(review.runner.done, timeout=TIMEOUT):
        assert review.find_suspects() is not None
    assert "network's outputs" in review._status.value

    queue = review.queue
    names = {e[0] for e in planted.errors}
    first: dict[str, int] = {}
    for k, item in enumerate(queue):
        for name in about(item, planted.errors):
            first.setdefault(name, k)
    assert set(first) == names and max(first.values()) < 8, first
    assert all(about(item, planted.errors) for item in queue[:4])
    table = review._table
    assert table.rowCount() == len(queue)
    assert table.item(0, 4).text() == queue[0].reason
    assert float(table.item(0, 3).text()) == pytest.approx(queue[0].confidence, abs=0.005)

    # clicking an item shows its frame, centred on it, zoomed in
    zoom = viewer.scene.camera.zoom
    review.select(2)
    item = queue[2]
    assert viewer.dims.current_step[0] == item.frame
    assert np.allclose(viewer.scene.camera.center[-2:], (item.y, item.x))
    assert viewer.scene.camera.zoom > zoom
    row = next(k for k, s in enumerate(queue) if s.kind == "cell")
    review.select(row)  # a cell: its label is selected, ready to be fixed
    assert labels.selected_label == queue[row].label
    review.select(2)

    # decisions: marked items go to the end and stay marked in a new search
    review.mark("correct")
    assert review.queue[-1].key == item.key
    assert table.item(len(queue) - 1, 5).text() == "correct"
    assert labels.metadata[QUEUE]["correct"] == [list(item.key)]
    with qtbot.waitSignal(review.runner.done, timeout=TIMEOUT):
        review.find_suspects()
    assert review.queue[-1].key == item.key
    assert review._table.item(len(queue) - 1, 5).text() == "correct"

    # colour by confidence: tracks per cell, labels per track (the worst track is red)
    assert {"confidence", "link_confidence"} <= set(tracks.properties)
    before = labels.colormap
    review._colour.value = True
    assert tracks.color_by == "confidence"
    assert isinstance(labels.colormap, DirectLabelColormap)
    worst = min(review.report.track_confidence().items(), key=lambda kv: kv[1])[0]
    red, green = labels.colormap.map(np.array([worst]))[0][:2]
    assert red > 0.8 and green < 0.3
    assert labels.colormap.map(np.array([0]))[0][3] == 0  # background stays clear
    assert labels.colormap.map(np.array([60000]))[0][3] == 1  # a new label stays visible
    review._colour.value = False
    assert tracks.color_by == "track_id" and labels.colormap is before

    # the confidence goes into a GEFF export of the layers
    pytest.importorskip("geff")
    from napari_embedtrack.io.geff import read_geff

    viewer.layers.selection = {labels, tracks}
    viewer.layers.save(str(tmp_path / "r.geff"), selected=True, plugin=PLUGIN)
    nodes = read_geff(tmp_path / "r.geff").nodes
    np.testing.assert_allclose(
        np.sort(nodes["confidence"]), np.sort(review.report.node_confidence())
    )


def test_evaluation_matches_cli(qtbot, make_napari_viewer, planted, tmp_path, capsys):
    gt_dir, res_dir = tmp_path / "01_GT", tmp_path / "01_RES"
    seg = {t: planted.truth[t] for t in (2, 5, 9)}
    ctc.write_ground_truth(gt_dir, planted.truth, planted.truth_lineage, seg=seg)
    ctc.write_results(res_dir, planted.labels, planted.lineage)
    assert main(["evaluate", "--gt", str(gt_dir), "--res", str(res_dir)]) == 0
    cli_scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    viewer = make_napari_viewer()
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review)
    gt_layers = viewer.open(str(gt_dir), plugin=PLUGIN)
    res_layers = viewer.open(str(res_dir), plugin=PLUGIN)
    review._labels.value = res_layers[0]
    # picked by name: the result's tracks, the truth with its tracks and SEG masks
    assert review._tracks.value is res_layers[1]
    assert review._gt.value is gt_layers[0]
    assert review._gt_tracks.value is gt_layers[1] and review._gt_seg.value is gt_layers[2]
    with qtbot.waitSignal(review.runner.done, timeout=TIMEOUT):
        assert review.evaluate() is not None
    assert review.scores == cli_scores
    assert 0 < cli_scores["TRA"] < 1 and "SEG" in cli_scores
    assert f"TRA {cli_scores['TRA']:.3f}" in review._scores.value

    # the error cells are in the queue, first
    errors = [(s.kind, s.frame) for s in review.queue]
    assert sorted(errors) == [("link-error", 5), ("link-error", 8), ("merge", 3), ("split", 6)]
    review.select(0)
    assert viewer.dims.current_step[0] == review.queue[0].frame
    # then the suspects follow the errors
    with qtbot.waitSignal(review.runner.done, timeout=TIMEOUT):
        review.find_suspects()
    assert [s.confidence for s in review.queue[:4]] == [0.0] * 4
    assert len(review.queue) > 4 and review.queue[4].kind not in ("merge", "split")
    assert "geometric cues only" in review._status.value  # no outputs for files


def test_bad_input_messages(qtbot, make_napari_viewer, errors):
    viewer = make_napari_viewer()
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review)
    assert review.find_suspects() is None
    assert review.evaluate() is None
    assert "choose the labels layer" in review._status.value
    viewer.add_labels(np.zeros((3, 16, 16), np.uint8), name="result")
    review._labels.value = viewer.layers["result"]
    assert review.evaluate() is None
    assert review._status.value == "choose a ground-truth labels layer to evaluate against"
    truth = viewer.add_labels(np.zeros((4, 16, 16), np.uint8), name="truth")
    review._gt.value = truth
    assert review.evaluate() is None
    assert "has shape (4, 16, 16) but the labels have shape (3, 16, 16)" in review._status.value
    assert all("\n" not in m for m in errors()) and len(errors()) == 4
    # labels without cells: an empty queue, no error
    with qtbot.waitSignal(review.runner.done, timeout=TIMEOUT):
        review.find_suspects()
    assert review.queue == [] and review._table.rowCount() == 0
    assert isinstance(viewer.layers["result"], Labels)
    assert not any(isinstance(ly, Tracks) for ly in viewer.layers)
