"""npe2 writer: a Labels layer (label = track id) and optionally a Tracks layer -> a CTC
results folder (``maskNNN.tif`` + ``res_track.txt``).

The divisions come from the Tracks layer's graph (:func:`ctc.tracks_to_lineage`); without a
Tracks layer every label is a track without parent. An existing folder is replaced only if
it is empty or already a CTC results folder (holds ``res_track.txt`` or only ``mask*.tif``),
never a folder with other files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import ctc

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
    labels = [d for d, _, kind in layer_data if kind == "labels"]
    tracks = [(d, meta) for d, meta, kind in layer_data if kind == "tracks"]
    if len(labels) != 1 or len(tracks) > 1:
        raise ValueError(
            f"the CTC writer takes one Labels layer and at most one Tracks layer, got "
            f"{len(labels)} and {len(tracks)}"
        )
    lineage = None
    if tracks:
        data, meta = tracks[0]
        lineage = ctc.tracks_to_lineage(np.asarray(data), meta.get("graph") or {})
    if not _replaceable(folder):
        raise FileExistsError(
            f"{folder}: exists and is not a CTC results folder; choose a new or empty folder"
        )
    ctc.write_results(folder, np.asarray(labels[0]), lineage, overwrite=True)
    return [str(folder)]
