"""Dock widget "Fine-tune EmbedTrack": train a model further on corrected labels.

The labels (label = track id; e.g. the plugin's own output after correction) and, if
given, a Tracks layer for the divisions become one training sequence
(:func:`engine.data.sequence_from_arrays`): frames in the chosen range that hold labels are
taken as complete annotations, other frames are ignored. Training runs in a worker thread
into a staging folder (``<user models>/.training/<name>``); only a finished run is moved to
``<user models>/<name>`` and announced to the track widget. Cancel discards the run.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections.abc import Callable, Generator
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels, Tracks
from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QMessageBox

from ..ctc import tracks_to_lineage
from ..engine.data import sequence_from_arrays
from ..engine.modelfile import CARD, list_models, read_card, user_model_dir
from ..engine.progress import Progress
from ..engine.train import CHECKPOINT, TrainConfig, train
from ._inputs import InputError, labels_of, movie_of, tracks_of
from ._layers import find_own, tag_of
from ._lossplot import LossPlot
from ._models import DEVICES, registry
from ._worker import TaskRunner

log = logging.getLogger(__name__)

NEW_MODEL = "new"  # "start from" choice: random weights
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def finetune(
    movie: np.ndarray,
    labels: np.ndarray,
    lineage: np.ndarray | None,
    annotated: list[int],
    *,
    name: str,
    init: Path | None,
    config: TrainConfig,
    should_stop: Callable[[], bool],
    sparse: bool = False,
) -> Generator[Progress, None, Path | None]:
    """Train on one labelled movie and install the model as user model ``name``.

    ``sparse``: in the ``annotated`` frames only the labelled cells are known (every other
    pixel unknown), instead of the frames being complete annotations.
    Returns the installed model folder, or None if stopped (nothing is installed then).
    """
    yield Progress(0, config.steps, "preparing training data")
    seq = sequence_from_arrays(
        name,
        movie,
        labels,
        lineage,
        annotated_frames=[] if sparse else annotated,
        sparse_frames=annotated if sparse else None,
    )
    root = user_model_dir()
    staging = root / ".training" / name
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield from train([seq], staging, config, init=init, name=name, should_stop=should_stop)
        if should_stop():
            return None
        if not (staging / CARD).is_file():
            raise ValueError(f"training ended without saving a model in {staging}")
        (staging / CHECKPOINT).unlink(missing_ok=True)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class FineTuneWidget(Container):
    """Fine-tune an EmbedTrack model on an image and corrected labels."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = napari_viewer
        self._stop = threading.Event()
        self._image = ComboBox(label="image", choices=self._choices(Image))
        self._labels = ComboBox(label="labels", choices=self._choices(Labels))
        self._labels.tooltip = (
            "Corrected labels, label = track id; frames without labels are ignored"
        )
        self._tracks = ComboBox(label="tracks", choices=self._choices(Tracks), nullable=True)
        self._tracks.tooltip = (
            "Divisions (Tracks graph). None: equal labels in consecutive frames are the same "
            "cell and there are no divisions"
        )
        self._init = ComboBox(label="start from", choices=self._init_choices)
        self._first = SpinBox(label="first frame", min=0, max=0)
        self._last = SpinBox(label="last frame", min=0, max=0)
        self._steps = SpinBox(label="steps", min=1, max=1_000_000, value=300)
        self._batch = SpinBox(label="batch size", min=1, max=64, value=2)
        self._crop = SpinBox(label="crop size (new model)", min=32, max=1024, step=8, value=256)
        self._device = ComboBox(label="device", choices=DEVICES, value="auto")
        self._name = LineEdit(label="new model name", value="")
        self._sparse = CheckBox(text="only the labelled cells are corrected (sparse)")
        self._sparse.tooltip = (
            "On: in each labelled frame only the labelled cells are known; every other pixel "
            "is unknown, not background. Off: labelled frames are complete annotations"
        )
        self._train = PushButton(text="Train")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._bar = ProgressBar(label="", value=0, min=0, max=1)
        self._status = Label(label="", value="")
        buttons = Container(widgets=[self._train, self._cancel], layout="horizontal", labels=False)
        self._inputs = [
            self._image, self._labels, self._tracks, self._sparse, self._init, self._first,
            self._last, self._steps, self._batch, self._crop, self._device, self._name,
            self._train,
        ]  # fmt: skip
        self.extend([*self._inputs[:-1], buttons, self._bar, self._status])
        self.plot = LossPlot()
        self.native.layout().addWidget(self.plot)

        self.runner = TaskRunner(self._bar, self._status, parent=self.native)
        self.runner.done.connect(self._on_done)
        self._image.changed.connect(self._on_image)
        self._labels.changed.connect(self._on_labels)
        self._init.changed.connect(self._on_init)
        self._train.clicked.connect(self.start)
        self._cancel.clicked.connect(self.cancel)
        events = self._viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.connect(self.reset_choices)
        registry.changed.connect(self._on_registry)
        self.native.destroyed.connect(lambda: registry.changed.disconnect(self._on_registry))
        self.reset_choices()
        self._on_image(self._image.value)
        self._on_labels(self._labels.value)
        self._on_init(self._init.value)

    # ------------------------------------------------------------------ choices
    def _choices(self, kind: type) -> Callable:
        return lambda _w=None: [(ly.name, ly) for ly in self._viewer.layers if isinstance(ly, kind)]

    def _init_choices(self, _widget=None) -> list[tuple[str, object]]:
        return [("new model (random weights)", NEW_MODEL), *registry.choices()]

    def _on_registry(self) -> None:
        self._init.reset_choices()

    def _on_image(self, layer: Image | None) -> None:
        data = getattr(layer, "data", None)
        n = int(data.shape[0]) if data is not None and data.ndim == 3 else 1
        self._first.max = self._last.max = n - 1
        self._first.value, self._last.value = 0, n - 1
        if layer is not None and not self._name.value:
            self._name.value = f"{layer.name}-finetuned".replace(" ", "_")

    def _on_labels(self, layer: Labels | None) -> None:
        """Pick the plugin's Tracks layer that belongs to the plugin's Labels layer."""
        tag = tag_of(layer) if layer is not None else None
        if tag and tag.get("kind") == "labels":
            tracks = find_own(self._viewer, tag.get("source"), "tracks")
            if tracks is not None:
                self._tracks.value = tracks

    def _on_init(self, value) -> None:
        self._crop.enabled = value == NEW_MODEL and not self.runner.running

    # ------------------------------------------------------------------ train / cancel
    def _confirm_overwrite(self, name: str) -> bool:
        answer = QMessageBox.question(
            self.native,
            "Replace model?",
            f"A model named {name!r} exists in {user_model_dir()}. Replace it?",
        )
        return answer == QMessageBox.StandardButton.Yes

    def _check_name(self) -> str:
        name = self._name.value.strip()
        if not _NAME_RE.match(name):
            raise InputError(
                f"model name {name!r}: use letters, digits, '.', '_', '+' or '-' (no spaces)"
            )
        shipped = {m.name for m in list_models() if m.shipped}
        if name in shipped:
            raise InputError(f"{name!r} is a shipped model; choose another name")
        return name

    def start(self) -> GeneratorWorker | None:
        """Start fine-tuning (None, with a message, if the input is bad or a run is going)."""
        if self.runner.running:
            return None
        try:
            movie = movie_of(self._image.value)
            if movie.ndim != 3 or movie.shape[0] < 2:
                raise InputError("fine-tuning needs a (T, Y, X) movie of at least 2 frames")
            labels = labels_of(self._labels.value, movie.shape)
            if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
                raise InputError("labels must be non-negative integers")
            lineage = None
            if self._tracks.value is not None:
                data, graph = tracks_of(self._tracks.value)
                lineage = tracks_to_lineage(data, graph)
            first, last = self._first.value, self._last.value
            annotated = [t for t in range(first, last + 1) if labels[t].any()]
            if not annotated:
                raise InputError(f"no labels in frames {first}-{last}")
            name = self._check_name()
        except InputError as err:
            return self._fail(str(err))
        except ValueError as err:  # tracks_to_lineage: merges, bad ids
            return self._fail(f"tracks layer: {err}")
        if (user_model_dir() / name).exists() and not self._confirm_overwrite(name):
            self._status.value = "not started: choose another model name"
            return None
        init = None if self._init.value == NEW_MODEL else self._init.value
        # from a model: the fine-tuning recipe and its stop rule, as `embedtrack train --init`
        make = TrainConfig if init is None else TrainConfig.for_finetuning
        config = make(
            steps=self._steps.value,
            batch_size=self._batch.value,
            crop_size=self._crop.value,
            device=self._device.value,
        )
        self._stop.clear()
        gen = finetune(
            np.asarray(movie), labels, lineage, annotated,
            name=name, init=init, config=config, should_stop=self._stop.is_set,
            sparse=self._sparse.value,
        )  # fmt: skip
        self.plot.clear(config.steps)
        for w in self._inputs:
            w.enabled = False
        self._cancel.enabled = True
        self.runner.start(gen, f"EmbedTrack fine-tune {name}", self._on_result, self._on_progress)
        return self.runner.worker

    def cancel(self) -> None:
        """Stop at the next step; nothing is saved."""
        self._stop.set()
        self._status.value = "cancelling..."

    def _fail(self, message: str) -> None:
        self._status.value = message
        show_error(f"EmbedTrack: {message}")

    def _on_progress(self, p: Progress) -> None:
        if "loss" in p.info:
            self.plot.add(p.done, p.info["loss"], p.info.get("smoothed_loss", p.info["loss"]))

    def _on_result(self, path: Path | None) -> None:
        if path is None:
            self._status.value = "cancelled: no model saved"
            return
        registry.refresh()
        card = read_card(path)
        start = card.validation.get("start")
        outcome = ""
        if start:  # the stop rule's verdict, with the figures before and after
            after = card.validation.get("score")
            outcome = f"; validation score {start['score']:.3f} -> {after:.3f}"
            if card.training.get("outcome", "").startswith("no fine-tuned"):
                outcome += " (no improvement: the starting model's weights were kept)"
        self._status.value = f"saved model {path.name} ({path}){outcome}"
        show_info(f"EmbedTrack: fine-tuned model {path.name!r} saved to {path}{outcome}")

    def _on_done(self, _result) -> None:
        for w in self._inputs:
            w.enabled = True
        self._cancel.enabled = False
        self._on_init(self._init.value)
