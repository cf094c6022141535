"""The plugin's output layers: naming, recognising, replacing and building them.

Every output layer carries ``metadata["embedtrack"] = {"source": <input layer name>,
"kind": <kind>}``. A re-run (or re-clustering) updates the layer of the same source and kind
in place; other layers are never touched, and a user layer that happens to have the same
name stays (napari gives the new layer a distinct name). A Labels output that the user
paints into becomes the user's: it is marked ``"edited": True`` and is no longer replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import napari
import numpy as np
from napari.layers import Image, Labels, Layer, Tracks, Vectors
from napari.utils.notifications import show_info

from ..engine.outputs import FrameOutput
from ._state import RunRecord

log = logging.getLogger(__name__)

TAG = "embedtrack"
SUFFIX = "[EmbedTrack]"
INSPECTION = ("seediness", "bandwidth_y", "bandwidth_x", "offsets", "track_offsets")
_NAMES = {
    "labels": "",
    "tracks": " tracks",
    "seediness": " seediness",
    "bandwidth_y": " bandwidth y",
    "bandwidth_x": " bandwidth x",
    "offsets": " offsets",
    "track_offsets": " track offsets",
}
#: Vectors: one arrow every this many pixels, where seediness exceeds VECTOR_MIN_SEED.
VECTOR_STEP = 8
VECTOR_MIN_SEED = 0.5


def layer_name(source: str, kind: str) -> str:
    """``"<source> [EmbedTrack]"``, ``"<source> tracks [EmbedTrack]"``, ..."""
    return f"{source}{_NAMES[kind]} {SUFFIX}"


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


def _add(viewer: napari.Viewer, layer: Layer, source: str, kind: str) -> Layer:
    layer.metadata[TAG] = {"source": source, "kind": kind}
    return viewer.add_layer(layer)


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
    if tag and not tag.get("edited"):
        tag["edited"] = True
        show_info(
            f"{layer.name!r} was edited: it is now yours; re-running or re-clustering "
            "EmbedTrack will write a new layer"
        )


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
        for key, value in place.items():
            setattr(layer, key, value)
    else:
        layer = Labels(labels, name=layer_name(source, "labels"), **place)
        layer.events.paint.connect(lambda _event, lay=layer: _mark_edited(lay))
        _add(viewer, layer, source, "labels")
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
        else:
            layer = Image(
                arr,
                name=layer_name(source, kind),
                colormap=cmap,
                contrast_limits=(0.0, 1.0),
                blending="additive",
                visible=visible,
                **place,
            )
            _add(viewer, layer, source, kind)
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
