"""npe2 writers: a Labels layer (label = track id) and optionally a Tracks layer -> a CTC
results folder (``maskNNN.tif`` + ``res_track.txt``), or a GEFF store (the tracking graph +
the masks, :mod:`napari_embedtrack.io.geff`).

The divisions come from the Tracks layer's graph (:func:`io.tracks.tracks_to_lineage`); without a
Tracks layer every label is a track without parent. An existing folder is replaced only if
it is empty or already a CTC results folder (holds ``res_track.txt`` or only ``mask*.tif``),
never a folder with other files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .io import ctc
from .io.tracks import tracks_to_lineage

log = logging.getLogger(__name__)


def _replaceable(folder: Path) -> bool:
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    names = [p.name for p in folder.iterdir()]
    return "res_track.txt" in names or all(n.startswith("mask") for n in names)


def write_ctc_results(path: str, layer_data: list[tuple]) -> list[str]:
    """Write one Labels layer (+ at most one Tracks layer) to the CTC folder ``path``.

    Args:
        path: the results folder, e.g. ``.../01_RES``.
        layer_data: ``[(data, attributes, layer_type), ...]`` from napari.

    Returns:
        ``[path]``.

    Raises:
        FileExistsError: ``path`` is a file or a folder holding other files.
        ValueError: bad labels (> 65535, not integer) or tracks (merges).
    """
    folder = Path(path)
    labels, lineage = _labels_and_lineage(layer_data, "CTC")
    if not _replaceable(folder):
        raise FileExistsError(
            f"{folder}: exists and is not a CTC results folder; choose a new or empty folder"
        )
    ctc.write_results(folder, labels, lineage, overwrite=True)
    return [str(folder)]


def _labels_and_lineage(layer_data: list[tuple], fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The one Labels layer's data and the lineage of the optional Tracks layer's graph."""
    labels = [d for d, _, kind in layer_data if kind == "labels"]
    tracks = [(d, meta) for d, meta, kind in layer_data if kind == "tracks"]
    if len(labels) != 1 or len(tracks) > 1:
        raise ValueError(
            f"the {fmt} writer takes one Labels layer and at most one Tracks layer, got "
            f"{len(labels)} and {len(tracks)}"
        )
    lineage = None
    if tracks:
        data, meta = tracks[0]
        lineage = tracks_to_lineage(np.asarray(data), meta.get("graph") or {})
    return np.asarray(labels[0]), lineage


def write_geff_store(path: str, layer_data: list[tuple]) -> list[str]:
    """Write one Labels layer (+ at most one Tracks layer) to the GEFF store ``path``.

    The graph and the masks go to one zarr folder (:func:`napari_embedtrack.io.geff.write_geff`);
    an existing GEFF store is replaced, any other non-empty folder is not.

    Returns:
        ``[path]``.

    Raises:
        FileExistsError: ``path`` is a file or a folder that is not a GEFF store.
        ValueError: bad labels (> 65535, not integer) or tracks (merges).
        ImportError: the ``geff`` package is missing.
    """
    from .io import geff

    labels, lineage = _labels_and_lineage(layer_data, "GEFF")
    tracks = [(d, meta) for d, meta, kind in layer_data if kind == "tracks"]
    node_props, edge_props = (  # confidence of the review widget (issue #17), if computed
        geff.props_from_tracks(labels, lineage, tracks[0][0], tracks[0][1].get("properties"))
        if tracks
        else (None, None)
    )
    geff.write_geff(
        path, labels, lineage, node_props=node_props, edge_props=edge_props,
        overwrite=geff.find_geff_group(path) is not None,
    )  # fmt: skip
    return [str(path)]
