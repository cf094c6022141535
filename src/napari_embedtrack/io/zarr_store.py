"""Chunked on-disk stores for long movies (issue #16): network outputs written frame by frame
(float16), read back lazily for re-clustering and inspection; zarr and OME-Zarr movies read
frame by frame.

Outputs store layout (a folder, zarr format of the installed zarr; one chunk per frame)::

    outputs.zarr/
      seediness       (T, Y, X)    float16
      bandwidth       (T, 2, Y, X) float16
      offsets         (T, 2, Y, X) float16   pixels
      track_offsets   (T, 2, Y, X) float16   pixels
      .zattrs / zarr.json of ``seediness``: {"format": FORMAT, "frames_written": n}

float16 keeps offsets to about 0.1 pixel below 256 pixels (as the ``.npz`` of
:func:`~napari_embedtrack.engine.predict.save_outputs`). ``frames_written`` counts the frames
0 .. n-1 stored so far (an interrupted run's store holds the frames it finished).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..engine.outputs import FrameOutput

FORMAT = "napari-embedtrack-outputs-zarr-v1"
FIELDS = ("seediness", "bandwidth", "offsets", "track_offsets")
NPZ_FORMAT = "napari-embedtrack-outputs-v1"  # engine.predict.FILE_FORMAT


def _zarr():
    try:
        import zarr
    except ImportError as e:  # a core dependency; say what is missing
        raise ImportError("the zarr package is needed for on-disk stores: pip install zarr") from e
    return zarr


def _open_array(path: Path, mode: str, **kw):
    return _zarr().open_array(store=str(path), mode=mode, **kw)


class OutputStore(Sequence):
    """Network outputs of a movie in a zarr folder, one frame at a time.

    Writing: ``OutputStore(path, shape=(T, Y, X))`` then :meth:`put` frame by frame (the
    arrays are created, or opened if they exist, at the first :meth:`put`, so the folder may
    be created after the store object). Reading: ``OutputStore(path)`` (or
    :func:`open_outputs`); ``store[t]`` is a :class:`FrameOutput` (float32), ``len(store)``
    the frames written; :meth:`array` gives a field's lazy (T, ...) zarr array (napari
    displays it without loading it).
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int] | None = None):
        self.path = Path(path)
        self._shape = None if shape is None else tuple(int(n) for n in shape)
        self._arrays: dict | None = None
        if shape is None:
            self._open("r")

    def __repr__(self) -> str:
        return f"OutputStore({str(self.path)!r})"

    def _open(self, mode: str) -> dict:
        if self._arrays is not None:
            return self._arrays
        if mode == "r":
            try:
                arrays = {k: _open_array(self.path / k, "r") for k in FIELDS}
                fmt = arrays["seediness"].attrs.get("format")
            except Exception as e:  # zarr raises many kinds
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ValueError(f"{self.path}: not a readable outputs store ({msg})") from None
            if fmt != FORMAT:
                raise ValueError(f"{self.path}: not a napari-embedtrack outputs store ({FORMAT})")
            self._shape = tuple(arrays["seediness"].shape)
        else:
            t, y, x = self._shape
            self.path.mkdir(parents=True, exist_ok=True)
            arrays = {}
            for k in FIELDS:
                lead = () if k == "seediness" else (2,)
                arrays[k] = _open_array(
                    self.path / k,
                    "a",
                    shape=(t, *lead, y, x),
                    chunks=(1, *lead, y, x),
                    dtype="float16",
                    fill_value=0,
                )
            if arrays["seediness"].attrs.get("format") != FORMAT:
                arrays["seediness"].attrs.update({"format": FORMAT, "frames_written": 0})
        self._arrays = arrays
        return arrays

    @property
    def shape(self) -> tuple[int, int, int]:
        """(T, Y, X) of the movie the store is made for."""
        return self._shape

    @property
    def frames_written(self) -> int:
        """Frames 0 .. n-1 stored (0 if the store does not exist yet)."""
        if self._arrays is None:
            if not (self.path / "seediness").exists():
                return 0
            self._open("a" if self._shape is not None else "r")
        return int(self._arrays["seediness"].attrs.get("frames_written", 0))

    def put(self, t: int, out: FrameOutput) -> None:
        """Store frame ``t`` (frames are written in order; ``t`` may repeat a frame)."""
        arrays = self._open("a")
        for k in FIELDS:
            arrays[k][t] = np.asarray(getattr(out, k), dtype=np.float16)
        if t + 1 > self.frames_written:
            arrays["seediness"].attrs["frames_written"] = t + 1

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self.frames_written

    def __getitem__(self, t):
        if isinstance(t, slice):
            return [self[i] for i in range(*t.indices(len(self)))]
        n = len(self)
        t = int(t)
        if t < 0:
            t += n
        if not 0 <= t < n:
            raise IndexError(f"frame {t} not in the store ({n} frame(s))")
        arrays = self._open("r")
        return FrameOutput(*(np.asarray(arrays[k][t], dtype=np.float32) for k in FIELDS))

    def __iter__(self) -> Iterator[FrameOutput]:
        for t in range(len(self)):
            yield self[t]

    def array(self, field: str):
        """A field's lazy zarr array, (T, Y, X) or (T, 2, Y, X) float16."""
        if field not in FIELDS:
            raise ValueError(f"field {field!r}; expected one of {', '.join(FIELDS)}")
        return self._open("r" if self._shape is None else "a")[field]

    def export_npz(self, path: str | os.PathLike) -> None:
        """Write the frames stored as the ``.npz`` of
        :func:`~napari_embedtrack.engine.predict.save_outputs` (float16, readable by
        :func:`~napari_embedtrack.engine.predict.load_outputs`), one frame at a time."""
        n = len(self)
        arrays = self._open("r" if self._shape is None else "a")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("format.npy", "w") as f:
                np.lib.format.write_array(f, np.array(NPZ_FORMAT))
            for k in FIELDS:
                shape = (n, *arrays[k].shape[1:])
                header = {"descr": np.dtype("<f2").str, "fortran_order": False, "shape": shape}
                with zf.open(f"{k}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_2_0(f, header)
                    for t in range(n):
                        f.write(np.ascontiguousarray(arrays[k][t], dtype="<f2").tobytes())


def open_outputs(path: str | os.PathLike) -> Sequence[FrameOutput]:
    """Network outputs saved by ``embedtrack predict --save-embeddings``: a zarr store folder
    (read lazily, frame by frame) or a ``.npz`` file (read whole)."""
    path = Path(path)
    if path.is_dir():
        return OutputStore(path)
    from ..engine.predict import load_outputs

    return load_outputs(path)


# --------------------------------------------------------------------------- zarr movies
def is_zarr_movie(path: str | os.PathLike) -> bool:
    """A folder holding a zarr array or an OME-Zarr image (multiscales)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return any((path / name).is_file() for name in ("zarr.json", ".zarray", ".zattrs", ".zgroup"))


def _multiscale_axes(path: Path) -> tuple[str, list[str] | None]:
    """(sub-path of the full-resolution array, axis names) of an OME-Zarr image; ("", None) for
    a plain zarr array."""
    attrs: dict = {}
    for name in ("zarr.json", ".zattrs"):
        try:
            meta = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = meta.get("attributes", meta) if name == "zarr.json" else meta
        break
    ms = attrs.get("ome", attrs).get("multiscales")
    if not ms:
        return "", None
    first = ms[0]
    axes = first.get("axes")
    names = None
    if axes:
        names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
    return first["datasets"][0]["path"], names


def open_zarr_movie(path: str | os.PathLike):
    """A zarr array or OME-Zarr image as a lazy (T, Y, X)
    :class:`~napari_embedtrack.io.movies.LazyMovie` (frames are read when indexed): axes of
    size one other than Y and X are dropped; OME-Zarr axis names say which axis is time.
    Raises ValueError (one line) for other shapes."""
    from .movies import LazyMovie

    path = Path(path)
    sub, names = _multiscale_axes(path)
    try:
        arr = _open_array(path / sub if sub else path, "r")
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: cannot read as a zarr array or OME-Zarr image ({msg})") from None
    shape = tuple(int(n) for n in arr.shape)
    if not names or len(names) != len(shape):
        names = ["?"] * (len(shape) - 2) + ["y", "x"]
    names = [n.lower() for n in names]
    keep = [i for i, (n, size) in enumerate(zip(names, shape, strict=True))
            if size > 1 or n in ("y", "x")]  # fmt: skip
    kept = [names[i] for i in keep]
    letters = "".join(n[0] for n in names).upper()
    if kept[-2:] != ["y", "x"] or len(keep) > 3 or (len(keep) == 3 and kept[0] not in ("t", "?")):
        raise ValueError(
            f"{path}: image of shape {shape} (axes {letters}); expected a (T, Y, X) movie "
            "(one channel, one z-plane)"
        )
    if len(keep) == 2:  # one frame
        where = [i for i, n in enumerate(names) if n == "t"] or [0]
        keep = [where[0], *keep] if len(shape) > 2 else keep
    time_axis = keep[0] if len(keep) == 3 else None

    def read(t: int) -> np.ndarray:
        index = tuple(
            t if i == time_axis else slice(None) if i in keep else 0 for i in range(len(shape))
        )
        return np.asarray(arr[index])

    n = shape[time_axis] if time_axis is not None else 1
    frame_shape = (shape[keep[-2]], shape[keep[-1]])
    return LazyMovie(read, n, frame_shape, np.dtype(arr.dtype), source=str(path))
