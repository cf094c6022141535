"""Dock widget "Edit tracks (EmbedTrack)": track editing that keeps the Labels and Tracks
layers of a result consistent, with undo, and pins (issue #17 part 2).

The operations are :mod:`engine.edit`'s (split a track at a frame, join two tracks, set or
remove a parent, delete a track, give a cell or a mask another id, adopt painted frames);
each one changes the labels layer (only the frames it changes, in place) and rebuilds the
tracks layer from the new lineage, so both always hold one valid CTC result. **Undo** /
**Redo** go back and forth over these edits, both layers together (napari's own paint undo
is reset after each edit: it would restore pixels without the tracks).

Every edit pins the cells and links it fixed. Pins are kept per result (the tracked
input's name for the plugin's results) in :func:`pins_of`; the track widget's runs and
re-clusterings put them back into the new result (:func:`keep_pins`, called by
``TrackWidget._start``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Generator
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox
from napari.layers import Labels, Tracks
from napari.utils.notifications import show_error

from ..engine import edit as E
from ..engine.progress import Progress
from ..io.tracks import lineage_from_labels, lineage_to_tracks, tracks_to_lineage
from ._inputs import InputError, tracks_of
from ._layers import (
    find_own,
    follow_layers,
    layer_choices,
    record_corrected,
    reviewed_frames,
    tag_of,
    watch_viewer,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- pins
_pins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pins_of(viewer: Any) -> dict[str, E.Pins]:
    """The pins of each result shown in ``viewer``, by result key (:func:`result_key`)."""
    found = _pins.get(viewer)
    if found is None:
        found = _pins[viewer] = {}
    return found


def result_key(layer: Labels) -> str:
    """The plugin's results: the tracked input's name (a re-run or re-clustering of that
    input gets the pins); other layers: their own name."""
    tag = tag_of(layer)
    if tag and tag.get("kind") == "labels" and tag.get("source"):
        return str(tag["source"])
    return f"layer:{layer.name}"


def keep_pins(viewer: Any, gen: Generator[Progress, None, Any]):
    """Drive a tracking or re-clustering generator of the track widget and put the pins of
    its input's result back into the run record it returns (the pins as they were when the
    run started)."""
    pins = dict(pins_of(viewer))
    record = yield from gen
    found = pins.get(getattr(record, "source", None))
    if record is None or not found or getattr(record, "is_2d", True):
        return record
    yield Progress(0, 0, f"putting {len(found)} pinned cell(s) back")
    return pinned_record(record, found)


def pinned_record(record, pins: E.Pins):
    """A run record (``_state.RunRecord``) with ``pins`` imposed on its labels and lineage
    (in place: the record is new)."""
    import dataclasses

    if record.labels_store is not None:  # long movie: the full-length labels on disk
        shift = np.array([0, record.first_frame, record.first_frame, 0])
        store = record.labels_store
        _, lineage, _ = E.impose_pins(store, record.lineage + shift, pins, in_place=True)
        lineage[:, 1:3] -= record.first_frame
        return dataclasses.replace(record, lineage=lineage)
    labels, lineage, _ = E.impose_pins(
        record.labels, record.lineage, pins, first_frame=record.first_frame, in_place=True
    )
    return dataclasses.replace(record, labels=labels, lineage=lineage)


# --------------------------------------------------------------------------- widget
class EditWidget(Container):
    """Edit the tracks of a result: both layers change together, with undo; edits pinned."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = napari_viewer
        watch_viewer(napari_viewer)
        self.history = E.UndoStack()
        self._writing = False
        self._watched: Labels | None = None

        self._labels = ComboBox(label="labels", choices=layer_choices(self._viewer, Labels))
        self._labels.tooltip = "The result to edit (label = track id)"
        self._tracks = ComboBox(
            label="tracks", choices=layer_choices(self._viewer, Tracks), nullable=True
        )
        self._tracks.tooltip = "Its divisions (updated with every edit; none: one is made)"
        self._track = SpinBox(label="track", min=0, max=2**31 - 1)
        self._track.tooltip = "The selected label (pick it with the labels layer's picker)"
        self._other = SpinBox(label="other track", min=0, max=2**31 - 1)
        self._other.tooltip = "The second track of join / parent / relabel (0: a new id)"
        self._split = PushButton(text="Split track here")
        self._split.tooltip = "The track's cells from the current frame on become a new track"
        self._join = PushButton(text="Join: other continues track")
        self._parent = PushButton(text="Other is the parent")
        self._parent.tooltip = "The other track divides into the track (a division)"
        self._unparent = PushButton(text="Remove parent")
        self._delete = PushButton(text="Delete track")
        self._relabel = PushButton(text="Cell -> other track")
        self._relabel.tooltip = "The track's cell in the current frame gets the other id"
        self._adopt = PushButton(text="Adopt painted frames")
        self._adopt.tooltip = "Make the tracks agree with frames painted with napari's tools"
        self._pin = PushButton(text="Pin cell")
        self._pin.tooltip = "Keep this cell and its link as they are in later re-runs"
        self._clear = PushButton(text="Clear pins")
        self._undo = PushButton(text="Undo", enabled=False)
        self._redo = PushButton(text="Redo", enabled=False)
        self._status = Label(label="", value="")
        self._pins_info = Label(label="", value="")

        def row(*widgets):
            c = Container(widgets=list(widgets), layout="horizontal", labels=False)
            c.margins = (0, 0, 0, 0)
            return c

        self.extend([
            self._labels, self._tracks, self._track, self._other,
            row(self._split, self._join), row(self._parent, self._unparent),
            row(self._delete, self._relabel), row(self._adopt, self._pin),
            row(self._undo, self._redo, self._clear), self._status, self._pins_info,
        ])  # fmt: skip
        self._split.clicked.connect(lambda: self.split())
        self._join.clicked.connect(lambda: self.join())
        self._parent.clicked.connect(lambda: self.set_parent())
        self._unparent.clicked.connect(lambda: self.remove_parent())
        self._delete.clicked.connect(lambda: self.delete())
        self._relabel.clicked.connect(lambda: self.relabel())
        self._adopt.clicked.connect(lambda: self.adopt())
        self._pin.clicked.connect(lambda: self.pin())
        self._clear.clicked.connect(self.clear_pins)
        self._undo.clicked.connect(self.undo)
        self._redo.clicked.connect(self.redo)
        self._labels.changed.connect(self._on_labels)
        follow_layers(self._viewer, self, self._pick_defaults)
        self.reset_choices()
        self._pick_defaults()

    # ------------------------------------------------------------------ layers
    def _pick_defaults(self, _event=None) -> None:
        labels = [ly for ly in self._viewer.layers if isinstance(ly, Labels)]
        own = [ly for ly in labels if (tag_of(ly) or {}).get("kind") == "labels"]
        if own and (self._labels.value is None or not tag_of(self._labels.value)):
            self._labels.value = own[-1]
        self._on_labels(self._labels.value)

    def _tracks_for(self, labels: Labels) -> Tracks | None:
        tag = tag_of(labels)
        if tag and tag.get("kind") == "labels":
            own = find_own(self._viewer, tag.get("source"), "tracks")
            if isinstance(own, Tracks):
                return own
        found = [ly for ly in self._viewer.layers if ly.name == f"{labels.name} tracks"]
        return found[0] if found and isinstance(found[0], Tracks) else None

    def _on_labels(self, layer: Labels | None) -> None:
        if layer is self._watched:
            return
        if self._watched is not None:
            self._watched.events.selected_label.disconnect(self._on_selected)
            self._watched.events.data.disconnect(self._on_data)
        self._watched = layer
        self.history.clear()
        self._update_buttons()
        if layer is None:
            return
        tracks = self._tracks_for(layer)
        if tracks is not None:
            self._tracks.value = tracks
        layer.events.selected_label.connect(self._on_selected)
        layer.events.data.connect(self._on_data)
        self._show_pins()

    def _on_selected(self, _event=None) -> None:
        if self._watched is not None:
            self._track.value = int(self._watched.selected_label)

    def _on_data(self, _event=None) -> None:
        """New data from elsewhere (a re-run, re-clustering): the undo history is void."""
        if not self._writing:
            self.history.clear()
            self._update_buttons()

    def _layer(self) -> Labels:
        layer = self._labels.value
        if not isinstance(layer, Labels):
            raise InputError("choose the labels layer of a tracking result (label = track id)")
        if not isinstance(layer.data, np.ndarray) or layer.data.ndim != 3:
            raise InputError(
                f"labels {layer.name!r}: a {type(layer.data).__name__} of shape "
                f"{getattr(layer.data, 'shape', '?')}; editing needs a (T, Y, X) movie in "
                "memory"
            )
        return layer

    def _lineage(self, labels: np.ndarray) -> np.ndarray:
        tracks = self._tracks.value
        if isinstance(tracks, Tracks) and len(tracks.data):
            return tracks_to_lineage(*tracks_of(tracks))
        return lineage_from_labels(labels)

    def frame(self) -> int:
        """The current frame in the labels layer's frame indices."""
        layer = self._labels.value
        point = self._viewer.dims.point
        if isinstance(layer, Labels):
            return round(float(layer.world_to_data(point)[0]))
        return round(float(point[0]))

    @property
    def pins(self) -> E.Pins:
        layer = self._labels.value
        if not isinstance(layer, Labels):
            return E.Pins()
        return pins_of(self._viewer).get(result_key(layer), E.Pins())

    def _show_pins(self) -> None:
        n = len(self.pins)
        self._pins_info.value = f"{n} pinned cell(s): kept by re-runs and re-clustering"

    def _update_buttons(self) -> None:
        self._undo.enabled = self.history.can_undo
        self._redo.enabled = self.history.can_redo

    # ------------------------------------------------------------------ apply
    def _do(self, make) -> E.Edit | None:
        """Run ``make(labels, lineage, pins)`` -> Edit on the chosen layers and apply it
        (None and a one-line message if it is refused)."""
        try:
            layer = self._layer()
            labels = layer.data
            lineage = self._lineage(labels)
            pins = self.pins
            edit = make(labels, lineage, pins)
        except (InputError, ValueError) as err:
            self._status.value = str(err)
            show_error(f"EmbedTrack: {err}")
            return None
        self.history.record(labels, lineage, edit, pins)
        self._apply(layer, edit)
        return edit

    def _apply(self, layer: Labels, edit: E.Edit) -> None:
        self._writing = True
        try:
            data = layer.data
            if edit.labels.shape == data.shape and edit.frames:
                for t in edit.frames:
                    data[t] = edit.labels[t]
            layer.refresh()
            if edit.frames:  # corrections: fine-tuning trains on these frames; the edits
                record_corrected(layer, edit.frames, own=False)  # are pinned for re-runs
            if hasattr(layer, "_reset_history"):  # napari's paint undo: pixels only
                layer._reset_history()
            self._set_tracks(layer, data, edit.lineage)
        finally:
            self._writing = False
        pins_of(self._viewer)[result_key(layer)] = edit.pins
        self._status.value = edit.message
        self._show_pins()
        self._update_buttons()

    def _set_tracks(self, layer: Labels, labels: np.ndarray, lineage: np.ndarray) -> None:
        data, graph, props = lineage_to_tracks(labels, lineage)
        tracks = self._tracks.value
        if not isinstance(tracks, Tracks):
            if not len(data):
                return
            place = {"scale": layer.scale, "translate": layer.translate}
            tracks = Tracks(data, graph=graph, properties=props, name=f"{layer.name} tracks",
                            tail_length=10, **place)  # fmt: skip
            self._viewer.add_layer(tracks)
            self._tracks.value = tracks
            return
        if not len(data):  # napari's Tracks cannot be empty: one invisible point stays
            data = np.zeros((1, 4))
            graph, props = {}, {k: np.zeros(1, v.dtype) for k, v in props.items()}
        color_by = tracks.color_by
        tracks.color_by = "track_id"  # the data setter drops the properties
        tracks.data = data
        tracks.properties = props
        tracks.graph = graph
        if color_by in props:
            tracks.color_by = color_by

    # ------------------------------------------------------------------ operations
    def _t(self, value):
        return self._track.value if value is None else int(value)

    def _o(self, value):
        return self._other.value if value is None else int(value)

    def _f(self, value):
        return self.frame() if value is None else int(value)

    def split(self, track: int | None = None, frame: int | None = None):
        """Split ``track`` (default: the selected one) before ``frame`` (default: current)."""
        track, frame = self._t(track), self._f(frame)
        return self._do(lambda lab, lin, p: E.split_track(lab, lin, track, frame, pins=p))

    def join(self, track: int | None = None, other: int | None = None):
        """``other`` continues ``track``."""
        track, other = self._t(track), self._o(other)
        return self._do(lambda lab, lin, p: E.join_tracks(lab, lin, track, other, pins=p))

    def set_parent(self, child: int | None = None, parent: int | None = None):
        """``parent`` (default: the other track) divides into ``child`` (the track)."""
        child, parent = self._t(child), self._o(parent)
        return self._do(lambda lab, lin, p: E.set_parent(lab, lin, child, parent, pins=p))

    def remove_parent(self, track: int | None = None):
        track = self._t(track)
        return self._do(lambda lab, lin, p: E.remove_parent(lab, lin, track, pins=p))

    def delete(self, track: int | None = None):
        track = self._t(track)
        return self._do(lambda lab, lin, p: E.delete_track(lab, lin, track, pins=p))

    def relabel(self, frame: int | None = None, track: int | None = None, other=None):
        """The cell of ``track`` in ``frame`` gets the id ``other`` (0: a new track)."""
        frame, track, other = self._f(frame), self._t(track), self._o(other)

        def make(lab, lin, p):
            new = other or int(max(lab.max(), lin[:, 0].max(initial=0))) + 1
            return E.relabel_cell(lab, lin, frame, track, new, pins=p)

        return self._do(make)

    def relabel_mask(self, frame: int, mask: np.ndarray, label: int):
        """The pixels of ``mask`` in ``frame`` get ``label`` (0 erases them)."""
        return self._do(lambda lab, lin, p: E.relabel_mask(lab, lin, frame, mask, label, pins=p))

    def adopt(self, frames: list[int] | None = None):
        """Make the tracks agree with the labels after painting with napari's tools and pin
        the cells of the painted frames (default: the frames recorded as corrected)."""
        layer = self._labels.value
        if frames is None:
            frames = reviewed_frames(layer)[0] if isinstance(layer, Labels) else []
        return self._do(lambda lab, lin, p: E.adopt_frames(lab, lin, frames, pins=p))

    def pin(self, frame: int | None = None, track: int | None = None) -> bool:
        """Pin the cell of ``track`` in ``frame`` and its link as they are."""
        frame, track = self._f(frame), self._t(track)
        try:
            layer = self._layer()
            pins = E.pin_cell(layer.data, self._lineage(layer.data), frame, track, self.pins)
        except (InputError, ValueError) as err:
            self._status.value = str(err)
            show_error(f"EmbedTrack: {err}")
            return False
        pins_of(self._viewer)[result_key(layer)] = pins
        self._status.value = f"frame {frame}: cell {track} pinned"
        self._show_pins()
        return True

    def clear_pins(self) -> None:
        layer = self._labels.value
        if isinstance(layer, Labels):
            pins_of(self._viewer).pop(result_key(layer), None)
        self._status.value = "pins cleared: re-runs decide everything again"
        self._show_pins()

    def undo(self):
        return self._step(self.history.undo)

    def redo(self):
        return self._step(self.history.redo)

    def _step(self, how) -> E.Edit | None:
        try:
            layer = self._layer()
            edit = how(layer.data, self._lineage(layer.data), self.pins)
        except (InputError, ValueError) as err:
            self._status.value = str(err)
            return None
        self._apply(layer, edit)
        return edit
