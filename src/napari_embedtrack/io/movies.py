"""Movies read one frame at a time (issue #16): CTC sequence folders, TIFF stacks (memory-mapped
where the file allows, else page by page), zarr arrays and OME-Zarr images.

:func:`open_movie` takes the same paths and ``axes`` as :func:`napari_embedtrack.io.ctc.read_movie`
and checks them the same way (same one-line errors), but returns a :class:`LazyMovie`: the
pixels of frame ``t`` are read when ``movie[t]`` is asked for, so tracking a long movie holds
one frame (plus what the reader caches) in memory instead of the whole file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

from . import ctc

log = logging.getLogger(__name__)


class LazyMovie:
    """A (T, Y, X) movie whose frames are read on demand.

    ``movie[t]`` reads frame ``t`` (a (Y, X) numpy array); ``movie[a:b]`` (or any slice, or a
    list of frame indices) is another LazyMovie over those frames, reading nothing;
    ``np.asarray(movie)`` reads every frame (avoid it for long movies).

    Args:
        read: frame index -> (Y, X) array.
        n_frames: frames in the source.
        frame_shape: (Y, X).
        dtype: the frames' dtype.
        source: what to name in messages (a path).
    """

    ndim = 3

    def __init__(
        self,
        read: Callable[[int], np.ndarray],
        n_frames: int,
        frame_shape: tuple[int, int],
        dtype,
        *,
        source: str = "",
        frames: range | list[int] | None = None,
    ) -> None:
        self._read = read
        self._frames = range(int(n_frames)) if frames is None else frames
        self._n_source = int(n_frames)
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.dtype = np.dtype(dtype)
        self.source = source

    def __repr__(self) -> str:
        return f"LazyMovie({self.source!r}, shape={self.shape}, dtype={self.dtype})"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self._frames), *self.frame_shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, key):
        if isinstance(key, slice | range | list):
            frames = self._frames[key] if not isinstance(key, list) else [self._frames[k]
                                                                          for k in key]  # fmt: skip
            return LazyMovie(self._read, self._n_source, self.frame_shape, self.dtype,
                             source=self.source, frames=frames)  # fmt: skip
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
            return self[first][rest] if rest else self[first]
        t = self._frames[int(key)]
        frame = np.asarray(self._read(t))
        if frame.shape != self.frame_shape:
            raise ctc.CTCFormatError(
                f"{self.source}: frame {t} has shape {frame.shape}; expected all frames "
                f"{self.frame_shape}"
            )
        return frame

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, dtype=dtype or self.dtype)
        for i in range(len(self)):
            out[i] = self[i]
        return out


# --------------------------------------------------------------------------- TIFF stacks
def _frame_index(squeeze: int, perm, t: int, ndim: int) -> tuple:
    """Index of frame ``t`` in the file's array (before squeeze and transpose)."""
    lead = (0,) * squeeze
    if perm == ():
        return lead
    order = perm if perm is not None else (0, 1, 2)
    index = [slice(None)] * (ndim - squeeze)
    index[order[0]] = t
    return lead + tuple(index)


class _TiffStack:
    """Frames of a TIFF stack: a memory map of the frame when the pixels are stored
    uncompressed in one contiguous block (``tifffile.memmap`` territory), else one page per
    frame (``TiffFile.pages[i].asarray()``) when pages are frames, else the whole file."""

    def __init__(self, path: Path, shape, dtype, squeeze: int, perm, axes: str | None) -> None:
        self.path, self.shape, self.squeeze, self.perm = path, tuple(shape), squeeze, perm
        self.axes = axes
        self.dtype = np.dtype(dtype)
        self._tif: tifffile.TiffFile | None = None
        self._whole: np.ndarray | None = None
        # one open file read by page: seek + read must not interleave between threads (dask
        # reads napari's frames from several; interleaved reads gave corrupt pages)
        self._lock = threading.Lock()
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            offset = series.dataoffset
            n_pages = len(series.pages) if hasattr(series, "pages") else 0
            byteorder = tif.byteorder
            page_shape = tuple(series.pages[0].shape) if n_pages else ()
        self.offset = offset
        self.file_dtype = self.dtype.newbyteorder(byteorder)
        inner = self.shape[squeeze:]
        self.n_frames = 1 if perm == () else inner[(perm or (0, 1, 2))[0]]
        if offset is not None:
            self.mode = "memmap"
        elif perm is None and n_pages == self.n_frames and page_shape == inner[1:]:
            self.mode = "pages"
        else:
            self.mode = "whole"
            log.warning(
                "%s: frames not stored one per page; the whole stack is read into memory", path
            )

    def __call__(self, t: int) -> np.ndarray:
        if self.mode == "memmap":
            inner = self.shape[self.squeeze :]
            if self.perm is None or self.perm == (0, 1, 2) or self.perm == ():
                frame_bytes = int(np.prod(inner[-2:])) * self.dtype.itemsize
                off = self.offset + (0 if self.perm == () else t * frame_bytes)
                m = np.memmap(self.path, self.file_dtype, "r", offset=off, shape=inner[-2:])
            else:
                full = np.memmap(self.path, self.file_dtype, "r", offset=self.offset,
                                 shape=self.shape)  # fmt: skip
                m = full[_frame_index(self.squeeze, self.perm, t, len(self.shape))]
                if self.perm[1] > self.perm[2]:  # (X, Y) order in the file
                    m = m.T
            frame = np.array(m, dtype=self.dtype)  # a copy: the map is closed with ``m``
            del m
            return frame
        with self._lock:
            if self.mode == "pages":
                if self._tif is None:
                    self._tif = tifffile.TiffFile(self.path)
                return self._tif.series[0].pages[t].asarray()
            if self._whole is None:
                self._whole = ctc.read_movie(self.path, self.axes)
            return self._whole[t]

    def close(self) -> None:
        with self._lock:
            if self._tif is not None:
                self._tif.close()
                self._tif = None

    def __getstate__(self) -> dict:  # an open file and a lock do not travel
        state = dict(self.__dict__)
        state.update(_tif=None, _whole=None, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def open_movie(path: str | os.PathLike, axes: str | None = None) -> LazyMovie:
    """A movie as a lazy ``(T, Y, X)`` :class:`LazyMovie` (see the module docstring).

    Args:
        path: a CTC sequence folder of ``tNNN.tif``, a TIFF stack or 2D TIFF, a zarr array or
            an OME-Zarr image (a folder).
        axes: a TIFF stack's axes, as for :func:`napari_embedtrack.io.ctc.read_movie`.

    Raises:
        CTCFormatError / ValueError: the one-line errors of ``ctc.read_movie`` (checked from
            the headers; a frame that turns out unreadable raises when it is read).
    """
    from .zarr_store import is_zarr_movie, open_zarr_movie

    path = Path(path)
    if is_zarr_movie(path):
        return open_zarr_movie(path)
    (n, y, x), dtype = ctc.movie_info(path, axes)
    if path.is_dir():
        files = [p for _, p in ctc._numbered_files(path, ctc._FRAME_RE, "tNNN.tif")]

        def read(t: int) -> np.ndarray:
            arr, found = ctc._read_tiff(files[t])
            return ctc._as_2d_frame(arr, found, files[t])

        return LazyMovie(read, n, (y, x), dtype, source=str(path))
    shape, found, _ = ctc._series_header(path)
    squeeze, perm, warning = ctc._stack_plan(path, shape, found, axes)
    if warning:
        log.warning("%s", warning)
    reader = _TiffStack(path, shape, dtype, squeeze, perm, axes)
    log.debug("%s: frames read by %s", path, reader.mode)
    return LazyMovie(reader, n, (y, x), dtype, source=str(path))
