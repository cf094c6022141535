"""Make the screenshots of docs/user-guide.md in a real napari viewer.

Run under a display (Xvfb on a server)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py [--skip-finetune]
    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py --review-only
    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py --edit-only

It opens the synthetic sample, docks the track widget and runs it. With a shipped model
(``src/napari_embedtrack/models``) the pictures show that model's result. Without one, the
widget is run with a random-weight model on two frames (to show a real run), and the layers
are then filled by re-clustering *ideal* network outputs made from the ground truth
(``tests/engine/oracle.py``), so the pictures show what a good model's output looks like;
the script prints which of the two it did. Then the fine-tune widget trains a few steps for
the loss plot. Last, the review widget (``review-widget.png``) on a synthetic movie with
planted errors (``tests/engine/planted.py``: a merge, a split, a broken link and a false
division in the result; the track widget holds near-ideal network outputs of the true
movie), after *Find suspects* and *Evaluate* against the truth opened from a CTC folder.
Then the edit and lineage tree widgets (``edit-widget.png``) on the same movie, its planted
errors being corrected with the edit widget (``tests/engine/planted_fixes.py``).
Pictures go to ``docs/images/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import napari
import numpy as np
import torch
from qtpy.QtCore import QEventLoop, QRect, QTimer

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
PLUGIN = "napari-embedtrack"


def wait(signal, timeout_s: float = 900) -> None:
    """Run the Qt event loop until ``signal`` fires."""
    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()


def settle(ms: int = 500) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def random_model(folder: Path) -> Path:
    from napari_embedtrack.engine.model import build_model
    from napari_embedtrack.engine.modelfile import ModelCard, save_model

    torch.manual_seed(0)
    card = ModelCard(name="random-demo", crop_size=64, grid_spacing=1 / 63, min_size=10)
    return save_model(folder / "random-demo", build_model(), card).resolve()


def oracle_record(widget, truth_labels, truth_lineage):
    """A run record holding ideal outputs made from the ground truth."""
    spec = importlib.util.spec_from_file_location("oracle", ROOT / "tests/engine/oracle.py")
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    from napari_embedtrack._widgets._state import RunRecord
    from napari_embedtrack.engine.modelfile import ModelCard
    from napari_embedtrack.engine.pipeline import default_cluster_params

    card = ModelCard(name="ideal", crop_size=64, grid_spacing=1 / 63, min_size=10)
    outputs = oracle.ideal_outputs(truth_labels, truth_lineage, card.grid_spacing)
    n = truth_labels.shape[0]
    return RunRecord(
        source="synthetic movie", outputs=outputs, card=card,
        params=default_cluster_params(card), first_frame=0, n_frames=n, is_2d=False,
        labels=np.zeros(truth_labels.shape, np.uint32), lineage=np.zeros((0, 4), np.int64),
    )  # fmt: skip


def grab(widget, name: str) -> None:
    """Save a dock widget's contents (without the empty space below them)."""
    native = widget.native
    height = min(native.height(), native.sizeHint().height())
    native.grab(QRect(0, 0, native.width(), height)).save(str(IMAGES / name))


def camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-finetune", action="store_true", help="no fine-tune picture")
    parser.add_argument("--review-only", action="store_true", help="only the review picture")
    parser.add_argument("--edit-only", action="store_true", help="only the edit/tree picture")
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="embedtrack-shots-"))
    os.environ["EMBEDTRACK_MODELS"] = str(tmp)
    if args.review_only:
        return review_shot(tmp)
    if args.edit_only:
        return edit_shot()
    from napari_embedtrack.engine.modelfile import list_models

    # the pictures show the SIM+ model (the synthetic sample looks like its data)
    shipped = sorted(
        (m for m in list_models() if m.shipped), key=lambda m: m.name != "Fluo-N2DH-SIM+"
    )
    model = shipped[0].path if shipped else random_model(tmp)

    viewer = napari.Viewer(title="napari-embedtrack")
    viewer.window._qt_window.resize(1500, 950)
    image, truth, truth_tracks = viewer.open_sample(PLUGIN, "synthetic")
    _, track = viewer.window.add_plugin_dock_widget(PLUGIN, "Track cells (EmbedTrack)")
    track._model.value = model
    track._inspect.value = True
    if not shipped:
        track._last.value = 1
    track.run()
    wait(track.runner.done)
    if not shipped:
        print("no shipped model: showing a re-clustering of ideal outputs (see docstring)")
        track.state.record = oracle_record(track, truth.data, _lineage(truth_tracks))
        track._last.value = image.data.shape[0] - 1
        track.recluster()
        wait(track.runner.done)
        track._show(track.state.record)
    else:
        print(f"shipped model {shipped[0].name}")
    t, (y, x) = _first_division(truth_tracks)
    viewer.dims.set_current_step(0, t)
    for layer in viewer.layers:
        layer.visible = layer.name in (
            "synthetic movie", "labels: synthetic movie",
            "tracks: synthetic movie",
        )  # fmt: skip
    viewer.reset_view()
    settle()
    viewer.screenshot(str(IMAGES / "track-widget.png"), canvas_only=False)

    for layer in viewer.layers:
        layer.visible = layer.name in (
            "synthetic movie", "labels: synthetic movie",
            "seediness: synthetic movie", "offsets: synthetic movie",
        )  # fmt: skip
    labels = viewer.layers["labels: synthetic movie"]
    labels.contour, labels.opacity = 1, 1.0
    viewer.layers["seediness: synthetic movie"].opacity = 0.5
    viewer.layers["offsets: synthetic movie"].edge_width = 1.5
    camera(viewer).center = (y, x)
    camera(viewer).zoom = 5.0
    settle()
    viewer.screenshot(str(IMAGES / "inspection.png"), canvas_only=True)
    grab(track, "track-panel.png")
    if args.skip_finetune:
        viewer.close()
        return 0

    _, tune = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune EmbedTrack")
    tune._labels.value = viewer.layers["labels: synthetic movie"]
    tune._tracks.value = viewer.layers["tracks: synthetic movie"]
    tune._reviewed_only.value = False  # the picture trains on every frame of the result
    tune._init.value = model
    tune._steps.value, tune._batch.value, tune._device.value = 30, 1, "cpu"
    tune._name.value = "synthetic-finetuned"
    tune.start()
    wait(tune.runner.done)
    settle()
    grab(tune, "finetune-widget.png")
    viewer.close()
    review_shot(tmp)
    edit_shot()
    print("wrote", *sorted(p.name for p in IMAGES.glob("*.png")))
    return 0


def review_shot(tmp: Path) -> int:
    """The review widget on a movie with planted errors, after Find suspects and Evaluate,
    the merged cell selected, labels and tracks coloured by confidence."""
    spec = importlib.util.spec_from_file_location(
        "embedtrack_planted", ROOT / "tests/engine/planted.py"
    )
    planted_mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = planted_mod
    spec.loader.exec_module(planted_mod)
    planted = planted_mod.planted_movie(seed=3)
    from napari_embedtrack._widgets._state import RunRecord
    from napari_embedtrack.engine.cluster import ClusterParams
    from napari_embedtrack.engine.modelfile import ModelCard
    from napari_embedtrack.io import ctc

    gt_dir = tmp / "planted" / "01_GT"
    seg = {t: planted.truth[t] for t in range(0, planted.truth.shape[0], 3)}
    ctc.write_ground_truth(gt_dir, planted.truth, planted.truth_lineage, seg=seg)

    viewer = napari.Viewer(title="napari-embedtrack")
    viewer.window._qt_window.resize(1600, 1000)
    viewer.add_image(planted.image, name="movie")
    from napari_embedtrack._widgets import TrackWidget

    track = TrackWidget(viewer)  # not docked: it only holds the run's outputs here
    record = RunRecord(
        source="movie", outputs=planted.outputs, card=ModelCard(name="ideal"),
        params=ClusterParams(grid_spacing=planted_mod.G), first_frame=0,
        n_frames=planted.labels.shape[0], is_2d=False,
        labels=planted.labels.astype(np.uint32), lineage=planted.lineage,
    )  # fmt: skip
    track.state.record = record
    track._show(record)
    truth = viewer.open(str(gt_dir), plugin=PLUGIN)
    for layer in truth:
        layer.visible = False
    _, review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review and evaluate (EmbedTrack)")
    review._labels.value = viewer.layers["labels: movie"]
    review.evaluate()
    wait(review.runner.done)
    review.find_suspects()
    wait(review.runner.done)
    review._colour.value = True
    row = next(k for k, s in enumerate(review.queue) if s.kind == "merge")
    review.select(row)
    viewer.layers["labels: movie"].opacity = 0.6
    viewer.layers.selection = {viewer.layers["labels: movie"]}
    settle(1000)
    viewer.screenshot(str(IMAGES / "review-widget.png"), canvas_only=False)
    print("review queue:", *(f"{s.kind} {s.confidence:.2f}" for s in review.queue[:8]))
    print("scores:", review.scores)
    viewer.close()
    del track
    return 0


def _load_test_helper(name: str):
    spec = importlib.util.spec_from_file_location(
        f"embedtrack_{name}", ROOT / "tests" / "engine" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def edit_shot() -> int:
    """The edit and lineage tree widgets on the planted movie: every planted error but the
    broken link corrected with the edit widget, the broken link's later half selected in
    the tree (the join is the next click)."""
    planted_mod = _load_test_helper("planted")
    planted = planted_mod.planted_movie(seed=3)
    from napari_embedtrack._widgets import TrackWidget
    from napari_embedtrack._widgets._state import RunRecord
    from napari_embedtrack.engine.cluster import ClusterParams
    from napari_embedtrack.engine.modelfile import ModelCard

    viewer = napari.Viewer(title="napari-embedtrack")
    viewer.window._qt_window.resize(1600, 1000)
    viewer.add_image(planted.image, name="movie")
    track = TrackWidget(viewer)  # not docked: it only holds the run's outputs here
    record = RunRecord(
        source="movie", outputs=planted.outputs, card=ModelCard(name="ideal"),
        params=ClusterParams(grid_spacing=planted_mod.G), first_frame=0,
        n_frames=planted.labels.shape[0], is_2d=False,
        labels=planted.labels.astype(np.uint32), lineage=planted.lineage,
    )  # fmt: skip
    track.state.record = record
    track._show(record)
    _, edit = viewer.window.add_plugin_dock_widget(PLUGIN, "Edit tracks (EmbedTrack)")
    _, tree = viewer.window.add_plugin_dock_widget(PLUGIN, "Lineage tree (EmbedTrack)")
    labels = viewer.layers["labels: movie"]
    calls = {
        "relabel_mask": edit.relabel_mask,
        "join": lambda a, b: edit.join(a, b),
        "relabel_cell": lambda t, old, new: edit.relabel(t, old, new),
    }
    skip = {"join": 1}  # leave the broken link (the second join) for the picture

    def apply(name, *args):
        if name == "join" and skip["join"] == 0:
            skip["join"] = -1
            skip["pair"] = args
            return labels.data
        if name == "join" and skip["join"] > 0:
            skip["join"] -= 1
        if name != "noop":
            calls[name](*args)
        return labels.data

    _load_test_helper("planted_fixes").correct_planted(planted, apply)
    before, after = skip["pair"]
    tree.select_node(after, 8)  # the broken link's later half; the join is the next click
    edit._track.value, edit._other.value = before, after
    edit._status.value = f"next: join - track {after} continues track {before}"
    labels.opacity = 0.6
    camera(viewer).zoom = 3.0
    viewer.layers.selection = {labels}
    settle(1000)
    viewer.screenshot(str(IMAGES / "edit-widget.png"), canvas_only=False)
    print("edit status:", edit._status.value, "| tree:", tree._status.value)
    viewer.close()
    del track
    return 0


def _lineage(tracks_layer):
    from napari_embedtrack.io.tracks import tracks_to_lineage

    return tracks_to_lineage(np.asarray(tracks_layer.data), tracks_layer.graph)


def _first_division(tracks_layer) -> tuple[int, tuple[float, float]]:
    """Frame where the first daughters appear, and a daughter's centroid there."""
    lin = _lineage(tracks_layer)
    daughter = lin[lin[:, 3] > 0][np.argmin(lin[lin[:, 3] > 0, 1])]
    data = np.asarray(tracks_layer.data)
    row = data[(data[:, 0] == daughter[0]) & (data[:, 1] == daughter[1])][0]
    return int(daughter[1]), (float(row[2]), float(row[3]))


if __name__ == "__main__":
    sys.exit(main())
