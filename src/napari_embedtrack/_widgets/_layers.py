"""The plugin's output layers: naming, recognising, replacing and building them, and the
frames of a Labels layer the user corrected or confirmed.

Every output layer carries ``metadata["embedtrack"] = {"source": <input layer name>,
"kind": <kind>}`` (the labels also ``"model"``: the folder of the model that made them). A
re-run (or re-clustering) updates the layer of the same source and kind in place; other
layers are never touched, and a user layer that happens to have the same name stays (napari
gives the new layer a distinct name). A Labels output that the user paints into, or whose
frame the user confirms, becomes the user's: it is marked ``"edited": True`` and is no
longer replaced.

Names put the kind first (``"seediness: movie"``), so that they differ in the part napari's
layer list shows. Inspection images go below the result labels (they would hide them
otherwise); the offset arrows go on top.

Reviewed frames: every Labels layer of a viewer with a plugin widget is watched; a frame
painted, filled or erased in is recorded as *corrected*, and the fine-tune widget can mark
a frame *confirmed* (checked, correct as it is). Both lists live in the layer's
``metadata["embedtrack_review"] = {"corrected": [...], "confirmed": [...]}`` (frame indices
of the layer's first axis). Edits made before a plugin widget was opened are not known.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence

import napari
import numpy as np
from napari.layers import Image, Labels, Layer, Tracks, Vectors
from napari.utils.notifications import show_info

from ..engine.outputs import FrameOutput
from ._state import RunRecord

log = logging.getLogger(__name__)

TAG = "embedtrack"
REVIEW = "embedtrack_review"
INSPECTION = ("seediness", "bandwidth_y", "bandwidth_x", "offsets", "track_offsets")
#: Layer names start with the kind: ``"<kind>: <source>"``.
_KINDS = {
    "labels": "labels",
    "tracks": "tracks",
    "seediness": "seediness",
    "bandwidth_y": "y bandwidth",
    "bandwidth_x": "x bandwidth",
    "offsets": "offsets",
    "track_offsets": "track offsets",
}
#: Vectors: one arrow every this many pixels, where seediness exceeds VECTOR_MIN_SEED.
VECTOR_STEP = 8
VECTOR_MIN_SEED = 0.5


def layer_name(source: str, kind: str) -> str:
    """``"labels: <source>"``, ``"tracks: <source>"``, ``"seediness: <source>"``, ..."""
    return f"{_KINDS[kind]}: {source}"


def tag_of(layer: Layer) -> dict | None:
    """The plugin's marker of a layer, or None for other layers."""
    tag = layer.metadata.get(TAG) if isinstance(layer.metadata, dict) else None
    return tag if isinstance(tag, dict) else None


def find_own(viewer: napari.Viewer, source: str, kind: str) -> Layer | None:
    """The plugin's (unedited) output layer of ``kind`` for input ``source``, if any."""
    for layer in viewer.layers:
        tag = tag_of(layer)
        if tag and not tag.get("edited") and (tag.get("source"), tag.get("kind")) == (source, kind):
            return layer
    return None


def remove_own(viewer: napari.Viewer, source: str, kinds: Sequence[str]) -> None:
    for kind in kinds:
        layer = find_own(viewer, source, kind)
        if layer is not None:
            viewer.layers.remove(layer)


def _add(
    viewer: napari.Viewer, layer: Layer, source: str, kind: str, index: int | None = None
) -> Layer:
    """Tag ``layer`` and add it on top, or at ``index`` of the layer list."""
    layer.metadata[TAG] = {"source": source, "kind": kind}
    if index is None:
        return viewer.add_layer(layer)
    viewer.layers.insert(index, layer)
    return layer


def _below_results(viewer: napari.Viewer, source: str) -> int | None:
    """Index just below the lowest result layer (labels or tracks, edited ones too) of
    ``source``; None (on top) if there is none."""
    found = [
        i
        for i, layer in enumerate(viewer.layers)
        if (tag := tag_of(layer))
        and tag.get("source") == source
        and tag.get("kind") in ("labels", "tracks")
    ]
    return min(found) if found else None


def _placement(input_layer: Layer | None, first_frame: int = 0) -> dict:
    """scale / translate of the input layer, shifted by ``first_frame`` frames."""
    if input_layer is None:
        return {}
    scale = np.asarray(input_layer.scale, float)
    translate = np.asarray(input_layer.translate, float).copy()
    if first_frame:
        translate[0] += first_frame * scale[0]
    return {"scale": scale, "translate": translate}


def _mark_edited(layer: Labels) -> None:
    tag = tag_of(layer)
    if tag and tag.get("kind") == "labels" and not tag.get("edited"):
        tag["edited"] = True
        show_info(
            f"{layer.name!r} was edited: it is now yours; re-running or re-clustering "
            "EmbedTrack will write a new layer"
        )


# --------------------------------------------------------------------------- layer choices
def layer_choices(viewer: napari.Viewer, kind: type) -> Callable:
    """ComboBox choices: the viewer's layers of ``kind``, by name, as they are when asked."""
    return lambda _w=None: [(ly.name, ly) for ly in viewer.layers if isinstance(ly, kind)]


def follow_layers(viewer: napari.Viewer, widget, on_inserted: Callable | None = None) -> None:
    """Refresh ``widget``'s layer choices when layers are added, removed or reordered, and
    call ``on_inserted`` (if given) when one is added."""
    events = viewer.layers.events
    for ev in (events.inserted, events.removed, events.reordered):
        ev.connect(widget.reset_choices)
    if on_inserted is not None:
        events.inserted.connect(on_inserted)


# --------------------------------------------------------------------------- reviewed frames
_watched: weakref.WeakSet = weakref.WeakSet()


def _review(layer: Labels) -> dict[str, list[int]]:
    review = layer.metadata.get(REVIEW)
    if not isinstance(review, dict):
        review = layer.metadata[REVIEW] = {"corrected": [], "confirmed": []}
    return review


def _edited_frames(atoms) -> set[int]:
    """Indices along the first axis touched by a Labels paint event's history atoms."""
    frames: set[int] = set()
    for atom in atoms or ():
        key = getattr(atom, "slice_key", None)  # napari >= 0.7: a bounding box
        if key is not None:
            first = key[0]
            if isinstance(first, slice):
                frames.update(range(first.start or 0, first.stop))
            else:
                frames.add(int(first))
        else:  # (indices, old values, new values)
            frames.update(int(t) for t in np.unique(np.asarray(atom[0][0])))
    return frames


def _on_paint(layer: Labels, event) -> None:
    record_corrected(layer, _edited_frames(event.value))


def record_corrected(layer: Labels, frames, own: bool = True) -> None:
    """The user changed these frames of a Labels layer: fine-tuning trains on them (as
    corrected frames). ``own``: the layer is the user's now (painting; re-runs write a new
    layer). The edit widget's edits are pinned and carried into re-runs instead."""
    if own:
        _mark_edited(layer)
    if layer.ndim != 3:
        return
    review = _review(layer)
    review["corrected"] = sorted(set(review["corrected"]) | {int(t) for t in frames})


def watch_edits(layer: Layer) -> None:
    """Record the frames painted, filled or erased in a Labels layer (once per layer)."""
    if isinstance(layer, Labels) and layer not in _watched:
        _watched.add(layer)
        ref = weakref.ref(layer)
        layer.events.paint.connect(
            lambda event: (lay := ref()) is not None and _on_paint(lay, event), position="first"
        )


def watch_viewer(viewer: napari.Viewer) -> None:
    """Watch every Labels layer of the viewer, now and as they are added (once per viewer)."""
    if viewer.layers in _watched:
        return
    _watched.add(viewer.layers)
    for layer in viewer.layers:
        watch_edits(layer)
    viewer.layers.events.inserted.connect(lambda event: watch_edits(event.value))


def reviewed_frames(layer: Labels | None) -> tuple[list[int], list[int]]:
    """The frames of a Labels layer the user corrected and those the user confirmed."""
    review = layer.metadata.get(REVIEW) if layer is not None else None
    if not isinstance(review, dict):
        return [], []
    return list(review.get("corrected", [])), list(review.get("confirmed", []))


def toggle_reviewed(layer: Labels, frame: int) -> bool:
    """Confirm ``frame`` of a Labels layer, or, if it is corrected or confirmed already,
    forget that it was. Returns whether the frame is reviewed now. Confirming a frame of a
    plugin result makes the layer the user's (later runs do not overwrite it)."""
    review = _review(layer)
    if frame in review["corrected"] or frame in review["confirmed"]:
        review["corrected"] = [t for t in review["corrected"] if t != frame]
        review["confirmed"] = [t for t in review["confirmed"] if t != frame]
        return False
    review["confirmed"] = sorted({*review["confirmed"], int(frame)})
    _mark_edited(layer)
    return True


# --------------------------------------------------------------------------- labels, tracks
def show_result(
    viewer: napari.Viewer, record: RunRecord, input_layer: Layer | None
) -> tuple[Labels, Tracks | None]:
    """Create or update the Labels and Tracks layers of a run."""
    source = record.source
    place = _placement(input_layer)
    labels = record.full_labels()
    layer = find_own(viewer, source, "labels")
    if isinstance(layer, Labels):
        layer.data = labels
        layer.metadata.pop(REVIEW, None)  # nothing of the new result was reviewed
        for key, value in place.items():
            setattr(layer, key, value)
    else:
        layer = Labels(labels, name=layer_name(source, "labels"), **place)
        _add(viewer, layer, source, "labels")
        watch_edits(layer)
    if record.model_path is not None:
        layer.metadata[TAG]["model"] = str(record.model_path)
    tracks = None
    if record.is_2d or len(record.lineage) == 0:
        remove_own(viewer, source, ["tracks"])
    else:
        tracks = _show_tracks(viewer, record, place)
    return layer, tracks


def _show_tracks(viewer: napari.Viewer, record: RunRecord, place: dict) -> Tracks:
    data, graph, props = record.tracks()
    layer = find_own(viewer, record.source, "tracks")
    if isinstance(layer, Tracks):
        color_by = layer.color_by
        layer.color_by = "track_id"  # the data setter drops the properties
        layer.data = data
        layer.properties = props
        layer.graph = graph
        if color_by in props:
            layer.color_by = color_by
        for key, value in place.items():
            setattr(layer, key, value)
        return layer
    layer = Tracks(
        data,
        graph=graph,
        properties=props,
        name=layer_name(record.source, "tracks"),
        tail_length=10,
        **place,
    )
    return _add(viewer, layer, record.source, "tracks")


# --------------------------------------------------------------------------- inspection
def offset_vectors(
    outputs: Sequence[FrameOutput],
    field: str,
    *,
    first_frame: int = 0,
    is_2d: bool = False,
    step: int = VECTOR_STEP,
    min_seed: float = VECTOR_MIN_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Arrows of an offset field on a grid, where seediness > ``min_seed``.

    Args:
        outputs: network outputs of consecutive frames, the first being ``first_frame``.
        field: ``"offsets"`` or ``"track_offsets"`` (the first output's tracking offsets are
            zeros and give no arrows).

    Returns:
        data: (N, 2, 3) float32 napari Vectors ``[[t, y, x], [0, dy, dx]]`` (pixels), or
            (N, 2, 2) for a 2D input.
        length: (N,) float32 arrow lengths in pixels.
    """
    rows = []
    for i, out in enumerate(outputs):
        if field == "track_offsets" and i == 0:
            continue
        h, w = out.shape
        ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
        keep = out.seediness[ys, xs] > min_seed
        ys, xs = ys[keep], xs[keep]
        off = getattr(out, field)
        t = np.full(ys.size, first_frame + i)
        pos = np.stack([t, ys, xs], 1)
        proj = np.stack([np.zeros(ys.size), off[0, ys, xs], off[1, ys, xs]], 1)
        rows.append(np.stack([pos, proj], 1))
    data = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 2, 3), np.float32)
    length = np.hypot(data[:, 1, 1], data[:, 1, 2]).astype(np.float32)
    return (data[:, :, 1:] if is_2d else data), length


def show_inspection(viewer: napari.Viewer, record: RunRecord, input_layer: Layer | None) -> None:
    """Create or update seediness, bandwidth and offset layers from the cached outputs."""
    outs = record.outputs
    if not outs:
        return
    source, t0 = record.source, record.first_frame
    place = _placement(input_layer, 0 if record.is_2d else t0)
    images = {
        "seediness": (np.stack([o.seediness for o in outs]), "magma", True),
        "bandwidth_y": (np.stack([o.bandwidth[0] for o in outs]), "viridis", False),
        "bandwidth_x": (np.stack([o.bandwidth[1] for o in outs]), "viridis", False),
    }
    for kind, (arr, cmap, visible) in images.items():
        arr = arr[0] if record.is_2d else arr
        layer = find_own(viewer, source, kind)
        if isinstance(layer, Image):
            layer.data = arr
            for key, value in place.items():
                setattr(layer, key, value)
        else:  # below the result labels: an image on top would hide them
            layer = Image(
                arr,
                name=layer_name(source, kind),
                colormap=cmap,
                contrast_limits=(0.0, 1.0),
                blending="additive",
                visible=visible,
                **place,
            )
            _add(viewer, layer, source, kind, index=_below_results(viewer, source))
    place = _placement(input_layer)
    for kind in ("offsets", "track_offsets"):
        if record.is_2d and kind == "track_offsets":
            continue
        data, length = offset_vectors(outs, kind, first_frame=t0, is_2d=record.is_2d)
        color = {"features": {"length": length}, "edge_color": "length"} if len(data) else {}
        remove_own(viewer, source, [kind])
        layer = Vectors(
            data,
            name=layer_name(source, kind),
            edge_width=1.0,
            edge_colormap="viridis",
            visible=kind == "offsets",
            ndim=2 if record.is_2d else 3,
            **color,
            **place,
        )
        _add(viewer, layer, source, kind)
