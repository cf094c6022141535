"""Distributed runs on a dask.distributed cluster (issue #16 part 4).

The network and the clustering of a frame need nothing from other frames but the previous
frame's encoder features; only the linker is sequential. So:

1. The movie's frames are cut into contiguous chunks ``[a, b)``; each chunk is one task on the
   cluster (:func:`_run_chunk`). A task opens the movie itself (a path every worker can read,
   :func:`~napari_embedtrack.io.movies.open_movie`), loads the model once per worker process
   (:func:`_worker_model`, cached by name / folder and device), runs the network over frames
   ``a - 1 .. b - 1`` (frame ``a - 1`` only for the encoder features the pair ``(a - 1, a)``
   needs, exactly as a resumed run does), clusters every frame and writes, per frame, the
   instance labels and the tracking vote's rounded shifts (:func:`vote_shift`) into a shared
   zarr store (one chunk per frame, so tasks write disjoint files concurrently), and the
   network outputs into an outputs store when they are kept. It returns a few numbers.
2. The client links the frames in order as their chunks finish (cheap: the labels and
   shifts are read from the store), into the same frame store the single-process path uses
   (a :class:`~.checkpoint.RunCheckpoint` or memory), and returns the same
   :class:`~.pipeline.RawTracks`; the streaming clean-up and the writers are the
   single-process ones.

The result equals the single-process path's (same masks and lineage): the encoder features
of a chunk's first pair are those of frame ``a - 1`` computed from the same pixels with the
same tile plan, and the linker sees the shifts it would compute from the float32 tracking
offsets (the rounded pixel shift of every cell pixel, clipped as the vote clips it), not the
float16 outputs. The same model, torch version and kind of device everywhere are assumed (as
for any two runs that should agree to the last bit).

``distributed`` is an optional dependency (``pip install napari-embedtrack[distributed]``),
imported only when a distributed run starts.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import RunCheckpoint
from .cluster import ClusterParams, cluster
from .link import Linker
from .modelfile import LoadedModel, load_model
from .pipeline import (
    RawTracks,
    TrackingResult,
    _MemoryFrames,
    default_cluster_params,
    finish_frames,
)
from .postprocess import seediness_u8
from .progress import Progress

#: Frames per task by default: the first frame of a chunk is run twice (once for its
#: features), so the network does 1/CHUNK_FRAMES more work than in one process.
CHUNK_FRAMES = 32
#: Seconds to wait for the scheduler before giving up.
CONNECT_TIMEOUT = 10.0
#: Seconds between checks of ``should_stop`` while waiting for a chunk.
POLL_SECONDS = 0.2

_INSTALL = (
    "distributed runs need the dask.distributed package: pip install napari-embedtrack[distributed]"
)


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError(_INSTALL) from None
    return distributed


def connect(scheduler, timeout: float | None = None):
    """A ``distributed.Client`` for ``scheduler``: an address (``tcp://host:port``) or a
    client (returned as is). Raises ValueError (one line) if the scheduler cannot be reached
    within ``timeout`` seconds (default :data:`CONNECT_TIMEOUT`), ImportError (one line) if
    ``distributed`` is not installed."""
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        return scheduler
    if not isinstance(scheduler, str | os.PathLike) or not str(scheduler).strip():
        raise ValueError(
            f"scheduler {scheduler!r}: expected an address such as tcp://host:8786 or a "
            "distributed.Client"
        )
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        return distributed.Client(str(scheduler), timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"cannot reach the dask scheduler at {scheduler} within {timeout:g} s ({first}); "
            "expected a running scheduler (dask scheduler) with workers"
        ) from None


def _is_client(scheduler) -> bool:
    return type(scheduler).__name__ == "Client" and hasattr(scheduler, "submit")


@dataclass(frozen=True)
class MovieSource:
    """A movie the workers open themselves: a path they can read (CTC folder, TIFF stack,
    zarr / OME-Zarr), the TIFF stack's axes and the frames taken (``slice`` arguments)."""

    path: str
    axes: str | None = None
    frames: tuple = (None, None, None)

    def open(self):
        from ..io.movies import open_movie

        return open_movie(self.path, self.axes)[slice(*self.frames)]


def _source(movie, axes, frames: slice) -> MovieSource:
    if isinstance(movie, MovieSource):
        return movie
    if not isinstance(movie, str | os.PathLike):
        raise ValueError(
            f"a distributed run reads the movie on the workers: expected a path (CTC folder, "
            f"TIFF stack, zarr), got a {type(movie).__name__}"
        )
    path = Path(movie).resolve()
    if not path.exists():
        raise ValueError(f"{path}: no such movie")
    return MovieSource(str(path), axes, (frames.start, frames.stop, frames.step))


def _model_ref(model) -> str:
    """What the workers load: a shipped model's name or a model folder's absolute path."""
    if isinstance(model, LoadedModel):
        if model.path is None:
            raise ValueError(
                "a distributed run needs a model the workers can load (a name or a model "
                "folder), not a model held only in memory: save it with save_model first"
            )
        return str(Path(model.path).resolve())
    path = Path(model)
    return str(path.resolve()) if path.exists() else str(model)


_MODELS: dict[tuple[str, str], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _worker_model(ref: str, device: str) -> LoadedModel:
    """The model, loaded once per worker process and device (threads share it; the network
    is only read)."""
    from .predict import resolve_device

    key = (ref, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(ref, device=resolve_device(device))
        return _MODELS[key]


def _shift_dtype(h: int, w: int):
    return np.int16 if max(h, w) < 32767 else np.int32


def vote_shift(labels: np.ndarray, track_offsets: np.ndarray) -> np.ndarray:
    """The pixel shift every cell pixel of ``labels`` votes with (``(2, Y, X)`` integers, 0
    on background): :func:`~.link.vote` rounds ``position + offset`` and clips it to the
    frame; this is that target minus the position, clipped to one pixel beyond the frame, so
    the vote with these shifts as offsets lands on the same pixels (int16 for frames below
    32,767 pixels, else int32)."""
    h, w = labels.shape
    dtype = _shift_dtype(h, w)
    shift = np.zeros((2, h, w), dtype)
    ys, xs = np.nonzero(labels)
    for k, (pos, size) in enumerate(((ys, h), (xs, w))):
        off = np.nan_to_num(np.asarray(track_offsets[k], dtype=np.float64)[ys, xs])
        target = np.clip(np.rint(pos + off), -1, size)
        shift[k][ys, xs] = (target - pos).astype(dtype)
    return shift


def _zarr():
    import zarr

    return zarr


def _create_store(folder: Path, shape: tuple[int, int, int], shift_dtype) -> None:
    """The shared store: ``labels`` (T, Y, X) int32 and ``shift`` (T, 2, Y, X), one chunk
    per frame."""
    zarr = _zarr()
    t, y, x = shape
    folder.mkdir(parents=True, exist_ok=True)
    for name, full, chunks, dtype in (
        ("labels", (t, y, x), (1, y, x), "int32"),
        ("seediness", (t, y, x), (1, y, x), "uint8"),
        ("shift", (t, 2, y, x), (1, 2, y, x), np.dtype(shift_dtype).name),
    ):
        zarr.open_array(
            store=str(folder / name), mode="w", shape=full, chunks=chunks, dtype=dtype,
            fill_value=0,
        )  # fmt: skip


def _run_chunk(
    source: MovieSource,
    model_ref: str,
    device: str,
    tta: bool,
    params: ClusterParams,
    inputs: dict,
    store: str,
    outputs: str | None,
    a: int,
    b: int,
) -> dict:
    """One task: network + clustering of frames ``[a, b)`` into the shared store.
    ``inputs``: the caller's card's :attr:`~.modelfile.ModelCard.input_kwargs` (a run may
    change them, e.g. ``embedtrack predict --smooth``; the worker's copy of the card does
    not know)."""
    from .predict import iter_outputs

    zarr = _zarr()
    model = _worker_model(model_ref, device)
    movie = source.open()
    labels_arr = zarr.open_array(store=str(Path(store) / "labels"), mode="r+")
    shift_arr = zarr.open_array(store=str(Path(store) / "shift"), mode="r+")
    seed_arr = zarr.open_array(store=str(Path(store) / "seediness"), mode="r+")
    out_arrs = None
    if outputs is not None:
        from ..io.zarr_store import FIELDS

        out_arrs = {k: zarr.open_array(store=str(Path(outputs) / k), mode="r+") for k in FIELDS}
    first = max(a - 1, 0)
    frames = iter_outputs(
        model.net,
        movie[first:b],
        **inputs,
        tta=tta,
        device=device,
        prefetch=False,
    )
    cells = []
    try:
        for t, out in _renumbered(frames, first):
            if t < a:
                continue  # frame a - 1: run for its encoder features only
            labels = cluster(out.seediness, out.bandwidth, out.offsets, params)
            labels_arr[t] = labels
            if params.grow_dim:
                seed_arr[t] = seediness_u8(out.seediness)
            if t > 0:
                shift_arr[t] = vote_shift(labels, out.track_offsets)
            if out_arrs is not None:
                for k, arr in out_arrs.items():
                    arr[t] = np.asarray(getattr(out, k), dtype=np.float16)
            cells.append(int(labels.max()))
    finally:
        frames.close()
    return {"start": a, "stop": b, "cells": cells, "worker": os.getpid()}


def _renumbered(frames, first: int):
    """``enumerate(frames, start=first)``, with the frame named in a ValueError (a NaN
    pixel) counted from the movie's start, not the chunk's."""
    t = first
    while True:
        try:
            out = next(frames)
        except StopIteration:
            return
        except ValueError as e:
            msg = re.sub(r"^frame (\d+)", lambda m: f"frame {int(m[1]) + first}", str(e))
            raise ValueError(msg) from None
        yield t, out
        t += 1


def track_frames_distributed(
    movie,
    model: LoadedModel | str,
    scheduler,
    store: str | os.PathLike,
    *,
    axes: str | None = None,
    frames: slice = slice(None),
    tta: bool | None = None,
    device: str = "auto",
    params: ClusterParams | None = None,
    outputs=None,
    chunk_frames: int = CHUNK_FRAMES,
    should_stop: Callable[[], bool] | None = None,
    checkpoint: RunCheckpoint | None = None,
) -> Generator[Progress, None, RawTracks]:
    """Stage 1 of :mod:`.pipeline` (network, clustering, linking) with the network and the
    clustering on a dask.distributed cluster, chunks of frames at a time (module doc).

    Args:
        movie: a path every worker can read (CTC sequence folder, TIFF stack, zarr /
            OME-Zarr), or a :class:`MovieSource`.
        model: a shipped model's name, a model folder, or a loaded model with a ``path``
            (the workers load it themselves, once per worker; the input settings of its
            card, e.g. a changed ``smooth_sigma``, go with the tasks).
        scheduler: the scheduler's address (``tcp://host:port``) or a ``distributed.Client``.
        store: a folder on a filesystem every worker and this process share, for the
            per-frame labels and vote shifts (created; the caller removes it).
        axes, frames: the TIFF stack's axes and the frames to track (as ``embedtrack predict
            --axes --frames``).
        tta, device, params, should_stop: as for :func:`~.pipeline.track_movie`; ``device``
            is resolved by each worker (``auto``: its GPU if it has one).
        outputs: an :class:`~napari_embedtrack.io.zarr_store.OutputStore` (on the shared
            filesystem) for the network outputs, or None.
        chunk_frames: frames per task.
        checkpoint: the frame store for the linked frames (as for
            :func:`~.pipeline.track_frames`; a run can be resumed from it without a
            scheduler); None: memory.

    Returns:
        RawTracks, equal to :func:`~.pipeline.track_frames`' for the same movie and model.
    """
    if int(chunk_frames) != chunk_frames or chunk_frames < 1:
        raise ValueError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    chunk_frames = int(chunk_frames)
    source = _source(movie, axes, frames)
    ref = _model_ref(model)
    loaded = model if isinstance(model, LoadedModel) else load_model(ref)
    params = params or default_cluster_params(loaded.card)
    tta = loaded.card.tta if tta is None else bool(tta)
    local = source.open()
    n, y, x = local.shape
    if n == 0:
        raise ValueError(f"{source.path}: the frames selected hold no frame")
    own = not _is_client(scheduler)
    client = connect(scheduler)
    try:
        inputs = loaded.card.input_kwargs
        args = (source, ref, (n, y, x), device, tta, params, inputs, Path(store), outputs)
        return (yield from _track(client, *args, chunk_frames, should_stop, checkpoint))
    finally:
        if own:
            client.close()


def _track(
    client, source, ref, shape, device, tta, params, inputs, store, outputs, chunk_frames,
    should_stop, checkpoint,
) -> Generator[Progress, None, RawTracks]:  # fmt: skip
    n, y, x = shape
    frame_store = checkpoint if checkpoint is not None else _MemoryFrames()
    if checkpoint is not None:
        checkpoint.start()  # first: it empties its folder, which may hold the stores
    _create_store(store, (n, y, x), _shift_dtype(y, x))
    out_path = None
    if outputs is not None:
        outputs.array("seediness")  # creates the arrays (the workers write into them)
        out_path = str(outputs.path)
    zarr = _zarr()
    labels_arr = zarr.open_array(store=str(store / "labels"), mode="r")
    shift_arr = zarr.open_array(store=str(store / "shift"), mode="r")
    seed_arr = zarr.open_array(store=str(store / "seediness"), mode="r")
    chunks = [(a, min(a + chunk_frames, n)) for a in range(0, n, chunk_frames)]
    tag = uuid.uuid4().hex[:8]
    futures = [
        client.submit(
            _run_chunk, source, ref, device, tta, params, inputs, str(store), out_path, a, b,
            key=f"embedtrack-chunk-{a}-{b}-{tag}", priority=len(chunks) - i, pure=False,
        )
        for i, (a, b) in enumerate(chunks)
    ]  # fmt: skip
    linker = Linker()
    n_done, complete = 0, True
    what = f"tracking {n} frame(s) in {len(chunks)} task(s) on {client.scheduler.address}"
    yield Progress(0, n, what, {"frame": -1, "n_cells": 0})
    try:
        for fut, (a, b) in zip(futures, chunks, strict=True):
            while not fut.done():
                if should_stop is not None and should_stop():
                    complete = False
                    break
                time.sleep(POLL_SECONDS)
            if not complete:
                break
            fut.result()  # raises a task's error here
            for t in range(a, b):
                labels = np.asarray(labels_arr[t])
                shift = np.asarray(shift_arr[t]) if t > 0 else None
                tracked = linker.add(labels, shift)
                seed = np.asarray(seed_arr[t]) if params.grow_dim else None
                frame_store.save_frame(t, tracked, linker.state(), seed)
                n_done = t + 1
                if out_path is not None:
                    outputs.array("seediness").attrs["frames_written"] = n_done
                n_cells = int(labels.max())
                info = {"frame": t, "n_cells": n_cells}
                yield Progress(t + 1, n, f"frame {t + 1}/{n}: {n_cells} cells", info)
            if should_stop is not None and should_stop() and b < n:
                complete = False
                break
    finally:
        client.cancel([f for f in futures if not f.done()])
    return RawTracks(
        lineage=linker.lineage,
        n_frames=n_done,
        frame_shape=(y, x),
        complete=complete,
        params=params,
        read_frame=frame_store.read_frame,
        outputs=outputs if outputs is not None else [],
        read_seediness=frame_store.read_seediness,
    )


def track_movie_distributed(
    movie,
    model: LoadedModel | str,
    scheduler,
    store: str | os.PathLike,
    **kw,
) -> Generator[Progress, None, TrackingResult]:
    """:func:`track_frames_distributed` followed by the track clean-up, the labels returned
    in memory (as :func:`~.pipeline.track_movie`). Keyword arguments as for
    :func:`track_frames_distributed`."""
    raw = yield from track_frames_distributed(movie, model, scheduler, store, **kw)
    labels, lineage = finish_frames(raw)
    return TrackingResult(labels, lineage, raw.outputs, raw.complete, raw.params)
