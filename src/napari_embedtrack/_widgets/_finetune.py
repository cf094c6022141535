"""Dock widget "Fine-tune EmbedTrack": train a model further on corrected labels.

The correction loop: track a movie, correct (or confirm) some frames of the result, fine-tune
the model of that run on them, compare SEG/TRA before and after on the corrected frames held
out, and re-run the movie with the new model.

The labels (label = track id; e.g. the plugin's own output after correction) and, if
given, a Tracks layer for the divisions become one training sequence
(:func:`engine.data.sequence_from_arrays`): the training frames are taken as complete
annotations, other frames are ignored. By default (for the plugin's own results and any
layer with reviewed frames) the training frames are the frames the user corrected or
confirmed (``_layers.reviewed_frames``); otherwise every frame in the chosen range that holds
labels. Training starts from the model that made the labels, or else the model of the last
tracking run in this viewer (``_state.ViewerSession``), unless the user picks another.
Training runs in a worker thread into a staging folder (``<user models>/.training/<name>``);
only a finished run is moved to ``<user models>/<name>`` and announced to the track widget.
Cancel discards the run.
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

from ..engine.data import (
    pairs_with_cells,
    replay_frames,
    replay_sequence,
    sequence_from_arrays,
)
from ..engine.modelfile import CARD, list_models, read_card, user_model_dir
from ..engine.progress import Progress
from ..engine.train import CHECKPOINT, VALIDATION_MEASURES, VALIDATION_STYLES, TrainConfig, train
from ..io.tracks import tracks_to_lineage
from ._inputs import InputError, labels_of, movie_of, tracks_of
from ._layers import (
    find_own,
    follow_layers,
    layer_choices,
    reviewed_frames,
    tag_of,
    toggle_reviewed,
    watch_viewer,
)
from ._lossplot import LossPlot
from ._models import DEVICES, registry
from ._state import session_of
from ._worker import TaskRunner

log = logging.getLogger(__name__)

NEW_MODEL = "new"  # "start from" choice: random weights
PLUGIN = "napari-embedtrack"
TRACK_WIDGET = "Track cells (EmbedTrack)"
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
    replay: list[int] | None = None,
) -> Generator[Progress, None, Path | None]:
    """Train on one labelled movie and install the model as user model ``name``.

    ``sparse``: in the ``annotated`` frames only the labelled cells are known (every other
    pixel unknown), instead of the frames being complete annotations. ``replay``: frames
    whose labels are the starting model's own results (:func:`engine.data.replay_frames`),
    trained on beside the corrections and never validated on.
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
    sequences = [seq]
    if replay:
        sequences.append(replay_sequence(f"{name}-replay", seq, labels, lineage, replay))
    root = user_model_dir()
    staging = root / ".training" / name
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield from train(sequences, staging, config, init=init, name=name, should_stop=should_stop)
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
        self.session = session_of(napari_viewer)
        watch_viewer(napari_viewer)  # corrected frames of every Labels layer
        self._stop = threading.Event()
        self._init_chosen = False  # the user picked "start from": keep it
        self._setting_init = False
        self._watched_labels: Labels | None = None
        #: what the last start() trained on, and the last run's validation (None before)
        self.training_frames: list[int] = []
        self.replayed_frames: list[int] = []
        self.started_from: Path | None = None
        self.scores: dict | None = None
        self.new_model: Path | None = None
        self._image = ComboBox(label="image", choices=layer_choices(self._viewer, Image))
        self._labels = ComboBox(label="labels", choices=layer_choices(self._viewer, Labels))
        self._labels.tooltip = (
            "Corrected labels, label = track id; frames without labels are ignored"
        )
        self._tracks = ComboBox(
            label="tracks", choices=layer_choices(self._viewer, Tracks), nullable=True
        )
        self._tracks.tooltip = (
            "Divisions (Tracks graph). None: equal labels in consecutive frames are the same "
            "cell and there are no divisions"
        )
        self._init = ComboBox(label="start from", choices=self._init_choices)
        self._init.tooltip = (
            "Default: the model that made the labels, or the model of the last tracking run"
        )
        self._reviewed_only = CheckBox(text="only corrected or confirmed frames")
        self._reviewed_only.tooltip = (
            "On: train on the frames you painted into or confirmed (within the frame range). "
            "Off: every frame in the range that holds labels is a complete annotation"
        )
        self._replay = CheckBox(text="keep the model's results on the other frames")
        self._replay.tooltip = (
            "On: the plugin's results on frames you did not correct or confirm are trained "
            "on too (a pair every few frames), so the model keeps what it did there unless "
            "your corrections teach otherwise. Corrections alone can make it worse on the "
            "rest of the movie while it gets better on them. Needs 'only corrected or "
            "confirmed frames' and a starting model"
        )
        self._review = Label(label="", value="")
        self._confirm = PushButton(text="Confirm / unconfirm current frame")
        self._confirm.tooltip = (
            "Mark the frame shown as checked and correct (it is then trained on), or forget "
            "that it was corrected or confirmed"
        )
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
        self._scores = Label(label="", value="")
        self._rerun = PushButton(text="Re-run the movie with the new model", enabled=False)
        self._rerun.tooltip = "Track the image again with the model just trained (track widget)"
        buttons = Container(widgets=[self._train, self._cancel], layout="horizontal", labels=False)
        self._inputs = [
            self._image, self._labels, self._tracks, self._sparse, self._init, self._first,
            self._last, self._reviewed_only, self._replay, self._confirm, self._steps,
            self._batch,
            self._crop, self._device, self._name, self._train,
        ]  # fmt: skip
        self.extend([
            *self._inputs[:9], self._review, *self._inputs[9:-1], buttons, self._bar,
            self._status, self._scores, self._rerun,
        ])  # fmt: skip
        self.plot = LossPlot()
        self.native.layout().addWidget(self.plot)

        self.runner = TaskRunner(self._bar, self._status, parent=self.native)
        self.runner.done.connect(self._on_done)
        self._image.changed.connect(self._on_image)
        self._labels.changed.connect(self._on_labels)
        self._init.changed.connect(self._on_init)
        self._first.changed.connect(self._show_review)
        self._last.changed.connect(self._show_review)
        self._reviewed_only.changed.connect(self._show_review)
        self._replay.changed.connect(self._show_review)
        self._confirm.clicked.connect(self.toggle_current_frame)
        self._train.clicked.connect(self.start)
        self._cancel.clicked.connect(self.cancel)
        self._rerun.clicked.connect(self.rerun)
        self.session.tracked.connect(self._on_tracked)
        self.native.destroyed.connect(lambda: self.session.tracked.disconnect(self._on_tracked))
        follow_layers(self._viewer, self, self._pick_tracks)
        registry.changed.connect(self._on_registry)
        self.native.destroyed.connect(lambda: registry.changed.disconnect(self._on_registry))
        self.reset_choices()
        self._on_image(self._image.value)
        self._on_labels(self._labels.value)
        self._on_init(self._init.value)
        self._init_chosen = False  # the values filled in above were not the user's
        self._default_init()

    # ------------------------------------------------------------------ choices
    def _init_choices(self, _widget=None) -> list[tuple[str, object]]:
        return [*registry.choices(), ("new model (random weights)", NEW_MODEL)]

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
        """Pick the plugin's Tracks layer that belongs to the plugin's Labels layer, the
        model that made the labels, and whether to train on the reviewed frames only."""
        tag = tag_of(layer) if layer is not None else None
        is_result = bool(tag and tag.get("kind") == "labels")
        self._pick_tracks()
        # the plugin's results are predictions: only the frames the user checked are labels
        self._reviewed_only.value = is_result or any(reviewed_frames(layer))
        self._replay.value = is_result  # the other frames are the model's own results
        if self._watched_labels is not None:
            self._watched_labels.events.paint.disconnect(self._show_review)
        self._watched_labels = layer if isinstance(layer, Labels) else None
        if self._watched_labels is not None:
            self._watched_labels.events.paint.connect(self._show_review, position="last")
        self._default_init()
        self._show_review()

    def _pick_tracks(self, _event=None) -> None:
        """The plugin's Tracks layer of the chosen plugin Labels layer, if there is one (the
        track widget adds it just after the labels)."""
        tag = tag_of(self._labels.value) if self._labels.value is not None else None
        if tag and tag.get("kind") == "labels":
            tracks = find_own(self._viewer, tag.get("source"), "tracks")
            if tracks is not None and tracks is not self._tracks.value:
                self._tracks.value = tracks

    def _on_init(self, value) -> None:
        self._crop.enabled = value == NEW_MODEL and not self.runner.running
        if not self._setting_init:
            self._init_chosen = True

    def _on_tracked(self, _model: Path) -> None:
        self._default_init()

    def _default_init(self) -> None:
        """Start from the model that made the chosen labels, else the model of the last
        tracking run in this viewer, else the first model listed; never random weights
        unless chosen. A model the user picked stays."""
        if self._init_chosen:
            return
        choices = [data for _, data in self._init_choices()]
        tag = tag_of(self._labels.value) if self._labels.value is not None else None
        candidates = [tag.get("model") if tag else None, self.session.last_model]
        value = next(
            (Path(c).resolve() for c in candidates if c and Path(c).resolve() in choices),
            choices[0],
        )
        self._setting_init = True
        try:
            self._init.value = value
        finally:
            self._setting_init = False

    # ------------------------------------------------------------------ reviewed frames
    def _training_frames(self, labels: np.ndarray | None = None) -> list[int]:
        """Frames in the range that hold labels, and, with "only corrected or confirmed",
        were corrected or confirmed."""
        first, last = self._first.value, self._last.value
        layer = self._labels.value
        frames = range(first, last + 1)
        if self._reviewed_only.value:
            corrected, confirmed = reviewed_frames(layer)
            frames = sorted(set(frames) & (set(corrected) | set(confirmed)))
        if labels is None:
            labels = getattr(layer, "data", None)
        if labels is None or labels.ndim != 3:
            return []
        return [t for t in frames if t < len(labels) and labels[t].any()]

    def _replay_frames(self, labels: np.ndarray, annotated: list[int]) -> list[int]:
        """Frames of the model's results in the range to train on beside the corrections
        (none unless "keep the model's results", "only corrected or confirmed" and a
        starting model are chosen)."""
        if not (self._replay.value and self._reviewed_only.value and annotated):
            return []
        if self._init.value == NEW_MODEL or labels is None or labels.ndim != 3:
            return []
        first, last = self._first.value, min(self._last.value, len(labels) - 1)
        corrected, confirmed = reviewed_frames(self._labels.value)
        known = set(annotated) | set(corrected) | set(confirmed)
        frames = [first + t for t in replay_frames(last - first + 1, [t - first for t in known])]
        return pairs_with_cells(frames, labels)

    def _show_review(self, _event=None) -> None:
        corrected, confirmed = reviewed_frames(self._labels.value)
        text = f"corrected: {_frames_text(corrected)}; confirmed: {_frames_text(confirmed)}"
        frames = self._training_frames()
        text = f"{text}\ntraining frames: {_frames_text(frames)}"
        labels = getattr(self._labels.value, "data", None)
        if replayed := self._replay_frames(labels, frames):
            text += f"\nthe model's results replayed: {len(replayed)} frames"
        if self._bunched(frames):
            text += (
                "\ntip: frames spread over the movie teach the model more than a few "
                "frames together"
            )
        self._review.value = text

    #: A tip to spread the corrections shows when the training frames of a range at least
    #: this long lie within a third of it (the GOWT1 model on SIM+ 01: five spread frames
    #: SEG 0.851 / CT 0.747 on the rest, its first five 0.851 / 0.689, without replay
    #: 0.863 against 0.823; docs/models.md, "Fine-tuning with replay").
    SPREAD_RANGE = 10

    def _bunched(self, frames: list[int]) -> bool:
        """Whether the corrections of a fine-tune lie bunched in a long range."""
        span = self._last.value - self._first.value + 1
        if not (frames and self._reviewed_only.value and span >= self.SPREAD_RANGE):
            return False
        if self._init.value == NEW_MODEL:
            return False
        return max(frames) - min(frames) + 1 <= span / 3

    def current_frame(self) -> int | None:
        """The frame of the chosen labels layer the viewer shows."""
        layer = self._labels.value
        if layer is None or layer.ndim != 3:
            return None
        return round(layer.world_to_data(self._viewer.dims.point)[0])

    def toggle_current_frame(self) -> None:
        """Confirm the frame shown (or forget that it was corrected or confirmed)."""
        layer, t = self._labels.value, self.current_frame()
        if t is None or not 0 <= t < layer.data.shape[0]:
            self._fail("choose a (T, Y, X) labels layer and show one of its frames")
            return
        on = toggle_reviewed(layer, t)
        self._reviewed_only.value = True
        self._status.value = f"frame {t} {'confirmed' if on else 'no longer reviewed'}"
        self._show_review()

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
            annotated = self._training_frames(labels)
            if not annotated and self._reviewed_only.value:
                raise InputError(
                    f"no corrected or confirmed frames with labels in {first}-{last}: correct "
                    "frames or confirm them first, or untick 'only corrected or confirmed "
                    "frames' to train on every labelled frame"
                )
            if not annotated:
                raise InputError(f"no labels in frames {first}-{last}")
            name = self._check_name()
            replay = self._replay_frames(labels, annotated)
        except InputError as err:
            return self._fail(str(err))
        except ValueError as err:  # tracks_to_lineage: merges, bad ids
            return self._fail(f"tracks layer: {err}")
        if (user_model_dir() / name).exists() and not self._confirm_overwrite(name):
            self._status.value = "not started: choose another model name"
            return None
        init = None if self._init.value == NEW_MODEL else Path(self._init.value)
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
            sparse=self._sparse.value, replay=replay,
        )  # fmt: skip
        self.training_frames, self.started_from = annotated, init
        self.replayed_frames = replay
        self.scores, self.new_model = None, None
        self._scores.value = ""
        self.plot.clear(config.steps)
        for w in (*self._inputs, self._rerun):
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
        self.new_model = path
        self.scores = validation_scores(card.validation, self.training_frames)
        start = card.validation.get("start")
        outcome = ""
        if start:  # the stop rule's verdict, with the figures before and after
            after = card.validation.get("score")
            outcome = f"; validation score {start['score']:.3f} -> {after:.3f}"
            if card.training.get("outcome", "").startswith("no fine-tuned"):
                outcome += " (no improvement: the starting model's weights were kept)"
        if replay := card.training.get("replay"):
            outcome += f"; the model's results on {len(self.replayed_frames)} frames: {replay}"
        self._scores.value = scores_text(self.scores)
        self._status.value = f"saved model {path.name} ({path}){outcome}"
        show_info(f"EmbedTrack: fine-tuned model {path.name!r} saved to {path}{outcome}")

    def _on_done(self, _result) -> None:
        for w in self._inputs:
            w.enabled = True
        self._cancel.enabled = False
        self._rerun.enabled = self.new_model is not None
        setting, self._setting_init = self._setting_init, True
        self._on_init(self._init.value)
        self._setting_init = setting

    # ------------------------------------------------------------------ re-run
    def rerun(self) -> GeneratorWorker | None:
        """Track the image again with the model just trained, in the viewer's track widget
        (opened if needed); the corrected labels stay (they are the user's layer)."""
        if self.new_model is None:
            return None
        track = self.session.track_widget
        if track is None:
            _, track = self._viewer.window.add_plugin_dock_widget(PLUGIN, TRACK_WIDGET)
        image = self._image.value
        worker = track.run_with(self.new_model, image if isinstance(image, Image) else None)
        if worker is not None:
            self._status.value = f"re-running {getattr(image, 'name', 'the movie')} with model "
            self._status.value += f"{self.new_model.name} (track widget)"
        return worker


def _frames_text(frames: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``; ``"none"`` for no frame."""
    runs: list[list[int]] = []
    for t in frames:
        if runs and t == runs[-1][1] + 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs) or "none"


def validation_scores(validation: dict, training_frames: list[int]) -> dict:
    """SEG/TRA/CT before and after fine-tuning from a model card's ``validation``.

    Returns ``{"frames": [...], "held_out": bool, "before": {...}, "after": {...}}``:
    the labelled frames scored, whether they were held out of training, and the card's
    measures (``SEG_plain``, ``TRA_plain``, ``CT_plain``: the frames as they are;
    ``..._hard``: a dim, noisy copy; ``..._uneven``: a copy with cells of unequal
    brightness; CT is the share of complete tracks). ``held_out`` is False when too few
    frames were labelled to hold some out: the training then scores dim noisy copies of
    training frames only. ``before`` is empty for a model trained from scratch.
    """
    measures = tuple(f"{m}_{s}" for s in VALIDATION_STYLES for m in VALIDATION_MEASURES)
    span = next(iter(validation.get("frames", {}).values()), "")
    lo, _, hi = span.partition("-")
    window = range(int(lo), int(hi or lo) + 1) if lo else range(0)
    after = {k: v for k, v in validation.items() if k in measures}
    return {
        "frames": [t for t in window if t in set(training_frames)],
        "held_out": any(k.endswith("_plain") for k in after),
        "before": {k: v for k, v in (validation.get("start") or {}).items() if k in measures},
        "after": after,
    }


def scores_text(scores: dict | None) -> str:
    """Lines ``SEG 0.612 -> 0.655, TRA ..., CT ... (held-out frames 8-9)`` for the widget."""
    if not scores or not scores["after"]:
        return "no validation (no frames with labels to score on)"
    before, after = scores["before"], scores["after"]

    def line(style: str) -> str:
        parts = []
        for m in VALIDATION_MEASURES:
            key = f"{m}_{style}"
            if key in after:
                b = f"{before[key]:.3f} -> " if key in before else ""
                parts.append(f"{m} {b}{after[key]:.3f}")
        return ", ".join(parts)

    head = "before -> after" if before else "after training"
    frames = _frames_text(scores["frames"])
    if scores["held_out"]:
        lines = [f"{head}, on the held-out labelled frames {frames}:"]
    else:
        lines = [
            f"{head}; too few labelled frames to hold some out, scored on dim noisy copies "
            f"of training frames {frames}:"
        ]
    for style, what in (
        ("plain", "as they are"),
        ("hard", "dim noisy copy"),
        ("uneven", "copy with cells of unequal brightness"),
    ):
        if text := line(style):
            lines.append(f"  {text} ({what})")
    return "\n".join(lines)
