"""Cell Tracking Challenge (CTC) format: numbered files, movies, masks, lineages, ground truth
and results, read and written, and the official scores.

Everything here works on plain numpy arrays (see ``docs/architecture.md``):

- movies ``(T, Y, X)``, instance/track label movies ``(T, Y, X)`` (0 = background, label =
  track id),
- lineages ``(N, 4)`` int64 with rows ``[track_id, start, end, parent]`` exactly as in CTC
  ``man_track.txt`` / ``res_track.txt`` (inclusive frame indices, ``parent = 0``: none).

It holds reading (:func:`read_movie`, :func:`movie_info`, :func:`read_lineage`,
:func:`read_ground_truth` / :class:`GroundTruth`, :func:`read_results`), writing
(:func:`write_results`, :func:`write_results_frames`, :func:`write_lineage`,
:func:`write_ground_truth`, written atomically; :func:`check_writable`,
:func:`check_results_target`, :func:`result_size` before a long run) and scoring with
py-ctcmetrics (:func:`evaluate`, :func:`score_results`). Lineage <-> napari Tracks and the
label/lineage consistency rules are in :mod:`napari_embedtrack.io.tracks`.

CTC layout::

    <seq>/tNNN.tif                        raw frames (t000.tif, t001.tif, ...)
    <seq>_GT/TRA/man_trackNNN.tif         tracking markers, every frame, label = track id
    <seq>_GT/TRA/man_track.txt            lines "L B E P"
    <seq>_GT/SEG/man_segNNN.tif           instance masks for some frames (labels arbitrary)
    <seq>_RES/maskNNN.tif                 results: uint16 masks, label = track id, every frame
    <seq>_RES/res_track.txt               lines "L B E P"

Rules this module applies (documented choices):

- Frame numbering of ``tNNN.tif`` / ``man_trackNNN.tif`` / ``maskNNN.tif`` must run 0, 1, ...,
  T-1 without gaps: array index == frame number == the frame index used in lineages, and the
  CTC evaluator pairs masks by position. A gap is a :class:`CTCFormatError` naming the first
  missing file. ``man_segNNN.tif`` is sparse by design (any subset of frames).
- Results are made consistent before they are written
  (:func:`napari_embedtrack.io.tracks.consistent_tracks`, whose rules apply): a track is a
  contiguous time range, so an id with a time gap becomes linked pieces with fresh ids; the
  lineage always follows the masks.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from .tracks import (
    MAX_LABEL,
    _as_label_movie,
    _as_lineage,
    _consistency_plan,
    _empty_lineage,
    _present_ids,
    _relabel_frame,
    consistent_tracks,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

__all__ = [
    "CTCFormatError",
    "GroundTruth",
    "OutputError",
    "check_results_target",
    "check_writable",
    "evaluate",
    "frame_digits",
    "movie_info",
    "read_ground_truth",
    "read_lineage",
    "read_movie",
    "read_results",
    "result_size",
    "write_ground_truth",
    "write_lineage",
    "write_results",
]

_FRAME_RE = re.compile(r"^t(\d+)\.tiff?$")
_MASK_RE = re.compile(r"^mask(\d+)\.tif$")
_TRA_RE = re.compile(r"^man_track(\d+)\.tif$")
_SEG_RE = re.compile(r"^man_seg(\d+)\.tif$")


class CTCFormatError(ValueError):
    """A file or folder does not follow the Cell Tracking Challenge layout.

    The message is one line naming the file and saying what was expected.
    """


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _numbered_files(
    folder: Path, pattern: re.Pattern, what: str, contiguous: bool = True
) -> list[tuple[int, Path]]:
    """Files of ``folder`` whose names match ``pattern``, sorted by their frame number.

    Parameters
    ----------
    folder : Path
        Folder to list.
    pattern : re.Pattern
        Regular expression with one group capturing the frame number.
    what : str
        Human-readable name pattern (``"tNNN.tif"``) for error messages.
    contiguous : bool
        Require the numbers to be exactly ``0 .. n-1``.

    Returns
    -------
    list of (int, Path)
    """
    found: dict[int, Path] = {}
    for entry in folder.iterdir():
        m = pattern.match(entry.name)
        if m is None or not entry.is_file():
            continue
        n = int(m.group(1))
        if n in found:
            raise CTCFormatError(
                f"{entry}: frame {n} also given by {found[n].name}; expected one {what} per frame"
            )
        found[n] = entry
    if not found:
        raise CTCFormatError(f"{folder}: no {what} files found")
    items = sorted(found.items())
    if contiguous:
        numbers = np.array([n for n, _ in items])
        expected = np.arange(len(numbers))
        bad = np.flatnonzero(numbers != expected)
        if bad.size:
            missing = int(expected[bad[0]])
            name = what.replace("NNN", f"{missing:0{_digits_of(items[0][1].name)}d}")
            raise CTCFormatError(
                f"{folder / name}: missing; expected frames numbered from 0 without gaps "
                f"(found {len(items)} files, {items[0][1].name} .. {items[-1][1].name})"
            )
    return items


def _digits_of(name: str) -> int:
    m = re.search(r"(\d+)\.tiff?$", name)
    return len(m.group(1)) if m else 3


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    """Read the first series of a TIFF file; return ``(array, axes)``."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return series.asarray(), series.axes
    except Exception as exc:  # tifffile raises many types (TiffFileError, ValueError, ...)
        hint = ""
        if "imagecodecs" in str(exc):
            hint = " (install the 'imagecodecs' package to read compressed TIFFs)"
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CTCFormatError(f"{path}: cannot read as TIFF: {msg}{hint}") from exc


def _is_rgb(arr: np.ndarray, axes: str) -> bool:
    return "S" in axes or (arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4)


def _as_2d_frame(arr: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Check a frame read from ``path`` is a single-channel 2D image (Y, X)."""
    if _is_rgb(arr, axes):
        raise CTCFormatError(
            f"{path}: RGB/multi-channel image of shape {arr.shape}; expected a "
            "single-channel 2D frame"
        )
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise CTCFormatError(
            f"{path}: image of shape {arr.shape} (axes {axes}); expected a 2D frame (Y, X)"
        )
    return arr


def _stack_frames(files: Sequence[Path], integer: bool = False) -> np.ndarray:
    """Read 2D frames and stack them to (T, Y, X); check shapes (and integer dtype)."""
    frames: list[np.ndarray] = []
    for path in files:
        arr, axes = _read_tiff(path)
        arr = _as_2d_frame(arr, axes, path)
        if frames and arr.shape != frames[0].shape:
            raise CTCFormatError(
                f"{path}: frame shape {arr.shape} differs from {files[0].name} "
                f"{frames[0].shape}; expected all frames the same size"
            )
        if integer:
            _check_mask_values(arr, path)
        frames.append(arr)
    return np.stack(frames)


def _check_mask_values(arr: np.ndarray, path: Path | str) -> None:
    if arr.dtype.kind not in "ui":
        raise CTCFormatError(f"{path}: mask of dtype {arr.dtype}; expected integer labels")
    if arr.size and (arr.min() < 0 or arr.max() > MAX_LABEL):
        raise CTCFormatError(
            f"{path}: label values in [{arr.min()}, {arr.max()}]; expected 0..{MAX_LABEL}"
        )


def frame_digits(source: PathLike | int) -> int:
    """Digit count for CTC frame names (``t000.tif`` -> 3).

    Parameters
    ----------
    source : path or int
        A CTC sequence folder (the width of its ``tNNN.tif`` numbers; also recognises
        ``maskNNN.tif`` and ``man_trackNNN.tif``), a TIFF stack (its frame count decides), or a
        number of frames.

    Returns
    -------
    int
        3 for fewer than 1000 frames, otherwise at least 4 (enough for the last index); for a
        folder the width actually used by its file names.
    """
    if isinstance(source, int | np.integer):
        n = int(source)
        return 3 if n < 1000 else max(4, len(str(n - 1)))
    path = Path(source)
    if not path.exists():
        raise CTCFormatError(f"{path}: no such file or folder; expected a CTC sequence or TIFF")
    if path.is_dir():
        widths = [
            len(m.group(1))
            for entry in path.iterdir()
            for pattern in (_FRAME_RE, _MASK_RE, _TRA_RE)
            if (m := pattern.match(entry.name))
        ]
        if not widths:
            raise CTCFormatError(f"{path}: no tNNN.tif files found")
        return max(widths)
    try:
        with tifffile.TiffFile(path) as tif:
            shape, axes = tif.series[0].shape, tif.series[0].axes
    except Exception as exc:
        raise CTCFormatError(f"{path}: cannot read as TIFF: {exc}") from exc
    n_frames = 1 if len(shape) == 2 or (axes.endswith("S") and len(shape) == 3) else shape[0]
    return frame_digits(int(n_frames))


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


#: First axis letters of a 3-D TIFF series read as time without asking: T (time), and the
#: letters tifffile gives when the file's metadata says nothing: Q (tifffile's own "shaped"
#: files, napari's writer) and I (a plain multi-page TIFF).
_TIME_LIKE = "TQI"


def _check_axes_text(axes: str) -> str:
    text = str(axes).strip().upper()
    if len(text) != 3 or sorted(text) != ["T", "X", "Y"]:
        raise ValueError(
            f"axes {axes!r}: expected the stack's three axes in order, T (time), Y and X each "
            "once, e.g. TYX or YXT"
        )
    return text


def _stack_plan(path: Path, shape: Sequence[int], found: str, axes: str | None):
    """How to turn a TIFF series of ``shape`` (tifffile axes ``found``) into (T, Y, X).

    Returns ``(squeeze, perm, warning)``: drop the leading axes ``squeeze`` (all of size 1),
    then transpose by ``perm`` (None: as is; ``()``: a 2-D image, add a time axis); raises
    :class:`CTCFormatError` for a stack whose axes are not time-lapse frames.
    """
    shape = tuple(int(n) for n in shape)
    if axes is not None:
        given = _check_axes_text(axes)
        if len(shape) != 3:
            raise CTCFormatError(
                f"{path}: stack of shape {shape} (axes {found}) has {len(shape)} dimensions; "
                f"axes {given} names 3: expected a (T, Y, X) stack"
            )
        return 0, tuple(given.index(a) for a in "TYX"), None
    squeeze = 0
    while len(shape) - squeeze > 3 and shape[squeeze] == 1:
        squeeze += 1
    shape, found = shape[squeeze:], found[squeeze:]
    if len(shape) == 2:
        if "S" in found:
            raise CTCFormatError(
                f"{path}: RGB/multi-channel image of shape {shape} (axes {found}); expected "
                "single-channel frames"
            )
        return squeeze, (), None
    if len(shape) != 3:
        raise CTCFormatError(
            f"{path}: image of shape {shape} (axes {found}); expected a 2D image or a "
            "(T, Y, X) stack of 2D frames (save one channel or z-plane as its own stack)"
        )
    if found == "SYX":
        # tifffile writes any (3|4, Y, X) array as planar RGB by default (napari's TIFF
        # writer too): far more often a short stack than a colour image
        warning = (
            f"{path}: planar RGB TIFF of shape {shape} read as {shape[0]} frames (pass axes "
            "TYX to say so and silence this warning)"
        )
        return squeeze, None, warning
    rgb = "S" in found or (shape[-1] in (3, 4) and shape[0] > 4)
    if rgb:
        raise CTCFormatError(
            f"{path}: RGB/multi-channel image of shape {shape} (axes {found}); expected "
            "single-channel frames (if one axis is time, give the axes, e.g. --axes YXT)"
        )
    if found[0] not in _TIME_LIKE or found[1:] != "YX":
        raise CTCFormatError(
            f"{path}: stack of shape {shape} with axes {found}, not time-lapse frames "
            f"(T, Y, X); if its first axis is time, give the axes (--axes TYX)"
        )
    return squeeze, None, None


def _series_header(path: Path) -> tuple[tuple[int, ...], str, np.dtype]:
    """Shape, axes and dtype of a TIFF file's first series, without reading the pixels."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), series.axes, np.dtype(series.dtype)
    except Exception as exc:  # tifffile raises many types
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CTCFormatError(f"{path}: cannot read as TIFF: {msg}") from exc


def _check_movie_path(path: Path, axes: str | None) -> None:
    if not path.exists():
        raise CTCFormatError(
            f"{path}: no such file or folder; expected a CTC sequence folder of tNNN.tif or a "
            "TIFF file"
        )
    if path.is_dir() and axes is not None and _check_axes_text(axes) != "TYX":
        raise CTCFormatError(
            f"{path}: a CTC sequence folder holds one 2D frame per file; axes {axes} apply "
            "to TIFF stacks only"
        )


def movie_info(path: PathLike, axes: str | None = None) -> tuple[tuple[int, int, int], np.dtype]:
    """Shape ``(T, Y, X)`` and dtype :func:`read_movie` would return, from the file headers
    only (the first frame's for a sequence folder): for checks before reading a movie.

    Raises the same :class:`CTCFormatError` as :func:`read_movie` for a missing path, an
    empty folder and a stack whose axes are not time-lapse frames.
    """
    path = Path(path)
    _check_movie_path(path, axes)
    if path.is_dir():
        files = _numbered_files(path, _FRAME_RE, "tNNN.tif")
        shape, found, dtype = _series_header(files[0][1])
        frame = [n for n in shape if n > 1] if len(shape) > 2 else list(shape)
        if len(frame) != 2 or "S" in found:
            raise CTCFormatError(
                f"{files[0][1]}: image of shape {shape} (axes {found}); expected a 2D frame"
            )
        return (len(files), frame[0], frame[1]), dtype
    shape, found, dtype = _series_header(path)
    squeeze, perm, _ = _stack_plan(path, shape, found, axes)
    shape = shape[squeeze:]
    if perm == ():
        return (1, *shape), dtype
    if perm is not None:
        shape = tuple(shape[i] for i in perm)
    return tuple(shape), dtype


def read_movie(path: PathLike, axes: str | None = None) -> np.ndarray:
    """Read a movie as a ``(T, Y, X)`` array.

    Parameters
    ----------
    path : path
        A CTC sequence folder of ``tNNN.tif`` frames (numbered 0..T-1 without gaps), a
        multi-page TIFF stack ``(T, Y, X)``, or a single 2D TIFF (returned with T = 1).
    axes : str, optional
        The stack's axes in order, a permutation of ``"TYX"`` (e.g. ``"TYX"``: the first axis
        is time; ``"YXT"``: the last one). Needed for a stack whose metadata names another
        first axis (ImageJ/OME ``Z`` or ``C``, RGB ``S``); ignored (``"TYX"``) for folders.

    Without ``axes`` a 3-D stack is read as ``(T, Y, X)`` when its metadata says the first
    axis is time or says nothing (tifffile axes ``TYX``, ``QYX``, ``IYX``); a planar-RGB TIFF
    ``(3 or 4, Y, X)`` is read as that many frames with a warning (tifffile and napari save
    short grayscale stacks that way); any other stack (``ZYX``, ``CYX``, interleaved RGB
    ``YXS``, 4-D) is an error naming the axes found.

    Returns
    -------
    numpy.ndarray
        ``(T, Y, X)`` in the files' dtype.

    Raises
    ------
    CTCFormatError
        Missing path, folder without ``tNNN.tif``, gaps in the numbering, frames of different
        shapes, RGB/multi-channel frames, 3D frames, stacks that are not time-lapse frames,
        or unreadable files.
    """
    path = Path(path)
    _check_movie_path(path, axes)
    if path.is_dir():
        files = [p for _, p in _numbered_files(path, _FRAME_RE, "tNNN.tif")]
        movie = _stack_frames(files)
    else:
        arr, found = _read_tiff(path)
        squeeze, perm, warning = _stack_plan(path, arr.shape, found, axes)
        if warning:
            log.warning("%s", warning)
        arr = arr[(0,) * squeeze]
        if perm == ():
            arr = arr[None]
        elif perm is not None:
            arr = arr.transpose(perm)
        movie = arr
    log.debug("read movie %s: shape %s dtype %s", path, movie.shape, movie.dtype)
    return movie


def read_lineage(path: PathLike) -> np.ndarray:
    """Read a CTC track file (``man_track.txt`` / ``res_track.txt``).

    Checks the file on its own: four integers per line, unique ids > 0, ``0 <= start <= end``,
    every parent listed, and every parent ending before its child starts.

    Parameters
    ----------
    path : path
        The text file.

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` int64 rows ``[id, start, end, parent]``, in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise CTCFormatError(f"{path}: missing; expected a track file with lines 'L B E P'")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 4:
                raise ValueError
            rows.append([int(x) for x in parts])
        except ValueError:
            raise CTCFormatError(
                f"{path}:{lineno}: {line.strip()!r}; expected four integers 'L B E P'"
            ) from None
    lineage = np.array(rows, dtype=np.int64).reshape(-1, 4)
    _check_lineage_table(lineage, str(path))
    return lineage


def _check_lineage_table(lineage: np.ndarray, where: str, exc=CTCFormatError) -> None:
    """Self-consistency of a lineage table (no masks involved)."""
    if lineage.size == 0:
        return
    ids, start, end, parent = lineage.T
    if np.any(ids <= 0):
        raise exc(f"{where}: track id {ids[ids <= 0][0]}; expected ids > 0")
    uniq, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        raise exc(f"{where}: track id {uniq[counts > 1][0]} listed twice; expected unique ids")
    bad = np.flatnonzero((start < 0) | (end < start))
    if bad.size:
        raise exc(f"{where}: track {lineage[bad[0]].tolist()}; expected 0 <= start <= end")
    has_parent = parent != 0
    known = np.isin(parent, ids)
    bad = np.flatnonzero(has_parent & ~known)
    if bad.size:
        raise exc(
            f"{where}: track {ids[bad[0]]} has unknown parent {parent[bad[0]]}; expected a "
            "listed track id or 0"
        )
    order = np.argsort(ids)
    pos = order[np.searchsorted(ids, parent, sorter=order).clip(0, ids.size - 1)]
    bad = np.flatnonzero(has_parent & (end[pos] >= start))
    if bad.size:
        i = bad[0]
        raise exc(
            f"{where}: track {ids[i]} starts at frame {start[i]} but its parent {parent[i]} "
            f"ends at frame {end[pos[i]]}; expected the parent to end before the child starts"
        )


def _check_masks_against_lineage(
    frame_ids: Sequence[np.ndarray],
    lineage: np.ndarray,
    frame_name,
    track_name: str,
    require_full: bool,
    exc=CTCFormatError,
) -> None:
    """Check that mask ids and lineage agree.

    Parameters
    ----------
    frame_ids : sequence of int64 arrays
        Ids present in each frame.
    lineage : (N, 4) int64
    frame_name : callable
        ``frame_name(t)`` -> file/argument name for frame t (for messages).
    track_name : str
        Name of the track file/argument (for messages).
    require_full : bool
        Also require every track to be present in every frame of [start, end] (results must be;
        for ground truth a missing marker is only logged).
    """
    ids = lineage[:, 0]
    order = np.argsort(ids)
    present_count = np.zeros(len(ids), dtype=np.int64)
    for t, fids in enumerate(frame_ids):
        if fids.size == 0:
            continue
        idx = np.searchsorted(ids, fids, sorter=order)
        idx = order[idx.clip(0, max(ids.size - 1, 0))] if ids.size else idx
        known = ids[idx] == fids if ids.size else np.zeros(fids.size, bool)
        if not np.all(known):
            raise exc(
                f"{frame_name(t)}: label {fids[~known][0]} is not listed in {track_name}; "
                "expected every mask label to be a listed track"
            )
        outside = (lineage[idx, 1] > t) | (lineage[idx, 2] < t)
        if np.any(outside):
            k = idx[np.flatnonzero(outside)[0]]
            raise exc(
                f"{frame_name(t)}: label {ids[k]} present in frame {t}, outside its range "
                f"[{lineage[k, 1]}, {lineage[k, 2]}] in {track_name}"
            )
        present_count[idx] += 1
    expected = lineage[:, 2] - lineage[:, 1] + 1
    bad = np.flatnonzero(present_count != expected)
    if bad.size:
        k = bad[0]
        msg = (
            f"{track_name}: track {ids[k]} [{lineage[k, 1]}, {lineage[k, 2]}] is present in "
            f"only {present_count[k]} of its {expected[k]} frames; expected it in every frame "
            "of its range"
        )
        if require_full:
            raise exc(msg)
        log.warning("%s (%s tracks affected)", msg, bad.size)


@dataclass
class GroundTruth:
    """CTC ground truth of one sequence.

    Attributes
    ----------
    tra : numpy.ndarray
        ``(T, Y, X)`` uint16 tracking markers (label = track id), every frame.
    seg : dict[int, numpy.ndarray]
        Sparse segmentation masks ``{frame: (Y, X) uint16}``; labels are per-frame instance
        ids, unrelated to track ids; on some datasets not every cell is annotated.
    lineage : numpy.ndarray
        ``(N, 4)`` int64 ``[id, start, end, parent]`` from ``man_track.txt``.
    """

    tra: np.ndarray
    seg: dict[int, np.ndarray] = field(default_factory=dict)
    lineage: np.ndarray = field(default_factory=_empty_lineage)

    @property
    def n_frames(self) -> int:
        return int(self.tra.shape[0])

    def select_frames(self, start: int, stop: int) -> GroundTruth:
        """Ground truth of frames ``start .. stop-1``, renumbered from 0.

        Tracks are clipped to the window (tracks outside it are dropped) and a parent link is
        kept only when the parent is still in the window.

        Parameters
        ----------
        start, stop : int
            Frame range (Python slice semantics, no step; negative values count from the end).

        Returns
        -------
        GroundTruth
        """
        start, stop, _ = slice(start, stop).indices(self.n_frames)
        if stop <= start:
            raise ValueError(f"select_frames: empty range [{start}, {stop})")
        lin = self.lineage.copy()
        keep = (lin[:, 2] >= start) & (lin[:, 1] < stop)
        lin = lin[keep]
        lin[:, 1] = np.maximum(lin[:, 1], start) - start
        lin[:, 2] = np.minimum(lin[:, 2], stop - 1) - start
        lin[~np.isin(lin[:, 3], lin[:, 0]), 3] = 0
        # a parent clipped away at the window start cannot end before its child: drop link
        ends = dict(zip(lin[:, 0].tolist(), lin[:, 2].tolist(), strict=True))
        for row in lin:
            if row[3] and ends[int(row[3])] >= row[1]:
                row[3] = 0
        seg = {t - start: m for t, m in self.seg.items() if start <= t < stop}
        return GroundTruth(tra=self.tra[start:stop], seg=seg, lineage=lin)

    def crop(self, ys: slice, xs: slice) -> GroundTruth:
        """Spatial crop ``[ys, xs]`` of every frame.

        Markers cut away by the crop can leave gaps in a track (a cell leaving and re-entering
        the window); :func:`consistent_tracks` turns them into linked pieces and recomputes the
        lineage, so the result is valid CTC ground truth.

        Parameters
        ----------
        ys, xs : slice
            Row and column ranges.

        Returns
        -------
        GroundTruth
        """
        tra, lineage = consistent_tracks(self.tra[:, ys, xs], self.lineage)
        seg = {t: m[ys, xs] for t, m in self.seg.items()}
        return GroundTruth(tra=tra, seg=seg, lineage=lineage)


def _read_tracked_masks(
    folder: Path, pattern, what: str, track_name: str, require_full: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Numbered masks (T, Y, X) uint16 of ``folder`` and its lineage file, checked together."""
    track_file = folder / track_name
    lineage = read_lineage(track_file)
    files = [p for _, p in _numbered_files(folder, pattern, what)]
    masks = _stack_frames(files, integer=True).astype(np.uint16, copy=False)
    frame_ids = [_present_ids(frame) for frame in masks]
    _check_masks_against_lineage(
        frame_ids, lineage, lambda t: files[t], str(track_file), require_full=require_full
    )
    return masks, lineage


def read_ground_truth(gt_dir: PathLike) -> GroundTruth:
    """Read a CTC ground-truth folder (``<seq>_GT``).

    Parameters
    ----------
    gt_dir : path
        Folder holding ``TRA/man_trackNNN.tif`` (every frame), ``TRA/man_track.txt`` and,
        optionally, ``SEG/man_segNNN.tif`` (any subset of frames).

    Returns
    -------
    GroundTruth

    Raises
    ------
    CTCFormatError
        Missing folder or ``man_track.txt``; markers numbered with gaps, of different shapes or
        not integer; ``man_track.txt`` contradicting the markers (a marker id not listed,
        present outside its ``[start, end]``, unknown parent, parent ending after its child
        starts); SEG masks of the wrong shape or for frames beyond the movie.
    """
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise CTCFormatError(f"{gt_dir}: no such folder; expected a CTC ground-truth folder")
    tra_dir = gt_dir / "TRA"
    if not tra_dir.is_dir():
        raise CTCFormatError(f"{tra_dir}: missing; expected TRA/man_trackNNN.tif markers")
    tra, lineage = _read_tracked_masks(
        tra_dir, _TRA_RE, "man_trackNNN.tif", "man_track.txt", require_full=False
    )
    seg: dict[int, np.ndarray] = {}
    seg_dir = gt_dir / "SEG"
    if seg_dir.is_dir():
        for n, path in _numbered_files(seg_dir, _SEG_RE, "man_segNNN.tif", contiguous=False):
            if n >= tra.shape[0]:
                raise CTCFormatError(
                    f"{path}: frame {n} beyond the {tra.shape[0]} TRA frames; expected "
                    f"0..{tra.shape[0] - 1}"
                )
            arr, axes = _read_tiff(path)
            arr = _as_2d_frame(arr, axes, path)
            _check_mask_values(arr, path)
            if arr.shape != tra.shape[1:]:
                raise CTCFormatError(
                    f"{path}: shape {arr.shape}; expected the TRA frame shape {tra.shape[1:]}"
                )
            seg[n] = arr.astype(np.uint16, copy=False)
    log.debug(
        "read ground truth %s: %s frames, %s tracks, %s SEG frames",
        gt_dir,
        tra.shape[0],
        len(lineage),
        len(seg),
    )
    return GroundTruth(tra=tra, seg=seg, lineage=lineage)


def read_results(res_dir: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a CTC results folder (``maskNNN.tif`` + ``res_track.txt``).

    Parameters
    ----------
    res_dir : path
        The results folder (``<seq>_RES``).

    Returns
    -------
    labels : numpy.ndarray
        ``(T, Y, X)`` uint16, label = track id.
    lineage : numpy.ndarray
        ``(N, 4)`` int64.

    Raises
    ------
    CTCFormatError
        Missing folder/files, gaps in the mask numbering, and any disagreement between masks
        and ``res_track.txt`` (the same rules the CTC evaluator applies: every listed track
        present in every frame of its range and nowhere else).
    """
    res_dir = Path(res_dir)
    if not res_dir.is_dir():
        raise CTCFormatError(f"{res_dir}: no such folder; expected a CTC results folder")
    labels, lineage = _read_tracked_masks(
        res_dir, _MASK_RE, "maskNNN.tif", "res_track.txt", require_full=True
    )
    return labels, lineage


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise FileExistsError(f"{target}: exists and is not a folder; expected a folder path")
        if not overwrite and any(target.iterdir()):
            raise FileExistsError(
                f"{target}: folder exists and is not empty; pass overwrite=True to replace it"
            )


class OutputError(ValueError):
    """The output location cannot take a result (not writable, not enough free space).

    The message is one line naming the path and saying what was expected.
    """


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: PathLike, least: int, most: int | None = None) -> str | None:
    """Before a long run: can ``path`` (a file or folder to be created) be written?

    Creates and removes an empty folder where ``path`` will be written (the real test, also
    for root and read-only file systems) and compares the disk's free space with the bytes
    the result needs: fewer than ``least`` raises, fewer than ``most`` returns a warning.

    Raises
    ------
    OutputError
        The nearest existing folder above ``path`` is a file, not writable, or its disk has
        fewer than ``least`` bytes free.
    """
    path = Path(path)
    where = _existing_ancestor(path.parent)
    if not where.is_dir():
        raise OutputError(f"{path}: {where} is a file; expected a folder to write into")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.check-", dir=where))
    except OSError as err:
        raise OutputError(
            f"{path}: cannot write in {where} ({err.strerror or err}); expected a writable folder"
        ) from None
    free = shutil.disk_usage(where).free
    if free < least:
        raise OutputError(
            f"{path}: {_size(free)} free on the disk of {where}, the result needs at least "
            f"{_size(least)}; free some space or write elsewhere"
        )
    if most is not None and free < most:
        return (
            f"{path}: {_size(free)} free on the disk of {where}; the result may need up to "
            f"{_size(most)} (it is written at the end: a full disk then loses the run)"
        )
    return None


def result_size(shape: Sequence[int]) -> tuple[int, int]:
    """Bounds in bytes of a CTC result folder for a ``(T, Y, X)`` movie: the smallest (empty
    masks; zlib packs at most 1032:1) and the largest (16-bit masks that do not compress)."""
    t, y, x = (int(n) for n in shape)
    least = t * (2 * y * x // 1032 + 256) + 4096
    most = t * (2 * y * x + 1024) + MAX_LABEL * 32 + 4096  # res_track.txt: <= 65535 lines
    return least, most


def check_results_target(
    res_dir: PathLike, shape: Sequence[int], overwrite: bool = False
) -> str | None:
    """Checks :func:`write_results` would fail on, made before the work instead of after it:
    ``res_dir`` is not an existing non-empty folder (unless ``overwrite``) nor a file, its
    location is writable and its disk has room for the masks of a ``(T, Y, X)`` movie
    (:func:`check_writable` with :func:`result_size`). Returns a warning or None."""
    _check_target(Path(res_dir), overwrite)
    return check_writable(res_dir, *result_size(shape))


@contextlib.contextmanager
def _atomic_folder(target: PathLike, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success move it to ``target`` in one rename.

    A failure leaves ``target`` untouched and removes the temporary folder, so a half-written
    folder never appears under the target name.
    """
    target = Path(target)
    _check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        _check_target(target, overwrite)
        old = None
        if target.exists():
            if any(target.iterdir()):
                old = target.parent / f".{target.name}.old-{tag}"
                os.replace(target, old)
            else:
                target.rmdir()
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_mask(path: Path, frame: np.ndarray) -> None:
    tifffile.imwrite(
        path, frame.astype(np.uint16, copy=False), compression="zlib", compressionargs={"level": 1}
    )


def write_lineage(path: PathLike, lineage: np.ndarray) -> None:
    """Write a lineage as a CTC track file (lines ``L B E P``).

    Parameters
    ----------
    path : path
        Output text file.
    lineage : numpy.ndarray
        ``(N, 4)`` integer ``[id, start, end, parent]``.
    """
    lineage = _as_lineage(lineage)
    text = "".join(f"{i} {s} {e} {p}\n" for i, s, e, p in lineage.tolist())
    Path(path).write_text(text)


def _resolve_digits(ndigits: int | None, n_frames: int) -> int:
    needed = frame_digits(n_frames)
    if ndigits is None:
        return needed
    if len(str(max(n_frames - 1, 0))) > ndigits:
        raise ValueError(f"ndigits={ndigits} is too small for {n_frames} frames")
    return int(ndigits)


def write_results(
    res_dir: PathLike,
    labels: np.ndarray,
    lineage: np.ndarray | None = None,
    ndigits: int | None = None,
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Write tracking results in the CTC format (``maskNNN.tif`` + ``res_track.txt``).

    The lineage written always matches the masks (see :func:`consistent_tracks`: time gaps
    become new tracks linked to the previous piece, start/end recomputed, absent tracks
    dropped). The folder is written atomically: files go to a temporary sibling folder that is
    renamed into place at the end.

    Parameters
    ----------
    res_dir : path
        Output folder (e.g. ``.../01_RES``). Created; must not exist or be empty unless
        ``overwrite`` (then it is replaced as a whole).
    labels : numpy.ndarray
        ``(T, Y, X)`` or ``(Y, X)`` integer labels, label = track id (<= 65535).
    lineage : numpy.ndarray, optional
        ``(N, 4)`` ``[id, start, end, parent]``; None: every label is a track without parent.
    ndigits : int, optional
        Digits of ``NNN`` (use :func:`frame_digits` of the input sequence); default 3, more for
        1000 frames or more.
    overwrite : bool
        Replace an existing non-empty folder.

    Returns
    -------
    labels : numpy.ndarray
        ``(T, Y, X)`` uint16 as written.
    lineage : numpy.ndarray
        ``(N, 4)`` int64 as written.

    Raises
    ------
    FileExistsError
        ``res_dir`` exists, is not empty and ``overwrite`` is False (or it is a file).
    ValueError
        Bad ``labels`` / ``lineage`` / ``ndigits``.
    """
    labels, lineage = consistent_tracks(labels, lineage)
    nd = _resolve_digits(ndigits, labels.shape[0])
    with _atomic_folder(res_dir, overwrite) as tmp:
        for t, frame in enumerate(labels):
            _write_mask(tmp / f"mask{t:0{nd}d}.tif", frame)
        write_lineage(tmp / "res_track.txt", lineage)
    log.info("wrote %s frames, %s tracks to %s", labels.shape[0], len(lineage), res_dir)
    return labels, lineage


def write_results_frames(
    res_dir: PathLike,
    frames: Callable[[], Iterable[np.ndarray]],
    lineage: np.ndarray | None,
    shape: Sequence[int],
    ndigits: int | None = None,
    overwrite: bool = False,
) -> np.ndarray:
    """:func:`write_results` for a movie given one frame at a time: the same files, with one
    frame in memory.

    ``frames()`` must yield the ``shape[0]`` frames ``(Y, X)`` in order, the same each time it
    is called: it is called twice, first for the ids present in every frame (the lineage
    written must match the masks, see :func:`consistent_tracks`), then to write the masks.
    The masks go to a temporary sibling folder that is renamed into place at the end, so a
    result never looks complete before it is. Returns the lineage written.
    """
    n = int(shape[0])
    nd = _resolve_digits(ndigits, n)
    _check_target(Path(res_dir), overwrite)

    def checked() -> Iterator[np.ndarray]:
        count = 0
        for frame in frames():
            frame = _as_label_movie(frame, name=f"labels[{count}]")
            if frame.shape[0] != 1 or frame.shape[1:] != tuple(shape[1:]):
                raise ValueError(
                    f"labels[{count}]: shape {np.shape(frame)[1:]}; expected {tuple(shape[1:])}"
                )
            yield frame[0]
            count += 1
        if count != n:
            raise ValueError(f"labels: {count} frame(s); expected {n}")

    relabel, result = _consistency_plan([_present_ids(f) for f in checked()], lineage)
    with _atomic_folder(res_dir, overwrite) as tmp:
        for t, frame in enumerate(checked()):
            out = frame.astype(np.uint16, copy=True)
            if t in relabel:
                out = _relabel_frame(out, *relabel[t])
            _write_mask(tmp / f"mask{t:0{nd}d}.tif", out)
        write_lineage(tmp / "res_track.txt", result)
    log.info("wrote %s frames, %s tracks to %s", n, len(result), res_dir)
    return result


def write_ground_truth(
    gt_dir: PathLike,
    tra: np.ndarray,
    lineage: np.ndarray,
    seg: Mapping[int, np.ndarray] | None = None,
    ndigits: int | None = None,
    overwrite: bool = False,
) -> None:
    """Write a CTC ground-truth folder (``TRA/`` and, if given, ``SEG/``), atomically.

    Unlike :func:`write_results` nothing is repaired: ground truth must already be consistent.

    Parameters
    ----------
    gt_dir : path
        Output folder (e.g. ``.../01_GT``).
    tra : numpy.ndarray
        ``(T, Y, X)`` integer markers or full masks, label = track id.
    lineage : numpy.ndarray
        ``(N, 4)`` ``[id, start, end, parent]`` matching ``tra`` exactly.
    seg : mapping of int to numpy.ndarray, optional
        ``{frame: (Y, X) integer instance mask}`` for annotated frames.
    ndigits : int, optional
        Digits of ``NNN`` (default 3, more for 1000 frames or more).
    overwrite : bool
        Replace an existing non-empty folder.

    Raises
    ------
    ValueError
        Inconsistent arguments (same rules as :func:`read_ground_truth`, naming the argument).
    FileExistsError
        ``gt_dir`` exists, is not empty and ``overwrite`` is False.
    """
    tra = _as_label_movie(tra, "tra")
    lineage = _as_lineage(lineage)
    _check_lineage_table(lineage, "lineage", exc=ValueError)
    frame_ids = [_present_ids(frame) for frame in tra]
    _check_masks_against_lineage(
        frame_ids, lineage, lambda t: f"tra[{t}]", "lineage", require_full=True, exc=ValueError
    )
    seg = dict(seg or {})
    for t, mask in seg.items():
        if not 0 <= t < tra.shape[0] or np.shape(mask) != tra.shape[1:]:
            raise ValueError(
                f"seg[{t}]: frame/shape {np.shape(mask)}; expected frame in 0..{tra.shape[0] - 1}"
                f" and shape {tra.shape[1:]}"
            )
        _as_label_movie(mask, f"seg[{t}]")
    nd = _resolve_digits(ndigits, tra.shape[0])
    with _atomic_folder(gt_dir, overwrite) as tmp:
        (tmp / "TRA").mkdir()
        for t, frame in enumerate(tra):
            _write_mask(tmp / "TRA" / f"man_track{t:0{nd}d}.tif", frame)
        write_lineage(tmp / "TRA" / "man_track.txt", lineage[np.argsort(lineage[:, 0])])
        if seg:
            (tmp / "SEG").mkdir()
            for t, mask in sorted(seg.items()):
                _write_mask(tmp / "SEG" / f"man_seg{t:0{nd}d}.tif", np.asarray(mask))


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def evaluate(
    gt_dir: PathLike,
    res_dir: PathLike,
    metrics: Sequence[str] = ("SEG", "DET", "TRA"),
    threads: int = 1,
) -> dict[str, float]:
    """Score CTC results against ground truth with py-ctcmetrics.

    Parameters
    ----------
    gt_dir : path
        Ground-truth folder (``<seq>_GT`` with ``TRA/`` and, for SEG, ``SEG/``).
    res_dir : path
        Results folder (``maskNNN.tif`` + ``res_track.txt``), one mask per GT frame.
    metrics : sequence of str
        Metric names understood by py-ctcmetrics (``"SEG"``, ``"DET"``, ``"TRA"``, ``"LNK"``,
        ``"BC(1)"``, ``"CHOTA"``, ...).
    threads : int
        Worker processes for mask matching (0 = all cores). Default 1.

    Returns
    -------
    dict[str, float]
        Every requested metric, plus the numeric by-products py-ctcmetrics reports (e.g.
        ``AOGM``, ``AOGM_FN``, ``OP_CSB``, ``fp_div(1)``). ``BC(k)`` and ``CCA`` are None
        when the ground truth holds no division (they are undefined then).

    Raises
    ------
    ImportError
        py-ctcmetrics is not installed (it is part of the ``testing`` extra).
    CTCFormatError
        Missing folders/files, different numbers of frames, or results the evaluator rejects
        as invalid (with its first complaint).
    """
    try:
        from ctc_metrics.metrics import ALL_METRICS
        from ctc_metrics.scripts.evaluate import evaluate_sequence
    except ImportError as exc:
        raise ImportError(
            "evaluate() needs the 'py-ctcmetrics' package: pip install py-ctcmetrics "
            "(or napari-embedtrack[testing])"
        ) from exc
    gt_dir, res_dir = Path(gt_dir), Path(res_dir)
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in ALL_METRICS and not re.fullmatch(r"BC\(\d+\)", m)]
    if unknown or not metrics:
        raise ValueError(f"metrics: unknown {unknown}; expected names from {ALL_METRICS}")
    track_file = gt_dir / "TRA" / "man_track.txt"
    if not track_file.is_file():
        raise CTCFormatError(f"{track_file}: missing; expected a CTC ground-truth folder")
    if not (res_dir / "res_track.txt").is_file():
        raise CTCFormatError(f"{res_dir / 'res_track.txt'}: missing; expected CTC results")
    n_gt = len(_numbered_files(gt_dir / "TRA", _TRA_RE, "man_trackNNN.tif"))
    n_res = len(_numbered_files(res_dir, _MASK_RE, "maskNNN.tif"))
    if n_gt != n_res:
        raise CTCFormatError(f"{res_dir}: {n_res} maskNNN.tif files; expected {n_gt} (as GT)")
    if "SEG" in metrics and not (gt_dir / "SEG").is_dir():
        raise CTCFormatError(f"{gt_dir / 'SEG'}: missing; needed for the SEG metric")

    stdout = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout):
        warnings.simplefilter("always")
        # (a copy: py-ctcmetrics edits the list it is given, e.g. adds "BC" for "BC(1)")
        results = evaluate_sequence(
            str(res_dir), str(gt_dir), metrics=list(metrics), threads=threads
        )
    log.debug("py-ctcmetrics: %s", stdout.getvalue().strip())
    complaints = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if results.get("Valid") == 0:
        first = complaints[0] if complaints else "no details"
        raise CTCFormatError(f"{res_dir}: results rejected by the CTC evaluator: {first}")
    for msg in complaints:
        log.warning("py-ctcmetrics: %s", msg)
    scores = {
        key: float(value)
        for key, value in results.items()
        if isinstance(value, int | float | np.number) and not isinstance(value, bool)
    }
    # branching measures are undefined (None) when the truth has no division
    undefined = [m for m in metrics if results.get(m, 0) is None and m.startswith(("BC", "CCA"))]
    scores.update(dict.fromkeys(undefined))
    missing = [m for m in metrics if m not in scores]
    if missing:
        raise RuntimeError(f"py-ctcmetrics returned no value for {missing}: {results}")
    return scores


#: The Cell Tracking Challenge's technical measures and its biological (lineage) measures:
#: complete tracks, track fractions, branching correctness and cell-cycle accuracy.
TECHNICAL_METRICS = ("SEG", "DET", "TRA")
LINEAGE_METRICS = ("CT", "TF", "BC(1)", "CCA")


def score_results(
    gt_dir: PathLike, res_dir: PathLike, threads: int = 1
) -> dict[str, float | int | None]:
    """SEG/DET/TRA and the lineage measures CT, TF, BC(1), CCA, with the track counts.

    What ``embedtrack evaluate`` prints: the official scores from :func:`evaluate` (SEG only
    where the ground truth has a ``SEG`` folder) plus ``tracks`` and ``gt_tracks``, the
    number of tracks in the result and in the truth (a lineage with far more tracks than the
    truth is full of fragments and false divisions even when TRA is high), and the divisions
    found right, false and missed (within one frame, as BC(1) counts them). BC(1) and CCA are
    None where the truth has no division.
    """
    gt_dir, res_dir = Path(gt_dir), Path(res_dir)
    metrics = [m for m in TECHNICAL_METRICS if m != "SEG" or (gt_dir / "SEG").is_dir()]
    scores = evaluate(gt_dir, res_dir, (*metrics, *LINEAGE_METRICS), threads)
    keep = {k: scores[k] for k in (*metrics, *LINEAGE_METRICS)}
    for key, name in (("tp_div(1)", "divisions_right"), ("fp_div(1)", "divisions_false")):
        if key in scores:
            keep[name] = int(scores[key])
    if "fn_div(1)" in scores:
        keep["divisions_missed"] = int(scores["fn_div(1)"])
    keep["tracks"] = len(read_lineage(res_dir / "res_track.txt"))
    keep["gt_tracks"] = len(read_lineage(gt_dir / "TRA" / "man_track.txt"))
    return keep
