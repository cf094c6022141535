"""Segment and track a movie: network outputs -> clustering -> linking, frame by frame.

This is the one entry point the CLI and the widgets use. It is a generator that yields a
:class:`~.progress.Progress` per frame and returns a :class:`TrackingResult`; stopping early
(``should_stop``) returns a consistent result for the frames done so far.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import RunCheckpoint
from .cluster import ClusterParams, cluster
from .link import Linker, iter_cluster_and_link
from .modelfile import LoadedModel, ModelCard, load_model
from .outputs import FrameOutput
from .postprocess import finish_tracks
from .predict import CPU_BATCH_BYTES, JOB_BYTES_PER_PIXEL, iter_outputs, resolve_device
from .progress import Progress

log = logging.getLogger(__name__)


#: Track clean-up defaults (issue #13), chosen by A/B tests on the three training movies and
#: their dim, noisy copies (``benchmarks/ab_postprocess.py``; docs/models.md, "Track
#: clean-up"): fragments below this fraction of the card's median cell area that touch a
#: cell join it; gaps of one frame are bridged within this many median cell diameters.
FRAGMENT_FRACTION = 0.2
GAP_DIAMETERS = 1.0


def default_cluster_params(card: ModelCard, **overrides) -> ClusterParams:
    """Clustering and track clean-up settings for a model, from its card: thresholds,
    minimum size, grid; fragment size and gap distance scale with ``card.cell_size`` (off
    when the card does not know it); a division whose daughter lasts one frame is undone.
    """
    cell = float(card.cell_size)
    kw = {
        "seed_threshold": card.seed_threshold,
        "score_threshold": card.score_threshold,
        "min_size": card.min_size,
        "grid_spacing": card.pixel_spacing,
        "fragment_size": round(FRAGMENT_FRACTION * cell),
        "min_daughter_size": 0,
        "gap_distance": GAP_DIAMETERS * 2.0 * math.sqrt(cell / math.pi),
        "drop_single": card.drop_single,
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
#: kept for every pixel of the movie (uint32 track labels and the clean-up's copies of them),
#: kept per pixel when the network outputs are kept (seven float32 maps), and in flight for
#: one frame (the normalised frame, tiles, outputs, clustering and linking temporaries).
MOVIE_BYTES_PER_PIXEL = 16
OUTPUT_BYTES_PER_PIXEL = 28
FRAME_BYTES_PER_PIXEL = 100


def available_memory() -> int | None:
    """Bytes of memory this process can still use: Linux ``MemAvailable``, lowered by a
    cgroup (container, batch job) limit; None where neither is known (then nothing is
    checked)."""
    known = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                known.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            cap = Path(limit).read_text().strip()
            used = int(Path(usage).read_text().strip())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 1 << 60:
            known.append(max(int(cap) - used, 0))
    return min(known) if known else None


def memory_needed(
    shape: tuple[int, ...], *, keep_outputs: bool = False, movie_itemsize: int = 0
) -> int:
    """Estimated bytes of memory tracking a ``(T, Y, X)`` movie needs beyond what is already
    in use: ``movie_itemsize`` bytes per pixel for a movie not read yet (0: it is in memory
    already), :data:`MOVIE_BYTES_PER_PIXEL` (+ :data:`OUTPUT_BYTES_PER_PIXEL` with
    ``keep_outputs``) per pixel of the movie, :data:`FRAME_BYTES_PER_PIXEL` per pixel of
    one frame, and the network's activations for one frame
    (:data:`~napari_embedtrack.engine.predict.JOB_BYTES_PER_PIXEL` per pixel, at most
    :data:`~napari_embedtrack.engine.predict.CPU_BATCH_BYTES`: larger frames are tiled)."""
    t, y, x = (int(n) for n in shape)
    per_pixel = (
        movie_itemsize + MOVIE_BYTES_PER_PIXEL + (OUTPUT_BYTES_PER_PIXEL if keep_outputs else 0)
    )
    network = min(y * x * JOB_BYTES_PER_PIXEL, CPU_BATCH_BYTES)
    return t * y * x * per_pixel + y * x * FRAME_BYTES_PER_PIXEL + network


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(
    shape: tuple[int, ...], *, keep_outputs: bool = False, movie_itemsize: int = 0, extra: int = 0
) -> None:
    """Raise ValueError, before any work, when tracking a ``(T, Y, X)`` movie needs more
    memory (:func:`memory_needed` + ``extra`` bytes) than is available
    (:func:`available_memory`; nothing is checked where that is unknown)."""
    free = available_memory()
    need = memory_needed(shape, keep_outputs=keep_outputs, movie_itemsize=movie_itemsize) + extra
    if free is None or need <= free:
        return
    t, y, x = (int(n) for n in shape)
    one = memory_needed((1, y, x), keep_outputs=keep_outputs, movie_itemsize=movie_itemsize)
    what = (
        "crop or bin the frames"
        if one > free
        else "track fewer frames at a time (--frames START:STOP), or crop or bin the frames"
    )
    raise ValueError(
        f"{t} frame(s) of {y}x{x} pixels need about {_gib(need)} of memory to track, "
        f"{_gib(free)} available; {what}"
    )


def check_movie(movie: np.ndarray, *, keep_outputs: bool = False) -> np.ndarray:
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
    check_memory(movie.shape, keep_outputs=keep_outputs)
    if np.issubdtype(movie.dtype, np.floating) and type(movie) is np.ndarray:
        for t in range(movie.shape[0]):
            if not np.isfinite(movie[t]).all():
                raise ValueError(
                    f"frame {t} contains NaN or infinite pixels; replace them before prediction"
                )
    return movie


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
) -> Generator[Progress, None, TrackingResult]:
    """Segment and track a movie with a model, one frame at a time.

    Args:
        movie: (T, Y, X) or (Y, X) integer or float frames (NaN/inf raise ValueError).
        model: a loaded model, or a model name / folder.
        tta: test-time augmentation (8 flips/rotations; about 8x slower); None: the model
            card's default.
        device: auto, cpu, cuda or mps.
        params: clustering settings; default from the model card.
        keep_outputs: keep the per-frame network outputs in the result.
        should_stop: polled after every frame; True stops and returns the frames done.
        checkpoint: write every finished frame (tracked labels before the clean-up, linker
            state) to this checkpoint folder (see :mod:`.checkpoint`); the caller removes it
            once the result is safe.
        resume: continue the run recorded in ``checkpoint`` after its last finished frame
            (the result equals an uninterrupted run's). Not with ``keep_outputs`` (the
            finished frames' outputs are not stored). Raises
            :class:`~.checkpoint.CheckpointMismatch` if the checkpoint is of another run.

    Yields:
        Progress per frame, ``info = {"frame": t, "n_cells": n}``.

    Returns:
        TrackingResult.
    """
    movie = check_movie(movie, keep_outputs=keep_outputs)
    dev = resolve_device(device)
    if not isinstance(model, LoadedModel):
        model = load_model(model, device=dev)
    params = params or default_cluster_params(model.card)
    if tta is None:
        tta = model.card.tta
    n = movie.shape[0]
    linker = Linker()
    tracked, outputs = [], []
    if resume:
        if checkpoint is None:
            raise ValueError("resume needs the checkpoint of the interrupted run")
        if keep_outputs:
            raise ValueError(
                "cannot resume a run that keeps the network outputs (the finished frames' "
                "outputs were not stored); run it again from the start"
            )
        tracked, state = checkpoint.load()
        tracked = tracked[:n]
        if tracked:
            linker = Linker.restore(state, tracked[-1])
    elif checkpoint is not None:
        checkpoint.start()
    done = len(tracked)
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
            grid_spacing=model.card.grid_spacing,
            scale=model.card.scale,
            crop_size=model.card.crop_size,
            percentiles=tuple(model.card.percentiles),
            tta=tta,
            device=dev,
        )
        if done < n
        else iter(())
    )
    try:
        for t, out in enumerate(frames, start=first):
            if t < done:
                continue  # the last finished frame: its features are now in the network
            labels = cluster(out.seediness, out.bandwidth, out.offsets, params)
            tracked.append(linker.add(labels, out.track_offsets if t > 0 else None))
            if checkpoint is not None:
                checkpoint.save_frame(t, tracked[-1], linker.state())
            if keep_outputs:
                outputs.append(out)
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
    labels = np.stack(tracked) if tracked else np.zeros((0, *movie.shape[1:]), np.uint32)
    labels, lineage = finish_tracks(labels, linker.lineage, params)
    return TrackingResult(labels, lineage, outputs, complete, params)


def retrack(
    outputs: list[FrameOutput], params: ClusterParams
) -> Generator[Progress, None, TrackingResult]:
    """Re-cluster and re-link from stored network outputs (no network run)."""
    labels, lineage = yield from iter_cluster_and_link(outputs, params)
    return TrackingResult(labels, lineage, list(outputs), True, params)
