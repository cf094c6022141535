"""npe2 readers: CTC sequence folders / TIFF stacks, CTC ground truth / results folders, and
GEFF stores (tracking graph + masks, :mod:`napari_embedtrack.io.geff`).

Each ``get_*_reader`` is cheap and returns None for paths that are not its own (it never
raises); the reader it returns raises :class:`~napari_embedtrack.io.ctc.CTCFormatError` with a
one-line message for files that look like ours but are broken.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

from .io import ctc
from .io.tracks import lineage_to_tracks

log = logging.getLogger(__name__)

LayerData = tuple  # (data, kwargs, layer_type)
_TIFF = (".tif", ".tiff")
_FRAME = re.compile(r"^t\d+\.tiff?$")  # CTC frame file names


def _single_path(path) -> Path | None:
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    return Path(path)


def _layer_name(path: Path) -> str:
    """``"Fluo-N2DH-SIM+ 01"`` for a CTC sequence folder, the stem for a file."""
    if path.is_dir():
        return f"{path.parent.name} {path.name}".strip()
    return path.stem


# --------------------------------------------------------------------------- movies
def _is_sequence_folder(path: Path) -> bool:
    try:
        return any(_FRAME.match(p.name) for p in path.iterdir())
    except OSError:
        return False


def _is_grayscale_stack(path: Path) -> bool:
    """A TIFF whose first series is (Y, X) or (T, Y, X) single-channel (planar RGB too)."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = series.shape, series.axes
    except Exception:  # not a TIFF tifffile can parse: not ours
        return False
    if axes != "SYX":  # tifffile's name for any (3 | 4, Y, X) stack: read as frames
        sizes = dict(zip(axes, shape, strict=False))
        if any(sizes.get(a, 1) > 1 for a in "CSZ"):  # channels, RGB samples, z-planes
            return False
    return len([n for n in shape if n > 1]) in (2, 3)


def get_movie_reader(path) -> Callable[[str], list[LayerData]] | None:
    """Reader for a CTC sequence folder (``tNNN.tif``) or a 2D / 2D+t TIFF file."""
    p = _single_path(path)
    if p is None:
        return None
    if p.is_dir():
        return read_movie_layers if _is_sequence_folder(p) else None
    if p.suffix.lower() in _TIFF and p.is_file() and _is_grayscale_stack(p):
        return read_movie_layers
    return None


#: Movies larger than this (bytes) are opened as a dask array read one frame at a time.
LAZY_BYTES = 1 << 30


def read_movie_layers(path) -> list[LayerData]:
    """One Image layer: (T, Y, X), or (Y, X) for a single 2D TIFF file. A movie larger than
    :data:`LAZY_BYTES` is a dask array whose frames are read when napari (or the track
    widget) asks for them (memory-mapped, page by page or file by file,
    :func:`napari_embedtrack.io.movies.open_movie`)."""
    p = _single_path(path)
    (n, y, x), dtype = ctc.movie_info(p)
    lazy = n * y * x * dtype.itemsize > LAZY_BYTES
    movie = _dask_movie(p) if lazy else ctc.read_movie(p)
    if p.is_file() and movie.shape[0] == 1:
        movie = movie[0]
    return [(movie, {"name": _layer_name(p)}, "image")]


def _dask_movie(path: Path):
    import dask
    import dask.array as da

    from .io.movies import open_movie

    lazy = open_movie(path)
    read = dask.delayed(lazy.__getitem__, pure=True)
    frames = [
        da.from_delayed(read(t), shape=lazy.frame_shape, dtype=lazy.dtype) for t in range(len(lazy))
    ]
    return da.stack(frames)


# --------------------------------------------------------------------------- tracks
def _tracks_folder(p: Path) -> tuple[str, Path] | None:
    """("results", folder) or ("gt", <seq>_GT folder) for a path that is ours, else None."""
    if p.is_file() and p.name in ("res_track.txt", "man_track.txt"):
        p = p.parent
    if not p.is_dir():
        return None
    if (p / "res_track.txt").is_file():
        return "results", p
    if p.name == "TRA" and (p / "man_track.txt").is_file():
        return "gt", p.parent
    if (p / "TRA" / "man_track.txt").is_file():
        return "gt", p
    return None


def get_tracks_reader(path) -> Callable[[str], list[LayerData]] | None:
    """Reader for a CTC results folder (``res_track.txt``) or ground truth (``<seq>_GT``,
    its ``TRA`` subfolder, or either ``*_track.txt`` file)."""
    p = _single_path(path)
    return read_tracks_layers if p is not None and _tracks_folder(p) else None


def read_tracks_layers(path) -> list[LayerData]:
    """Labels (label = track id) + Tracks (divisions in the graph); for ground truth also the
    sparse SEG masks as a second Labels layer (empty in frames without annotation)."""
    kind, folder = _tracks_folder(_single_path(path))
    name = _layer_name(folder)
    seg = {}
    if kind == "results":
        labels, lineage = ctc.read_results(folder)
    else:
        gt = ctc.read_ground_truth(folder)
        labels, lineage, seg = gt.tra, gt.lineage, gt.seg
    layers: list[LayerData] = [(labels, {"name": name}, "labels")]
    data, graph, props = lineage_to_tracks(labels, lineage)
    if len(data):
        layers.append((data, {"name": f"{name} tracks", "graph": graph, "properties": props},
                       "tracks"))  # fmt: skip
    if seg:
        full = np.zeros(labels.shape, dtype=next(iter(seg.values())).dtype)
        for t, mask in seg.items():
            full[t] = mask
        frames = ", ".join(str(t) for t in sorted(seg)[:10]) + (", ..." if len(seg) > 10 else "")
        layers.append((full, {"name": f"{name} SEG", "metadata": {"seg_frames": sorted(seg)},
                              "visible": False}, "labels"))  # fmt: skip
        log.info("%s: SEG masks in frames %s", folder, frames)
    return layers


# --------------------------------------------------------------------------- GEFF
def get_geff_reader(path) -> Callable[[str], list[LayerData]] | None:
    """Reader for a GEFF store (a zarr folder holding a GEFF graph, or the graph group)."""
    from .io.geff import find_geff_group  # no geff package needed to claim a path

    p = _single_path(path)
    return read_geff_layers if p is not None and find_geff_group(p) is not None else None


def read_geff_layers(path) -> list[LayerData]:
    """Labels (label = track id; when the store has masks) + Tracks (divisions in the graph;
    extra numeric node properties, e.g. scores, become Tracks properties)."""
    from .io.geff import NODE_PROPS, read_geff

    p = _single_path(path)
    result = read_geff(p)
    name = p.stem if p.suffix.lower() in (".geff", ".zarr") else p.name
    nodes = result.nodes
    layers: list[LayerData] = []
    if result.labels is not None:
        layers.append((result.labels, {"name": name}, "labels"))
        data, graph, props = lineage_to_tracks(result.labels, result.lineage)
    else:  # positions from the graph
        order = np.lexsort((nodes["t"], nodes["track_id"]))
        data = np.column_stack([nodes[k][order] for k in ("track_id", "t", "y", "x")])
        data = data.astype(np.float64)
        graph = {int(i): [int(par)] for i, _s, _e, par in result.lineage.tolist() if par}
        props = {}
    if not len(data):
        return layers
    # node properties -> Tracks rows, matched by (track id, frame)
    n_t = int(max(data[:, 1].max(), np.max(nodes["t"]))) + 1
    row_key = data[:, 0].astype(np.int64) * n_t + data[:, 1].astype(np.int64)
    node_key = np.asarray(nodes["track_id"], np.int64) * n_t + np.asarray(nodes["t"], np.int64)
    sorter = np.argsort(node_key)
    pos = np.searchsorted(node_key, row_key, sorter=sorter).clip(0, len(node_key) - 1)
    hit = node_key[sorter[pos]] == row_key
    for key, values in nodes.items():
        if key in props or key in ("node_id", "seg_id", "track_id", "t", "y", "x"):
            continue
        if key in NODE_PROPS and result.labels is not None:
            continue  # lineage_to_tracks has them (area) or their equivalent (root)
        arr = np.ma.asarray(values)
        if arr.ndim == 1 and arr.dtype.kind in "biuf":
            filled = np.ma.filled(arr.astype(np.float64), np.nan)
            props[key] = np.where(hit, filled[sorter[pos]], np.nan)
    layers.append((data, {"name": f"{name} tracks", "graph": graph, "properties": props},
                   "tracks"))  # fmt: skip
    return layers
