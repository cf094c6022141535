"""Dock widget "Review and evaluate (EmbedTrack)": the review queue and the evaluation
against ground truth (issue #17, parts 1 and 4).

Review queue: **Find suspects** scores every cell, link and division of a tracking result
(:func:`engine.confidence.iter_confidence`, in a worker) and lists the least trustworthy
first, with a reason. The network outputs are those kept by the track widget's last run
when the labels are that run's result (its layer, edited or not); other labels get the
geometric cues only. Clicking an item shows its frame, centred and zoomed on it; **Mark
correct** / **Mark fixed** record a decision (kept in the labels layer's metadata,
``embedtrack_queue``, keyed by frame, track and kind, so it survives a new search).
**Colour by confidence** colours the Tracks layer per cell (property ``confidence``, red 0 ..
green 1) and the Labels layer per track (its lowest cell confidence); the Tracks layer keeps
``confidence`` and ``link_confidence`` as properties, which the GEFF writer saves as node
and edge properties.

Evaluation: with a ground-truth Labels layer (+ Tracks for divisions, + SEG masks for SEG),
**Evaluate** scores the result exactly as ``embedtrack evaluate`` does
(:func:`evaluation.iter_evaluate`: temporary CTC folders, :func:`ctc.score_results`) and
puts the error cells (missed, false, merged, split, wrongly linked) at the top of the queue.
"""

from __future__ import annotations

import logging
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, ProgressBar, PushButton
from napari.layers import Labels, Tracks
from napari.utils.colormaps import Colormap, DirectLabelColormap
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ..engine.cluster import ClusterParams
from ..engine.confidence import ConfidenceReport, Suspect, iter_confidence
from ..evaluation import Evaluation, iter_evaluate
from ..io.tracks import tracks_to_lineage
from ._inputs import InputError, tracks_of
from ._layers import find_own, follow_layers, layer_choices, tag_of, watch_viewer
from ._state import session_of
from ._worker import TaskRunner

log = logging.getLogger(__name__)

QUEUE = "embedtrack_queue"  # labels layer metadata: {"correct": [...], "fixed": [...]}
COLUMNS = ("frame", "track", "kind", "confidence", "reason", "status")
#: red (0) -> yellow (0.5) -> green (1)
CONFIDENCE_COLORS = np.array([[0.9, 0.1, 0.1, 1.0], [1.0, 0.85, 0.1, 1.0], [0.1, 0.8, 0.2, 1.0]])
CONFIDENCE_CMAP = Colormap(CONFIDENCE_COLORS, name="confidence", controls=[0.0, 0.5, 1.0])
#: Zoom on an item so that the view spans this many cell diameters.
VIEW_DIAMETERS = 8.0


def _camera(viewer: napari.Viewer):
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _score_text(scores: dict) -> str:
    def f(key):
        v = scores.get(key)
        return "n/a" if v is None else f"{v:.3f}"

    tech = " · ".join(f"{k} {f(k)}" for k in ("SEG", "DET", "TRA") if k in scores)
    lineage = " · ".join(f"{k} {f(k)}" for k in ("CT", "TF", "BC(1)", "CCA") if k in scores)
    text = f"<b>{tech}</b><br>{lineage}<br>{scores.get('tracks')} tracks "
    text += f"(truth {scores.get('gt_tracks')})"
    if "divisions_right" in scores:
        text += (
            f"; divisions right {scores['divisions_right']}, false "
            f"{scores.get('divisions_false', 0)}, missed {scores.get('divisions_missed', 0)}"
        )
    return text


class ReviewWidget(Container):
    """Review queue of a tracking result and its evaluation against ground truth."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = napari_viewer
        self.session = session_of(napari_viewer)
        watch_viewer(napari_viewer)  # frames painted in while fixing: corrected (fine-tuning)
        #: the last confidence report, evaluation, and the queue shown (errors first)
        self.report: ConfidenceReport | None = None
        self.evaluation: Evaluation | None = None
        self.queue: list[Suspect] = []
        self._scored: Labels | None = None  # labels layer of the report / evaluation
        self._old_colormap: dict[int, Any] = {}  # id(labels layer) -> colormap before

        self._labels = ComboBox(label="labels", choices=layer_choices(self._viewer, Labels))
        self._labels.tooltip = "The tracking result to review (label = track id)"
        self._tracks = ComboBox(
            label="tracks", choices=layer_choices(self._viewer, Tracks), nullable=True
        )
        self._tracks.tooltip = "Its divisions (Tracks graph); none: no divisions"
        self._find = PushButton(text="Find suspects")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._bar = ProgressBar(label="", value=0, min=0, max=1)
        self._status = Label(label="", value="")
        self._correct = PushButton(text="Mark correct", enabled=False)
        self._correct.tooltip = "The selected item is right as it is (kept for new searches)"
        self._fixed = PushButton(text="Mark fixed", enabled=False)
        self._fixed.tooltip = "You corrected the selected item (with the label tools)"
        self._colour = CheckBox(text="colour by confidence (red 0 .. green 1)")
        self._gt = ComboBox(
            label="ground truth", choices=layer_choices(self._viewer, Labels), nullable=True
        )
        self._gt.tooltip = "True labels (CTC TRA markers or full masks), label = track id"
        self._gt_tracks = ComboBox(
            label="truth tracks", choices=layer_choices(self._viewer, Tracks), nullable=True
        )
        self._gt_tracks.tooltip = "Divisions of the truth; none: no divisions"
        self._gt_seg = ComboBox(
            label="SEG masks", choices=layer_choices(self._viewer, Labels), nullable=True
        )
        self._gt_seg.tooltip = (
            "True segmentation masks for SEG (frames listed in the layer's 'seg_frames' "
            "metadata, else every frame with labels); none: no SEG"
        )
        self._evaluate = PushButton(text="Evaluate")
        self._scores = Label(label="", value="")
        self._table = QTableWidget(0, len(COLUMNS))
        self._table.setHorizontalHeaderLabels(list(COLUMNS))
        self._table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self._table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self._table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._table.verticalHeader().setVisible(False)
        header = self._table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("reason"), QHeaderView.ResizeMode.Stretch)
        self._table.setMinimumHeight(220)

        find_row = Container(widgets=[self._find, self._cancel], layout="horizontal", labels=False)
        mark_row = Container(
            widgets=[self._correct, self._fixed], layout="horizontal", labels=False
        )
        self.extend([
            Label(value="<b>Review queue</b>"), self._labels, self._tracks, find_row,
            self._bar, self._status, self._colour,
            Label(value="<b>Evaluation</b> (ground truth)"), self._gt, self._gt_tracks,
            self._gt_seg, self._evaluate, self._scores, mark_row,
        ])  # fmt: skip
        self.native.layout().addWidget(self._table)  # the queue, below everything
        self._inputs = [
            self._labels, self._tracks, self._find, self._gt, self._gt_tracks, self._gt_seg,
            self._evaluate,
        ]  # fmt: skip

        self.runner = TaskRunner(self._bar, self._status, parent=self.native)
        self.runner.done.connect(self._on_done)
        self._find.clicked.connect(self.find_suspects)
        self._cancel.clicked.connect(self.runner.quit)
        self._evaluate.clicked.connect(self.evaluate)
        self._correct.clicked.connect(lambda: self.mark("correct"))
        self._fixed.clicked.connect(lambda: self.mark("fixed"))
        self._colour.changed.connect(self._on_colour)
        self._labels.changed.connect(self._on_labels)
        self._gt.changed.connect(self._on_gt)
        self._table.itemSelectionChanged.connect(self._on_select)
        follow_layers(self._viewer, self, self._pick_defaults)
        self.reset_choices()
        self._pick_defaults()
        self._on_gt(self._gt.value)

    # ------------------------------------------------------------------ choices
    def _layer(self, name: str, kind: type):
        layer = next((ly for ly in self._viewer.layers if ly.name == name), None)
        return layer if isinstance(layer, kind) else None

    def _tracks_for(self, labels: Labels | None) -> Tracks | None:
        """The plugin's Tracks layer of a plugin result, else the layer "<name> tracks"
        (what the CTC and GEFF readers add)."""
        if labels is None:
            return None
        tag = tag_of(labels)
        if tag and tag.get("kind") == "labels":
            own = find_own(self._viewer, tag.get("source"), "tracks")
            if own is not None:
                return own
        return self._layer(f"{labels.name} tracks", Tracks)

    def _looks_true(self, layer: Labels) -> bool:
        """Ground truth as the CTC reader opens it: with a "<name> SEG" sibling, SEG masks
        themselves, or "GT" in the name."""
        return (
            self._layer(f"{layer.name} SEG", Labels) is not None
            or "seg_frames" in layer.metadata
            or "GT" in layer.name
        )

    def _pick_defaults(self, _event=None) -> None:
        """Pick a result to review (the plugin's newest result, else a layer that does not
        look like ground truth) and ground truth, where none is chosen yet."""
        labels = [ly for ly in self._viewer.layers if isinstance(ly, Labels)]
        own = [ly for ly in labels if (tag_of(ly) or {}).get("kind") == "labels"]
        current = self._labels.value
        if own and (current is None or not tag_of(current)):
            self._labels.value = own[-1]
        elif current is None or self._looks_true(current):
            other = [ly for ly in labels if not self._looks_true(ly)]
            if other:
                self._labels.value = other[-1]
        self._on_labels(self._labels.value)

    def _pick_truth(self) -> None:
        if self._gt.value is not None and self._gt.value is not self._labels.value:
            return
        labels = [ly for ly in self._viewer.layers if isinstance(ly, Labels)]
        truth = [ly for ly in labels if self._layer(f"{ly.name} SEG", Labels) is not None]
        truth = truth or [
            ly for ly in labels if "GT" in ly.name and "seg_frames" not in ly.metadata
        ]
        truth = [ly for ly in truth if ly is not self._labels.value]
        if truth:
            self._gt.value = truth[0]
            self._on_gt(truth[0])

    def _on_labels(self, layer: Labels | None) -> None:
        tracks = self._tracks_for(layer)
        if tracks is not None:
            self._tracks.value = tracks
        self._pick_truth()

    def _on_gt(self, layer: Labels | None) -> None:
        if layer is None:
            return
        tracks = self._tracks_for(layer)
        if tracks is not None:
            self._gt_tracks.value = tracks
        seg = self._layer(f"{layer.name} SEG", Labels)
        if seg is not None:
            self._gt_seg.value = seg

    # ------------------------------------------------------------------ inputs
    def _result(self) -> tuple[Labels, np.ndarray, np.ndarray | None]:
        layer = self._labels.value
        if not isinstance(layer, Labels):
            raise InputError("choose the labels layer to review (label = track id)")
        data = np.asarray(layer.data)
        if data.ndim != 3 or not np.issubdtype(data.dtype, np.integer):
            raise InputError(
                f"labels {layer.name!r} have shape {data.shape}; expected a (T, Y, X) movie "
                "of labels"
            )
        lineage = None
        if self._tracks.value is not None:
            tdata, graph = tracks_of(self._tracks.value)
            lineage = tracks_to_lineage(tdata, graph)
        return layer, data.copy(), lineage

    def _outputs_for(self, layer: Labels, shape: tuple[int, ...]):
        """The track widget's kept network outputs when ``layer`` is that run's result."""
        widget = self.session.track_widget
        record = getattr(getattr(widget, "state", None), "record", None)
        tag = tag_of(layer)
        if record is None or record.is_2d or not tag or tag.get("source") != record.source:
            return None, ClusterParams(), 0
        if not record.outputs or record.outputs[0].shape != tuple(shape[1:]):
            return None, record.params, 0
        return record.outputs, record.params, record.first_frame

    # ------------------------------------------------------------------ review queue
    def find_suspects(self):
        """Score the chosen result in a worker; the queue fills when it is done (None and a
        message for bad input or while busy)."""
        if self.runner.running:
            return None
        try:
            layer, data, lineage = self._result()
        except (InputError, ValueError) as err:
            return self._refuse(str(err))
        outputs, params, start = self._outputs_for(layer, data.shape)
        gen = iter_confidence(data, lineage, outputs, params=params, output_start=start)
        self._busy(True)
        what = "with the network's outputs" if outputs else "geometric cues only (no outputs)"
        self._status.value = f"scoring {layer.name!r}, {what}"

        def done(report: ConfidenceReport) -> None:
            self.report = report
            if self._scored is not layer:
                self.evaluation = None
            self._scored = layer
            self._show_queue()
            self._set_track_properties()
            if self._colour.value:
                self._on_colour(True)
            n = sum(s.confidence < 0.5 for s in report.suspects)
            self._status.value = f"{len(report.suspects)} suspect(s), {n} below 0.5 ({what})"

        self.runner.start(gen, "EmbedTrack review", done)
        return self.runner.worker

    def _refuse(self, message: str) -> None:
        self._status.value = message
        show_error(f"EmbedTrack: {message}")
        return None

    def _busy(self, on: bool) -> None:
        for w in self._inputs:
            w.enabled = not on
        self._cancel.enabled = on

    def _on_done(self, _result) -> None:
        self._busy(False)

    def _decisions(self) -> dict[tuple[int, int, str], str]:
        meta = self._scored.metadata.get(QUEUE) if self._scored is not None else None
        out: dict[tuple[int, int, str], str] = {}
        for status in ("correct", "fixed"):
            for frame, label, kind in (meta or {}).get(status, []):
                out[(int(frame), int(label), str(kind))] = status
        return out

    def _show_queue(self) -> None:
        """Errors against ground truth first, then the suspects; decided items last."""
        errors = self.evaluation.errors if self.evaluation is not None else []
        suspects = self.report.suspects if self.report is not None else []
        decisions = self._decisions()
        items = sorted(errors, key=lambda s: (s.frame, s.kind, s.label)) + list(suspects)
        self.queue = sorted(items, key=lambda s: s.key in decisions)  # stable
        table = self._table
        table.blockSignals(True)
        table.setRowCount(len(self.queue))
        for row, s in enumerate(self.queue):
            status = decisions.get(s.key, "")
            values = (s.frame, s.label, s.kind, f"{s.confidence:.2f}", s.reason, status)
            for col, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                if col in (0, 1, 3):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight)
                if status:
                    item.setForeground(QColor("gray"))
                elif col == 3:
                    item.setBackground(QColor.fromRgbF(*_colour_of(s.confidence)))
                    item.setForeground(QColor("black"))
                table.setItem(row, col, item)
            table.item(row, COLUMNS.index("reason")).setToolTip(s.reason)
        table.blockSignals(False)
        self._correct.enabled = self._fixed.enabled = False

    def selected(self) -> int | None:
        rows = self._table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def select(self, row: int) -> None:
        """Select a queue item (as a click does): show its frame, centred and zoomed."""
        self._table.selectRow(row)

    def _on_select(self) -> None:
        row = self.selected()
        ok = row is not None and row < len(self.queue)
        self._correct.enabled = self._fixed.enabled = ok
        if ok:
            self.go_to(self.queue[row])

    def go_to(self, item: Suspect) -> None:
        """Show ``item``'s frame, centred on it and zoomed to a few cell diameters."""
        layer = self._scored or self._labels.value
        point = np.array([item.frame, item.y, item.x], float)
        world = layer.data_to_world(point) if layer is not None else point
        self._viewer.dims.set_point(0, float(world[0]))
        cam = _camera(self._viewer)
        cam.center = (float(world[1]), float(world[2]))
        diameter = 20.0
        if self.report is not None:
            cells = self.report.cells
            here = (cells["t"] == item.frame) & (cells["label"] == item.label)
            if here.any():
                diameter = max(2.0 * float(np.sqrt(cells["area"][here][0] / np.pi)), 8.0)
        scale = float(np.asarray(layer.scale)[-1]) if layer is not None else 1.0
        canvas = min(getattr(self._viewer.canvas, "size", (600, 600)))
        cam.zoom = canvas / (VIEW_DIAMETERS * diameter * scale)
        if (
            isinstance(layer, Labels)
            and item.kind not in ("missed",)
            and item.label
            and np.any(np.asarray(layer.data[item.frame]) == item.label)
        ):
            layer.selected_label = item.label

    def mark(self, status: str) -> None:
        """Record the selected item as ``"correct"`` or ``"fixed"`` (again: forget it)."""
        row = self.selected()
        if row is None or self._scored is None or row >= len(self.queue):
            return
        key = list(self.queue[row].key)
        meta = self._scored.metadata.setdefault(QUEUE, {"correct": [], "fixed": []})
        had = key in meta.get(status, [])
        for s in ("correct", "fixed"):
            meta[s] = [k for k in meta.get(s, []) if list(k) != key]
        if not had:
            meta[status].append(key)
        self._show_queue()
        n = sum(1 for s in self.queue if s.key in self._decisions())
        self._status.value = f"{n} of {len(self.queue)} item(s) reviewed"

    # ------------------------------------------------------------------ colour
    def _node_rows(self, tracks: Tracks) -> tuple[np.ndarray, np.ndarray]:
        """Confidence and link confidence of each row of a Tracks layer (1 / NaN where the
        report has no such cell)."""
        cells = self.report.cells
        data = np.asarray(tracks.data)
        n_t = int(max(cells["t"].max(initial=0), data[:, 1].max(initial=0))) + 1
        key = cells["label"] * n_t + cells["t"]
        row_key = data[:, 0].astype(np.int64) * n_t + data[:, 1].astype(np.int64)
        order = np.argsort(key)
        pos = np.searchsorted(key, row_key, sorter=order).clip(0, max(key.size - 1, 0))
        hit = key[order[pos]] == row_key if key.size else np.zeros(len(data), bool)
        node = np.ones(len(data))
        link = np.full(len(data), np.nan)
        node[hit] = self.report.node_confidence()[order[pos[hit]]]
        link[hit] = cells["link_confidence"][order[pos[hit]]]
        return node, link

    def _set_track_properties(self) -> None:
        tracks = self._tracks.value
        if self.report is None or not isinstance(tracks, Tracks) or not len(tracks.data):
            return
        node, link = self._node_rows(tracks)
        props = dict(tracks.properties)
        props["confidence"], props["link_confidence"] = node, link
        color_by = tracks.color_by
        tracks.properties = props
        tracks.colormaps_dict = {**tracks.colormaps_dict, "confidence": CONFIDENCE_CMAP}
        if color_by in props:
            tracks.color_by = color_by

    def _on_colour(self, on: bool) -> None:
        labels, tracks = self._scored, self._tracks.value
        if on and self.report is None:
            self._status.value = "find suspects first: the colours show their confidence"
            return
        if isinstance(tracks, Tracks) and "confidence" in tracks.properties:
            tracks.color_by = "confidence" if on else "track_id"
        if not isinstance(labels, Labels):
            return
        if on:
            self._old_colormap.setdefault(id(labels), labels.colormap)
            colors = {  # labels not scored (e.g. painted since): grey, not hidden
                None: np.array([0.6, 0.6, 0.6, 1.0]),
                0: np.array([0.0, 0.0, 0.0, 0.0]),
            }
            for track, conf in self.report.track_confidence().items():
                colors[int(track)] = _colour_of(conf)
            labels.colormap = DirectLabelColormap(color_dict=colors)
        elif id(labels) in self._old_colormap:
            labels.colormap = self._old_colormap.pop(id(labels))

    # ------------------------------------------------------------------ evaluation
    def _truth(self, shape: tuple[int, ...]):
        gt = self._gt.value
        if not isinstance(gt, Labels):
            raise InputError("choose a ground-truth labels layer to evaluate against")
        gt_data = np.asarray(gt.data)
        if tuple(gt_data.shape) != tuple(shape):
            raise InputError(
                f"ground truth {gt.name!r} has shape {gt_data.shape} but the labels have "
                f"shape {tuple(shape)}; expected the same frames and size"
            )
        gt_lineage = None
        if self._gt_tracks.value is not None:
            gt_lineage = tracks_to_lineage(*tracks_of(self._gt_tracks.value))
        seg = None
        seg_layer = self._gt_seg.value
        if isinstance(seg_layer, Labels):
            seg_data = np.asarray(seg_layer.data)
            if seg_data.shape != gt_data.shape:
                raise InputError(
                    f"SEG masks {seg_layer.name!r} have shape {seg_data.shape}; expected "
                    f"{gt_data.shape}"
                )
            frames = seg_layer.metadata.get("seg_frames")
            if frames is None:
                frames = [t for t in range(seg_data.shape[0]) if seg_data[t].any()]
            seg = {int(t): seg_data[int(t)] for t in frames}
        return gt_data, gt_lineage, seg

    def evaluate(self):
        """Score the chosen labels against the ground truth in a worker (None and a message
        for bad input or while busy)."""
        if self.runner.running:
            return None
        try:
            layer, data, lineage = self._result()
            gt, gt_lineage, seg = self._truth(data.shape)
        except (InputError, ValueError) as err:
            return self._refuse(str(err))
        gen = iter_evaluate(data, lineage, gt, gt_lineage, seg)
        self._busy(True)

        def done(ev: Evaluation) -> None:
            self.evaluation = ev
            if self._scored is not layer:
                self.report = None
            self._scored = layer
            self._scores.value = _score_text(ev.scores)
            self._show_queue()
            self._status.value = f"evaluated: {len(ev.errors)} error cell(s) in the queue"

        self.runner.start(gen, "EmbedTrack evaluation", done)
        return self.runner.worker

    @property
    def scores(self) -> dict | None:
        """The last evaluation's scores (the numbers ``embedtrack evaluate`` prints)."""
        return self.evaluation.scores if self.evaluation is not None else None


def _colour_of(conf: float) -> np.ndarray:
    return np.asarray(CONFIDENCE_CMAP.map(np.array([float(conf)]))[0], float)
