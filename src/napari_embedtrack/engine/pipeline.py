"""Segment and track a movie: network outputs -> clustering -> linking, frame by frame.

Two stages, both streaming (memory flat in the movie's length, issue #16):

1. :func:`track_frames`: per frame, the network (:func:`~.predict.iter_outputs`, reading the
   movie one frame at a time), clustering and the linker; the tracked frames go to a frame
   store (a run's :class:`~.checkpoint.RunCheckpoint` on disk, or memory), the network
   outputs, when kept, to an outputs sink (a list, or an on-disk
   :class:`~napari_embedtrack.io.zarr_store.OutputStore`). Returns :class:`RawTracks`.
   The network and clustering of a frame need nothing from other frames but the previous
   frame's encoder features; only the linker is sequential.
2. :class:`~.postprocess.StreamFinisher` (``RawTracks.finisher()``): the track clean-up
   over the stored frames, a few frames at a time; its ``frames()`` feed a writer
   (:func:`napari_embedtrack.io.ctc.write_results_frames`, a zarr array) or a stack.

:func:`track_movie` runs both and returns the labels in memory (:class:`TrackingResult`); the
CLI writes the finished frames straight into the result folder. Both are generators that
yield :class:`~.progress.Progress` and return their result; stopping early
(``should_stop``) gives a consistent result for the frames done so far.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .checkpoint import RunCheckpoint
from .cluster import ClusterParams, cluster
from .link import Linker
from .modelfile import LoadedModel, ModelCard, load_model
from .outputs import FrameOutput
from .postprocess import StreamFinisher, seediness_u8
from .predict import CPU_BATCH_BYTES, JOB_BYTES_PER_PIXEL, iter_outputs, resolve_device
from .progress import Progress, run
from .resources import available_memory

log = logging.getLogger(__name__)


#: Track clean-up defaults (issue #13), chosen by A/B tests on the three training movies and
#: their dim, noisy copies (``benchmarks/ab_postprocess.py``; docs/models.md, "Track
#: clean-up"): fragments below this fraction of the card's median cell area that touch a
#: cell join it; gaps of MIN_GAP to MAX_GAP frames are bridged within this many median cell
#: diameters (MIN_GAP 0: also a track broken between consecutive frames, a link the tracking
#: offsets missed; session 15); tracks without parent or children whose median area is below
#: SMALL_TRACK_FRACTION of the movie's cell area (area-weighted median, session 10) are
#: removed, and tracks on the frame's edge whose largest area is below
#: SMALL_TRACK_EDGE_FRACTION of it (session 8: dim cells missed for a few frames, debris;
#: session 10: debris on the frame's edge); a division whose smaller daughter is below
#: DAUGHTER_RATIO of the larger one (first frame) is undone (session 15: pieces split off
#: MSC's long cells; on SIM+ 01's true masks 1 of 28 divisions is that unequal). After the
#: clean-up every cell takes the connected pixels whose seediness exceeds GROW_DIM of its own
#: median seediness (session 17: the masks of dim cells were too small; bright cells keep
#: theirs).
FRAGMENT_FRACTION = 0.2
GAP_DIAMETERS = 1.0
MAX_GAP = 5
MIN_GAP = 0
SMALL_TRACK_FRACTION = 0.35
SMALL_TRACK_EDGE_FRACTION = 0.35
DAUGHTER_RATIO = 0.25
GROW_DIM = 0.65


def default_cluster_params(card: ModelCard, **overrides) -> ClusterParams:
    """Clustering and track clean-up settings for a model, from its card: thresholds,
    minimum size, grid; fragment size and gap distance scale with ``card.cell_size`` (off
    when the card does not know it, as is the small-track rule); a division whose daughter
    lasts one frame, or whose daughters are very unequal (:data:`DAUGHTER_RATIO`), is
    undone; gaps of up to :data:`MAX_GAP` frames are bridged, and tracks broken between
    consecutive frames joined (:data:`MIN_GAP`); dim cells' masks reach their edge
    (:data:`GROW_DIM`).
    """
    cell = float(card.cell_size)
    kw = {
        "seed_threshold": card.seed_threshold,
        "score_threshold": card.score_threshold,
        "min_size": card.min_size,
        "grid_spacing": card.pixel_spacing,
        "fragment_size": round(FRAGMENT_FRACTION * cell),
        "min_daughter_size": 0,
        "min_daughter_ratio": DAUGHTER_RATIO,
        "gap_distance": GAP_DIAMETERS * card.cell_diameter,
        "max_gap": MAX_GAP,
        "min_gap": MIN_GAP,
        "drop_single": card.drop_single,
        "small_track_fraction": SMALL_TRACK_FRACTION if cell > 0 else 0.0,
        "small_track_edge_fraction": SMALL_TRACK_EDGE_FRACTION if cell > 0 else 0.0,
        "grow_dim": GROW_DIM,
        **overrides,
    }
    return ClusterParams(**kw)


@dataclass
class TrackingResult:
    """Result of tracking a movie.

    Attributes:
        labels: (T, Y, X) uint32 instance masks, label = track id.
        lineage: (N, 4) int64 ``[track_id, start, end, parent]``.
        outputs: per-frame network outputs (kept for inspection and re-clustering), or empty.
        complete: False if the run was stopped before the last frame (``labels`` then covers
            only the frames done).
        params: the clustering settings used.
    """

    labels: np.ndarray
    lineage: np.ndarray
    outputs: list[FrameOutput] = field(default_factory=list)
    complete: bool = True
    params: ClusterParams | None = None


#: Memory a run needs, in bytes per pixel (estimates, see docs/user-guide.md, "Bad input"):
#: kept for every pixel of the movie (uint32 track labels and the clean-up's copies of them,
#: the uint8 seediness kept for the dim-cell rims), kept per pixel when the network outputs
#: are kept (seven float32 maps), and in flight for one frame (the normalised frame, tiles,
#: outputs, clustering and linking temporaries).
MOVIE_BYTES_PER_PIXEL = 17
OUTPUT_BYTES_PER_PIXEL = 28
FRAME_BYTES_PER_PIXEL = 100


def memory_needed(
    shape: tuple[int, ...],
    *,
    keep_outputs: bool = False,
    movie_itemsize: int = 0,
    in_memory: bool = True,
) -> int:
    """Estimated bytes of memory tracking a ``(T, Y, X)`` movie needs beyond what is already
    in use: ``movie_itemsize`` bytes per pixel for a movie not read yet (0: it is in memory
    already), :data:`MOVIE_BYTES_PER_PIXEL` (+ :data:`OUTPUT_BYTES_PER_PIXEL` with
    ``keep_outputs``) per pixel of the movie, :data:`FRAME_BYTES_PER_PIXEL` per pixel of
    one frame, and the network's activations for one frame
    (:data:`~napari_embedtrack.engine.predict.JOB_BYTES_PER_PIXEL` per pixel, at most
    :data:`~napari_embedtrack.engine.predict.CPU_BATCH_BYTES`: larger frames are tiled).
    ``in_memory=False``: a streaming run (frames read, tracked and written one at a time,
    outputs on disk): only the one-frame terms count."""
    t, y, x = (int(n) for n in shape)
    per_pixel = (
        movie_itemsize + MOVIE_BYTES_PER_PIXEL + (OUTPUT_BYTES_PER_PIXEL if keep_outputs else 0)
    )
    if not in_memory:
        per_pixel = 0
    network = min(y * x * JOB_BYTES_PER_PIXEL, CPU_BATCH_BYTES)
    return t * y * x * per_pixel + y * x * FRAME_BYTES_PER_PIXEL + network


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(
    shape: tuple[int, ...],
    *,
    keep_outputs: bool = False,
    movie_itemsize: int = 0,
    extra: int = 0,
    in_memory: bool = True,
) -> None:
    """Raise ValueError, before any work, when tracking a ``(T, Y, X)`` movie needs more
    memory (:func:`memory_needed` + ``extra`` bytes) than is available
    (:func:`available_memory`; nothing is checked where that is unknown)."""
    free = available_memory()
    kw = {"keep_outputs": keep_outputs, "movie_itemsize": movie_itemsize, "in_memory": in_memory}
    need = memory_needed(shape, **kw) + extra
    if free is None or need <= free:
        return
    t, y, x = (int(n) for n in shape)
    one = memory_needed((1, y, x), **kw)
    what = (
        "crop or bin the frames"
        if one > free
        else "track fewer frames at a time (--frames START:STOP), or crop or bin the frames"
    )
    raise ValueError(
        f"{t} frame(s) of {y}x{x} pixels need about {_gib(need)} of memory to track, "
        f"{_gib(free)} available; {what}"
    )


def check_movie(
    movie: np.ndarray, *, keep_outputs: bool = False, in_memory: bool = True
) -> np.ndarray:
    """The movie as a ``(T, Y, X)`` array (a 2-D image gets T = 1), checked before any work.

    Raises ValueError (one line: what is wrong and what was expected) for a wrong number of
    dimensions, no frame, frames smaller than 2x2, a non-numeric dtype, a movie too large to
    track in the memory available (:func:`check_memory`) and, for a float movie
    held in memory (a numpy array that is not a memory map), NaN or infinite pixels (the
    first frame holding one is named; memory maps and lazy arrays are checked frame by frame
    as they are read). Fortran-ordered, strided and byte-swapped arrays are accepted as
    they are (frames are copied one at a time where needed).
    """
    if not hasattr(movie, "ndim") or not hasattr(movie, "dtype"):
        movie = np.asarray(movie)
    if movie.ndim == 2:
        movie = movie[None]
    if movie.ndim != 3:
        raise ValueError(f"expected a (T, Y, X) movie or a (Y, X) image, got shape {movie.shape}")
    if movie.shape[0] == 0:
        raise ValueError(f"movie of shape {movie.shape} has no frame; expected at least one")
    if min(movie.shape[1:]) < 2:
        raise ValueError(
            f"movie of shape {movie.shape}: frames of {movie.shape[1]}x{movie.shape[2]} pixels; "
            "expected frames of at least 2x2 pixels"
        )
    if not (np.issubdtype(movie.dtype, np.integer) or np.issubdtype(movie.dtype, np.floating)):
        raise ValueError(f"expected integer or float pixels, got dtype {movie.dtype}")
    check_memory(movie.shape, keep_outputs=keep_outputs, in_memory=in_memory)
    if np.issubdtype(movie.dtype, np.floating) and type(movie) is np.ndarray:
        for t in range(movie.shape[0]):
            if not np.isfinite(movie[t]).all():
                raise ValueError(
                    f"frame {t} contains NaN or infinite pixels; replace them before prediction"
                )
    return movie


def scan_movie(movie, where: str = "") -> Generator[Progress, None, tuple[float, float]]:
    """Read a (T, Y, X) movie once, frame by frame: its lowest and highest pixel; raises
    ValueError at the first frame with NaN or infinite pixels (``where`` prefixes the
    message, e.g. the file). For checks before the work on movies not held in memory."""
    low, high = math.inf, -math.inf
    n = movie.shape[0]
    for t in range(n):
        frame = np.asarray(movie[t])
        if frame.dtype.kind == "f" and not np.isfinite(frame).all():
            raise ValueError(
                f"{where}frame {t} contains NaN or infinite pixels; replace them before prediction"
            )
        if frame.size:
            low, high = min(low, frame.min().item()), max(high, frame.max().item())
        yield Progress(t + 1, n, "checking the movie", {"frame": t})
    return low, high


_NO_OUTPUTS = (
    "cannot resume a run that keeps the network outputs (the finished frames' outputs were "
    "not stored); run it again from the start"
)


class _MemoryFrames:
    """Tracked frames kept in memory (runs without a checkpoint), with the seediness (uint8)
    kept for the dim-cell rims if given."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.seediness: list[np.ndarray | None] = []

    def save_frame(self, t: int, tracked: np.ndarray, _state, seediness=None) -> None:
        del self.frames[t:], self.seediness[t:]
        self.frames.append(tracked)
        self.seediness.append(seediness)

    def read_frame(self, t: int) -> np.ndarray:
        return self.frames[t]

    def read_seediness(self, t: int) -> np.ndarray | None:
        return self.seediness[t]


@dataclass
class RawTracks:
    """What :func:`track_frames` leaves: the frames as the linker tracked them (in a frame
    store), its lineage, and the network outputs if kept.

    Attributes:
        lineage: (N, 4) the linker's lineage (before the clean-up).
        n_frames: frames done.
        frame_shape: (Y, X).
        complete: False if stopped before the last frame.
        params: the clustering and clean-up settings.
        read_frame: frame index -> tracked (Y, X) uint32 labels.
        outputs: the network outputs kept (a list or an outputs store), or empty.
        read_seediness: frame index -> its seediness (uint8) or None, for the dim-cell rims
            the finisher adds (:attr:`~.cluster.ClusterParams.grow_dim`).
    """

    lineage: np.ndarray
    n_frames: int
    frame_shape: tuple[int, int]
    complete: bool
    params: ClusterParams
    read_frame: Callable[[int], np.ndarray]
    outputs: Sequence[FrameOutput] = field(default_factory=list)
    read_seediness: Callable[[int], np.ndarray | None] | None = None

    def finisher(self) -> StreamFinisher:
        """The track clean-up over these frames (call ``plan()`` then ``frames()``)."""
        return StreamFinisher(
            self.lineage, self.params, self.n_frames, self.read_frame, self.read_seediness
        )


def track_frames(
    movie,
    model: LoadedModel | str,
    *,
    tta: bool | None = None,
    device: str = "auto",
    params: ClusterParams | None = None,
    outputs=None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint: RunCheckpoint | None = None,
    resume: bool = False,
    in_memory: bool | None = None,
) -> Generator[Progress, None, RawTracks]:
    """Network, clustering and linking of a movie, frame by frame (stage 1 of the module doc).

    Args:
        movie: (T, Y, X) or (Y, X) frames: a numpy array, a memory map, or any lazy array
            read one frame at a time (``movie[t]``: dask, zarr,
            :class:`~napari_embedtrack.io.movies.LazyMovie`).
        model, tta, device, params, should_stop: as for :func:`track_movie`.
        outputs: where the network outputs go: None (not kept), a list (appended to), or a
            store with ``put(t, FrameOutput)`` and ``frames_written``
            (:class:`~napari_embedtrack.io.zarr_store.OutputStore`).
        checkpoint: the frame store: every tracked frame and the linker state go there as
            soon as the frame is done (resume, and flat memory); None: frames kept in memory.
        resume: continue the run in ``checkpoint`` after its last finished frame (with an
            outputs store only if it holds the finished frames' outputs).
        in_memory: for the memory check before the work: whether the frames stay in memory
            (default: without a checkpoint).

    Returns:
        RawTracks.
    """
    keep = outputs is not None
    if in_memory is None:
        in_memory = checkpoint is None
    movie = check_movie(movie, keep_outputs=isinstance(outputs, list), in_memory=in_memory)
    dev = resolve_device(device)
    if not isinstance(model, LoadedModel):
        model = load_model(model, device=dev)
    params = params or default_cluster_params(model.card)
    if tta is None:
        tta = model.card.tta
    n = movie.shape[0]
    linker = Linker()
    store = checkpoint if checkpoint is not None else _MemoryFrames()
    done, last = 0, None
    if resume:
        if checkpoint is None:
            raise ValueError("resume needs the checkpoint of the interrupted run")
        if isinstance(outputs, list):
            raise ValueError(_NO_OUTPUTS)
        done, last, state = checkpoint.load()
        done = min(done, n)
        if done and keep and getattr(outputs, "frames_written", 0) < done:
            raise ValueError(_NO_OUTPUTS)
        if done:
            linker = Linker.restore(state, last)
    elif checkpoint is not None:
        checkpoint.start()
    first = max(done - 1, 0)  # the network re-runs the last finished frame for its features
    complete = True
    what = f"tracking {n} frame(s) on {dev}"
    if done:
        what = f"resuming after frame {done - 1} of {n} on {dev}"
    yield Progress(done, n, what, {"frame": done - 1, "n_cells": 0})
    frames = (
        iter_outputs(
            model.net,
            movie[first:],
            **model.card.input_kwargs,
            tta=tta,
            device=dev,
        )
        if done < n
        else iter(())
    )
    n_done = done
    try:
        for t, out in enumerate(frames, start=first):
            if t < done:
                continue  # the last finished frame: its features are now in the network
            labels = cluster(out.seediness, out.bandwidth, out.offsets, params)
            tracked = linker.add(labels, out.track_offsets if t > 0 else None)
            seed = seediness_u8(out.seediness) if params.grow_dim else None
            if isinstance(outputs, list):
                outputs.append(out)
            elif keep:
                outputs.put(t, out)  # before the checkpoint counts the frame as done
            store.save_frame(t, tracked, linker.state(), seed)
            n_done = t + 1
            del out, tracked, seed
            n_cells = int(labels.max())
            yield Progress(
                t + 1, n, f"frame {t + 1}/{n}: {n_cells} cells", {"frame": t, "n_cells": n_cells}
            )
            if should_stop is not None and should_stop() and t + 1 < n:
                complete = False
                break
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    return RawTracks(
        lineage=linker.lineage,
        n_frames=n_done,
        frame_shape=tuple(movie.shape[1:]),
        complete=complete,
        params=params,
        read_frame=store.read_frame,
        outputs=outputs if keep else [],
        read_seediness=store.read_seediness,
    )


def finish_frames(raw: RawTracks) -> tuple[np.ndarray, np.ndarray]:
    """The track clean-up of :func:`track_frames`' frames, stacked in memory: (labels,
    lineage). It reads the stored frames a few at a time and yields no progress (it takes
    a small fraction of the network's time)."""
    finisher = raw.finisher()
    lineage = run(finisher.plan())
    labels = np.zeros((raw.n_frames, *raw.frame_shape), np.uint32)
    for t, frame in enumerate(finisher.frames()):
        labels[t] = frame
    return labels, lineage


def track_movie(
    movie: np.ndarray,
    model: LoadedModel | str,
    *,
    tta: bool | None = None,
    device: str = "auto",
    params: ClusterParams | None = None,
    keep_outputs: bool = True,
    should_stop: Callable[[], bool] | None = None,
    checkpoint: RunCheckpoint | None = None,
    resume: bool = False,
    outputs=None,
) -> Generator[Progress, None, TrackingResult]:
    """Segment and track a movie with a model, one frame at a time; the labels are returned
    in memory (see :func:`track_frames` and the module doc for the streaming stages).

    Args:
        movie: (T, Y, X) or (Y, X) integer or float frames (NaN/inf raise ValueError); a
            numpy array, memory map or lazy array (read one frame at a time).
        model: a loaded model, or a model name / folder.
        tta: test-time augmentation (8 flips/rotations; about 8x slower); None: the model
            card's default.
        device: auto, cpu, cuda or mps.
        params: clustering settings; default from the model card.
        keep_outputs: keep the per-frame network outputs in the result (in memory, as a list,
            unless ``outputs`` names a store).
        should_stop: polled after every frame; True stops and returns the frames done.
        checkpoint: write every finished frame (tracked labels before the clean-up, linker
            state) to this checkpoint folder (see :mod:`.checkpoint`); the caller removes it
            once the result is safe.
        resume: continue the run recorded in ``checkpoint`` after its last finished frame
            (the result equals an uninterrupted run's). Not with outputs kept in memory (the
            finished frames' outputs are not stored); with an outputs store that holds them.
            Raises :class:`~.checkpoint.CheckpointMismatch` if the checkpoint is of another
            run.
        outputs: an outputs store (``put(t, FrameOutput)``, e.g.
            :class:`~napari_embedtrack.io.zarr_store.OutputStore`) for the network outputs
            instead of a list in memory (implies ``keep_outputs``).

    Yields:
        Progress per frame, ``info = {"frame": t, "n_cells": n}``.

    Returns:
        TrackingResult.
    """
    if outputs is None and keep_outputs:
        outputs = []
    raw = yield from track_frames(
        movie,
        model,
        tta=tta,
        device=device,
        params=params,
        outputs=outputs,
        should_stop=should_stop,
        checkpoint=checkpoint,
        resume=resume,
        in_memory=True,
    )
    labels, lineage = finish_frames(raw)
    return TrackingResult(labels, lineage, raw.outputs, raw.complete, raw.params)


def retrack_frames(
    outputs: Sequence[FrameOutput], params: ClusterParams, *, frames=None
) -> Generator[Progress, None, RawTracks]:
    """Clustering and linking of stored network outputs (a list or an outputs store, read one
    frame at a time), stage 1 without the network; ``frames``: the frame store (with
    ``save_frame`` / ``read_frame``, e.g. a :class:`~.checkpoint.RunCheckpoint` after
    ``start()``), default memory."""
    n = len(outputs)
    if n == 0:
        raise ValueError("outputs is empty: need at least one frame")
    linker = Linker()
    store = _MemoryFrames() if frames is None else frames
    shape = None
    for t in range(n):
        out = outputs[t]
        if shape is None:
            shape = out.shape
        elif out.shape != shape:
            raise ValueError(f"outputs[{t}] has shape {out.shape}, expected {shape}")
        labels = cluster(out.seediness, out.bandwidth, out.offsets, params)
        tracked = linker.add(labels, out.track_offsets if t > 0 else None)
        seed = seediness_u8(out.seediness) if params.grow_dim else None
        store.save_frame(t, tracked, linker.state(), seed)
        n_cells = int(labels.max())
        yield Progress(
            t + 1, n, f"clustered and linked frame {t + 1}/{n}", {"frame": t, "n_cells": n_cells}
        )
    return RawTracks(
        linker.lineage, n, shape, True, params, store.read_frame, outputs, store.read_seediness
    )


def retrack(
    outputs: Sequence[FrameOutput], params: ClusterParams
) -> Generator[Progress, None, TrackingResult]:
    """Re-cluster and re-link from stored network outputs (no network run): a list or an
    outputs store, read one frame at a time; the labels are returned in memory."""
    raw = yield from retrack_frames(outputs, params)
    labels, lineage = finish_frames(raw)
    return TrackingResult(labels, lineage, outputs, True, params)
