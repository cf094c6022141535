"""Dock widget "Track cells (EmbedTrack)": run a model on an image layer, re-cluster.

Tracking runs :func:`engine.pipeline.track_movie` in a worker thread (see ``_worker``);
the network outputs of the last run are cached in a :class:`~._state.TrackingState` so that
the clustering thresholds can be changed afterwards without running the network again.

Cancel stops the run after the frame being computed and keeps the frames done: the
Labels layer then has the input's full length with empty frames after the last one done,
and the Tracks layer covers the frames done (the status line and a notification say so).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image
from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog

from ..engine.cellsize import AUTO
from ..engine.modelfile import ModelCard
from ..engine.pipeline import default_cluster_params
from ..engine.predict import MAX_SMOOTH_SIGMA
from ._edit import keep_pins  # issue #17: pins survive re-runs and re-clustering
from ._inputs import InputError, movie_of
from ._layers import (
    INSPECTION,
    follow_layers,
    remove_own,
    show_inspection,
    show_result,
    watch_viewer,
)
from ._models import DEVICES, registry
from ._state import RunRecord, TrackingState, session_of
from ._worker import TaskRunner

log = logging.getLogger(__name__)

#: Largest cell diameter (px) the widget offers.
MAX_CELL_DIAMETER = 5000.0
#: Re-clustering starts this long after the last change of a threshold.
RECLUSTER_DELAY_MS = 300


class TrackWidget(Container):
    """Segment and track cells in an Image layer with an EmbedTrack model."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = napari_viewer
        self.state = TrackingState()
        self.session = session_of(napari_viewer)
        self.session.track_widget = self
        watch_viewer(napari_viewer)  # corrected frames, for fine-tuning
        self._stop = threading.Event()
        self._input: Image | None = None  # input layer of the run in progress
        self._kind = ""  # "track" or "recluster" while a task runs
        self._pending = False  # thresholds changed while re-clustering

        self._image = ComboBox(label="image", choices=self._image_choices)
        self._image.tooltip = "Single-channel (T, Y, X) movie, or a (Y, X) image (no tracking)"
        self._model = ComboBox(choices=lambda _w: registry.choices())
        self._load = PushButton(text="Load...")
        self._load.tooltip = "Load a model folder (holding weights.safetensors and card.json)"
        model_row = Container(
            widgets=[self._model, self._load], layout="horizontal", labels=False, label="model"
        )
        model_row.margins = (0, 0, 0, 0)
        self._card = Label(label="")
        self._device = ComboBox(label="device", choices=DEVICES, value="auto")
        self._tta = CheckBox(text="test-time augmentation (8x slower)", value=False)
        self._smooth = FloatSpinBox(
            label="smoothing (px)", min=0.0, max=MAX_SMOOTH_SIGMA, step=0.25, value=0.0
        )
        self._smooth.tooltip = (
            "Gaussian pre-filter of each frame, SD in the network's pixels (0: off); "
            "the default is the model card's. It helps on dim, noisy movies"
        )
        self._diameter = FloatSpinBox(
            label="cell diameter (px)", min=0.0, max=MAX_CELL_DIAMETER, step=1.0, value=0.0
        )
        self._diameter.native.setSpecialValueText(AUTO)  # 0: estimated from the movie
        self._first = SpinBox(label="first frame", min=0, max=0)
        self._last = SpinBox(label="last frame", min=0, max=0)
        self._inspect = CheckBox(text="inspection layers (seediness, bandwidths, offsets)")
        self._run = PushButton(text="Run")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._bar = ProgressBar(label="", value=0, min=0, max=1)
        self._status = Label(label="", value="")
        self._status.native.setWordWrap(True)  # long summaries must not widen the dock
        self._seed = FloatSpinBox(label="seediness threshold", min=0.0, max=0.99, step=0.05)
        self._seed.tooltip = "Pixels with seediness above this value are foreground"
        self._score = FloatSpinBox(label="score threshold", min=0.01, max=0.99, step=0.05)
        self._score.tooltip = "A pixel joins a cell if its Gaussian score for the centre is above"
        self._min_size = SpinBox(label="minimum size (px)", min=0, max=1_000_000)
        self._min_size.tooltip = "Smaller cells are dropped (default from the model card)"
        buttons = Container(widgets=[self._run, self._cancel], layout="horizontal", labels=False)
        self.extend([
            self._image, model_row, self._card, self._device, self._tta, self._smooth,
            self._diameter, self._first, self._last, self._inspect, buttons, self._bar,
            self._status,
            Label(value="<b>Re-cluster</b> (no network run)"),
            self._seed, self._score, self._min_size,
        ])  # fmt: skip
        self._inputs = [
            self._image, self._model, self._load, self._device, self._tta, self._smooth,
            self._diameter, self._first, self._last, self._inspect, self._run, self._seed,
            self._score, self._min_size,
        ]  # fmt: skip

        self.runner = TaskRunner(self._bar, self._status, parent=self.native)
        self.runner.done.connect(self._on_done)
        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(RECLUSTER_DELAY_MS)
        self._timer.timeout.connect(self.recluster)

        self._image.changed.connect(self._on_image)
        self._model.changed.connect(self._on_model)
        self._load.clicked.connect(self._pick_model_folder)
        self._inspect.changed.connect(self._on_inspect)
        self._run.clicked.connect(self.run)
        self._cancel.clicked.connect(self.cancel)
        for w in (self._seed, self._score, self._min_size):
            w.changed.connect(self._on_threshold)
        follow_layers(self._viewer, self)
        registry.changed.connect(self._on_registry)
        self.native.destroyed.connect(lambda: registry.changed.disconnect(self._on_registry))
        self.native.destroyed.connect(self._forget)
        self._blocked = True  # no re-clustering while the defaults are filled in
        self.reset_choices()
        self._on_image(self._image.value)
        self._on_model(self._model.value)
        self._blocked = False

    def _forget(self, _obj=None) -> None:
        """Closed: the fine-tune widget must not re-run in this widget any more."""
        if self.session.track_widget is self:
            self.session.track_widget = None

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget=None) -> list[tuple[str, Image]]:
        return [(ly.name, ly) for ly in self._viewer.layers if isinstance(ly, Image)]

    def _on_registry(self) -> None:
        self._model.reset_choices()

    def load_model_folder(self, folder: str | Path) -> bool:
        """Add a model folder to the model choices and select it (False + message if not a
        model folder)."""
        try:
            path = registry.add_folder(folder)
        except ValueError as err:
            show_error(f"EmbedTrack: {err}")
            return False
        self._model.value = path
        return True

    def _pick_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.native, "Choose an EmbedTrack model folder")
        if folder:
            self.load_model_folder(folder)

    def _on_image(self, layer: Image | None) -> None:
        n = _n_frames(layer)
        for w in (self._first, self._last):
            w.max = max(n - 1, 0)
        self._first.value, self._last.value = 0, max(n - 1, 0)
        self._update_range_enabled()

    def _update_range_enabled(self) -> None:
        on = _n_frames(self._image.value) > 0 and self._kind != "track"
        self._first.enabled = self._last.enabled = on

    def _on_model(self, path: Path | None) -> None:
        card = registry.card(path) if path is not None else None
        if card is None:
            self._card.value = "no model: load a model folder or fine-tune one"
            card = ModelCard()
        else:
            scale = f" at scale {card.scale:g}" if card.scale != 1 else ""
            self._card.value = f"crop {card.crop_size} px{scale}, min size {card.min_size} px"
            self._card.tooltip = card.description or card.name
        params = default_cluster_params(card)
        blocked, self._blocked = self._blocked, True
        self._seed.value = params.seed_threshold
        self._score.value = params.score_threshold
        self._min_size.value = params.min_size
        self._tta.value = card.tta  # the model's own defaults, as in the CLI
        self._smooth.value = card.smooth_sigma
        self._diameter.value = 0.0  # auto, as in the CLI
        trained_on = f"{card.cell_diameter:.0f} px" if card.cell_diameter else "unknown"
        self._diameter.tooltip = (
            "Typical cell diameter in the movie, pixels: the model is set to it (frames "
            "resized for the network), for movies filmed at another magnification. auto: "
            "estimated from three frames (nothing changes when the cells are of the model's "
            f"size). This model's training cells: {trained_on}"
        )
        self._min_default = params.min_size
        self._blocked = blocked

    # ------------------------------------------------------------------ run / cancel
    def run(self) -> GeneratorWorker | None:
        """Track the chosen image with the chosen model (None if a task runs or input is
        bad; the message is shown)."""
        if self.runner.running:
            return None
        self._timer.stop()  # a re-clustering still to come: the run uses the same settings
        try:
            layer = self._image.value
            movie = movie_of(layer)
            if self._model.value is None:
                raise InputError("choose a model (or load a model folder)")
            first, last = self._first.value, self._last.value
            if movie.ndim == 3 and not 0 <= first <= last < movie.shape[0]:
                raise InputError(f"frame range {first}-{last} is empty or outside the movie")
        except InputError as err:
            self._status.value = str(err)
            show_error(f"EmbedTrack: {err}")
            return None
        is_2d = movie.ndim == 2
        seed, score, min_size = self._seed.value, self._score.value, self._min_size.value
        # the minimum size as the program set it follows the model's card, and so the
        # cells' size the model is set to; a size the user typed is kept as it is
        own_min_size = min_size == self._min_default

        def params(card: ModelCard):
            default = default_cluster_params(card)
            return dataclasses.replace(
                default,
                seed_threshold=seed,
                score_threshold=score,
                min_size=default.min_size if own_min_size else min_size,
            )

        gen = self.state.track(
            movie if is_2d else movie[first : last + 1],
            source=layer.name,
            first_frame=0 if is_2d else first,
            n_frames=1 if is_2d else movie.shape[0],
            model_path=self._model.value,
            device=self._device.value,
            tta=self._tta.value,
            smooth_sigma=self._smooth.value,
            cell_diameter=self._diameter.value or AUTO,
            params=params,
            should_stop=self._stop.is_set,
        )
        self._stop.clear()
        self._input = layer
        self._start("track", gen, f"EmbedTrack {layer.name}", self._on_tracked)
        return self.runner.worker

    def run_with(self, model: Path, image: Image | None = None) -> GeneratorWorker | None:
        """Track again with another ``model`` (e.g. just fine-tuned): ``image`` (default: the
        input of the last run) over the frames of the last run of that image (the whole
        movie if it was not tracked). None, with a message, if the widget is busy."""
        if self.runner.running:
            self._status.value = "busy: wait for the task running to finish, then run"
            show_error(f"EmbedTrack: {self._status.value}")
            return None
        record = self.state.record
        if image is None and record is not None:
            image = self._input_layer(record)
        if image is not None:
            self._image.value = image
            self._on_image(image)
            if record is not None and record.source == image.name and not record.is_2d:
                self._first.value, self._last.value = record.frame_range
        self._model.value = Path(model).resolve()
        return self.run()

    def cancel(self) -> None:
        """Tracking: stop after the current frame, keep the frames done. Re-clustering: drop."""
        if self._kind == "track":
            self._stop.set()
            self._status.value = "cancelling after the current frame..."
        elif self._kind == "recluster":
            self._pending = False
            self.runner.quit()

    def _start(self, kind: str, gen, desc: str, on_result) -> None:
        self._kind = kind
        for w in self._inputs:
            if kind == "track" or w is self._run:
                w.enabled = False
        self._cancel.enabled = True
        # issue #17 (edit widget): pinned cells and links go back into the new result
        gen = keep_pins(self._viewer, gen)
        self.runner.start(gen, desc, on_result)

    def _on_done(self, _result) -> None:
        self._kind = ""
        for w in self._inputs:
            w.enabled = True
        self._cancel.enabled = False
        self._update_range_enabled()
        if self._pending:
            self._pending = False
            self.recluster()

    def _on_tracked(self, record: RunRecord) -> None:
        self.state.record = record
        blocked, self._blocked = self._blocked, True  # the settings the run used
        self._min_size.value = self._min_default = record.params.min_size
        self._blocked = blocked
        self._show(record)
        self.session.ran(record.model_path)
        if not record.complete:
            show_info(f"EmbedTrack: cancelled; showing {record.summary()}")

    def _show(self, record: RunRecord) -> None:
        input_layer = self._input_layer(record)
        show_result(self._viewer, record, input_layer)
        if self._inspect.value:
            show_inspection(self._viewer, record, input_layer)
        self._status.value = record.summary()

    def _input_layer(self, record: RunRecord) -> Image | None:
        """The layer that was tracked (for scale and translate), if still in the viewer."""
        if self._input is not None and self._input in self._viewer.layers:
            return self._input
        return next((ly for ly in self._viewer.layers if ly.name == record.source), None)

    def _on_inspect(self, on: bool) -> None:
        record = self.state.record
        if record is None or self.runner.running:
            return
        if on:  # the result layers stay as they are (they may have been edited)
            show_inspection(self._viewer, record, self._input_layer(record))
        else:
            remove_own(self._viewer, record.source, INSPECTION)

    # ------------------------------------------------------------------ re-cluster
    def _on_threshold(self, _value=None) -> None:
        record = self.state.record
        if self._blocked or record is None:
            return
        p = record.params
        current = (self._seed.value, self._score.value, self._min_size.value)
        if current == (p.seed_threshold, p.score_threshold, p.min_size):
            return  # nothing changed (e.g. a late reset to the values the run used)
        self._timer.start()

    def recluster(self) -> GeneratorWorker | None:
        """Re-cluster the last run's cached outputs with the current thresholds."""
        self._timer.stop()
        record = self.state.record
        if record is None or self._kind == "track":
            return None
        if self.runner.running:  # restart with the newest values when this one stops
            self._pending = True
            self.runner.quit()
            return None
        gen = self.state.recluster(
            record,
            seed_threshold=self._seed.value,
            score_threshold=self._score.value,
            min_size=self._min_size.value,
        )
        self._start("recluster", gen, "EmbedTrack re-cluster", self._on_reclustered)
        return self.runner.worker

    def _on_reclustered(self, record: RunRecord) -> None:
        if self.state.record is None or record.source != self.state.record.source:
            return
        self.state.record = record
        show_result(self._viewer, record, self._input_layer(record))
        self._status.value = "re-clustered: " + record.summary()


def _n_frames(layer: Image | None) -> int:
    """Frames of a (T, Y, X) image layer; 0 for anything else."""
    data = getattr(layer, "data", None)
    if data is None or getattr(layer, "rgb", False) or getattr(layer, "multiscale", False):
        return 0
    return int(data.shape[0]) if data.ndim == 3 else 0
