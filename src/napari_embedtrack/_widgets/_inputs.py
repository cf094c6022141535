"""Checks of the layers a user picked, with one-line messages for the GUI."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels, Tracks


class InputError(ValueError):
    """A layer that cannot be used as picked (the message is shown to the user)."""


def movie_of(layer: Image | None) -> np.ndarray:
    """The pixel array of an Image layer: (T, Y, X) or (Y, X), not copied.

    Raises:
        InputError: no layer, RGB, multiscale, or not 2D / 2D+t.
    """
    if layer is None:
        raise InputError("choose an image layer (a (T, Y, X) movie or a (Y, X) image)")
    if not isinstance(layer, Image):
        raise InputError(f"layer {layer.name!r} is a {type(layer).__name__} layer, not an Image")
    if layer.rgb:
        raise InputError(
            f"image {layer.name!r} is RGB; EmbedTrack needs a single-channel (T, Y, X) movie "
            "or (Y, X) image (split the channels first)"
        )
    if layer.multiscale:
        raise InputError(f"image {layer.name!r} is multiscale; open its full-resolution level")
    data = layer.data
    if data.ndim not in (2, 3):
        raise InputError(
            f"image {layer.name!r} has shape {tuple(data.shape)}; expected a (T, Y, X) movie "
            "or a (Y, X) image (split channels or pick one z-plane first)"
        )
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise InputError(f"image {layer.name!r} has {data.dtype} pixels; expected numbers")
    return data


def labels_of(layer: Labels | None, shape: tuple[int, ...]) -> np.ndarray:
    """A Labels layer's array, checked against the image shape ``shape``."""
    if layer is None:
        raise InputError("choose a labels layer with the corrected cells")
    if not isinstance(layer, Labels):
        raise InputError(f"layer {layer.name!r} is a {type(layer).__name__} layer, not Labels")
    if layer.multiscale:
        raise InputError(f"labels {layer.name!r} are multiscale; use a single-scale layer")
    data = layer.data
    if tuple(data.shape) != tuple(shape):
        raise InputError(
            f"labels {layer.name!r} have shape {tuple(data.shape)} but the image has shape "
            f"{tuple(shape)}"
        )
    return np.asarray(data)


def tracks_of(layer: Tracks | None) -> tuple[np.ndarray, dict]:
    """A 2D+t Tracks layer's data ``(M, 4)`` and graph."""
    if not isinstance(layer, Tracks):
        raise InputError(f"layer {getattr(layer, 'name', layer)!r} is not a Tracks layer")
    data = np.asarray(layer.data)
    if data.ndim != 2 or data.shape[1] != 4:
        raise InputError(
            f"tracks {layer.name!r} have {data.shape[1] - 1}D points; expected 2D+t "
            "([track_id, t, y, x] rows)"
        )
    return data, dict(layer.graph or {})
