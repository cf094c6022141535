"""Linking instance labels over time with tracking offsets (section 3.4 of the EmbedTrack paper).

Linking runs backwards in time, one frame at a time (:class:`Linker`):

1. **Vote.** Every pixel of an instance at t is shifted by its tracking offset (pixels, rounded,
   clipped to the frame) and looks up the track id of frame t-1 under the shifted position
   (0 = background). The instance's predecessor is the t-1 track with the most votes, provided
   it has at least as many votes as background; otherwise (most shifted pixels land on
   background, or no pixel lands on a cell) the instance has no predecessor. Ties between
   tracks go to the smaller track id.
2. **Assign**, per t-1 track, by the number of t instances choosing it:

   - one: the instance continues the track (same id);
   - two: a division; both instances start new tracks with the t-1 track as parent;
   - more than two: the two instances with the largest vote fraction (votes for the parent /
     instance size; ties: more votes, then smaller label) become daughters as above, the others
     start new tracks without parent.

   Instances without predecessor start new tracks without parent (parent 0).

A track therefore covers a contiguous range of frames; a cell that disappears and reappears
gets a new id (no gap closing). New track ids are handed out in increasing order of the
instance labels of the frame (daughters and new tracks alike), and never beyond
:data:`MAX_TRACKS` (65,535, the most a CTC result's 16-bit masks can hold): the track that
would pass it raises :class:`TooManyTracksError` in the frame where it is made, not at the
end of the movie.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence

import numpy as np

from .cluster import ClusterParams, cluster
from .outputs import FrameOutput
from .postprocess import finish_tracks, seediness_u8
from .progress import Progress, run

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_TRACKS",
    "Linker",
    "TooManyTracksError",
    "cluster_and_link",
    "iter_cluster_and_link",
    "link_movie",
    "vote",
]

#: Most track ids a movie may use: CTC masks are 16-bit.
MAX_TRACKS = 65535


class TooManyTracksError(ValueError):
    """Linking would make more tracks than a CTC result can hold (:data:`MAX_TRACKS`)."""


def _relabel(labels: np.ndarray, ids: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Map label values ``ids`` -> ``new`` (background and unlisted values -> 0), as uint32."""
    out = np.zeros(labels.shape, dtype=np.uint32)
    if ids.size == 0:
        return out
    if int(ids[-1]) <= max(4 * labels.size, 1 << 16):
        lut = np.zeros(int(ids[-1]) + 1, dtype=np.uint32)
        lut[ids] = new
        fg = labels > 0
        out[fg] = lut[labels[fg]]
        return out
    pos = np.searchsorted(ids, labels)
    pos = np.clip(pos, 0, ids.size - 1)
    hit = ids[pos] == labels
    out[hit] = new[pos[hit]]
    return out


def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique non-negative ints, index of each value in them, and counts (no sort
    of the values when they are small enough for a lookup table)."""
    if values.size and int(values.max()) <= max(4 * values.size, 1 << 16):
        counts = np.bincount(values)
        ids = np.flatnonzero(counts)
        lut = np.zeros(counts.size, dtype=np.int64)
        lut[ids] = np.arange(ids.size)
        return ids.astype(np.int64), lut[values], counts[ids].astype(np.int64)
    ids, inv, counts = np.unique(values, return_inverse=True, return_counts=True)
    return ids.astype(np.int64), inv.ravel(), counts.astype(np.int64)


def vote(
    labels: np.ndarray, track_offsets: np.ndarray, prev: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Predecessor of every instance at t by majority vote of its shifted pixels.

    Parameters
    ----------
    labels : (Y, X) int array
        Instances at t (0 = background).
    track_offsets : (2, Y, X) float array
        Tracking offsets (dy, dx) in pixels from t to t-1.
    prev : (Y, X) int array
        Labels (track ids) at t-1.

    Returns
    -------
    ids : (K,) int64
        Instance labels at t, sorted.
    pred : (K,) int64
        Predecessor label at t-1 of each instance, 0 if none (see the module docstring).
    votes : (K,) int64
        Number of pixels voting for ``pred`` (for pred 0: background votes).
    sizes : (K,) int64
        Instance sizes in pixels.
    """
    h, w = labels.shape
    ys, xs = np.nonzero(labels)
    if ys.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    ids, inv, sizes = _compact(labels[ys, xs].astype(np.int64))
    off_y = np.nan_to_num(np.asarray(track_offsets[0], dtype=np.float64)[ys, xs])
    off_x = np.nan_to_num(np.asarray(track_offsets[1], dtype=np.float64)[ys, xs])
    qy = np.clip(np.rint(ys + off_y), 0, h - 1).astype(np.int64)
    qx = np.clip(np.rint(xs + off_x), 0, w - 1).astype(np.int64)
    target = np.asarray(prev)[qy, qx].astype(np.int64)
    tids, tinv, _ = _compact(target)  # tids[0] == 0 if any pixel hits background
    # votes[k, m]: pixels of instance k landing on target tids[m]
    key = inv * tids.size + tinv
    if ids.size * tids.size <= 1 << 26:
        bins = np.bincount(key, minlength=ids.size * tids.size)
        pair_keys = np.flatnonzero(bins)
        counts = bins[pair_keys]
    else:
        pair_keys, counts = np.unique(key, return_counts=True)
    inst_of, tgt_of = np.divmod(pair_keys, tids.size)
    tgt_of = tids[tgt_of]
    bg_votes = np.zeros(ids.size, dtype=np.int64)
    is_bg = tgt_of == 0
    bg_votes[inst_of[is_bg]] = counts[is_bg]
    # best cell per instance: sort by instance, then votes descending, then target ascending
    cell = ~is_bg
    inst_c, tgt_c, cnt_c = inst_of[cell], tgt_of[cell], counts[cell]
    order = np.lexsort((tgt_c, -cnt_c, inst_c))
    inst_c, tgt_c, cnt_c = inst_c[order], tgt_c[order], cnt_c[order]
    first = np.ones(inst_c.size, dtype=bool)
    first[1:] = inst_c[1:] != inst_c[:-1]
    best_tgt = np.zeros(ids.size, dtype=np.int64)
    best_cnt = np.zeros(ids.size, dtype=np.int64)
    best_tgt[inst_c[first]] = tgt_c[first]
    best_cnt[inst_c[first]] = cnt_c[first]
    has_pred = (best_cnt > 0) & (best_cnt >= bg_votes)
    pred = np.where(has_pred, best_tgt, 0)
    votes = np.where(has_pred, best_cnt, bg_votes)
    return ids, pred, votes, sizes


class Linker:
    """Frame-by-frame linker (usable while predicting a stream of frames).

    Call :meth:`add` with the instance labels of frames 0, 1, 2, ... in order; the rules are in
    the module docstring.

    Examples
    --------
    >>> linker = Linker()
    >>> tracked0 = linker.add(labels0)
    >>> tracked1 = linker.add(labels1, track_offsets1)
    >>> linker.lineage  # (N, 4) int64 [id, start, end, parent]
    """

    def __init__(self, max_tracks: int | None = MAX_TRACKS) -> None:
        self._prev: np.ndarray | None = None
        self._t = -1
        self._tracks: dict[int, list[int]] = {}  # id -> [start, end, parent]
        self._next_id = 1
        self._max_tracks = max_tracks  # None: no limit

    @property
    def n_frames(self) -> int:
        """Number of frames added so far."""
        return self._t + 1

    def state(self) -> dict:
        """What the linker knows besides the last tracked frame, as JSON-able data (for
        :meth:`restore`: continuing an interrupted run)."""
        return {
            "t": self._t,
            "next_id": self._next_id,
            "max_tracks": self._max_tracks,
            "tracks": [[tid, *v] for tid, v in sorted(self._tracks.items())],
        }

    @classmethod
    def restore(cls, state: dict, last_frame: np.ndarray | None) -> Linker:
        """A linker in the state :meth:`state` described, whose last added frame was tracked
        as ``last_frame`` (the array :meth:`add` returned; None if no frame was added)."""
        linker = cls(max_tracks=state["max_tracks"])
        linker._t = int(state["t"])
        linker._next_id = int(state["next_id"])
        linker._tracks = {int(r[0]): [int(r[1]), int(r[2]), int(r[3])] for r in state["tracks"]}
        if (last_frame is None) != (linker._t < 0):
            raise ValueError("linker state and last frame disagree")
        linker._prev = None if last_frame is None else np.asarray(last_frame)
        return linker

    @property
    def lineage(self) -> np.ndarray:
        """Tracks so far, (N, 4) int64 ``[id, start, end, parent]`` sorted by id (CTC style)."""
        if not self._tracks:
            return np.zeros((0, 4), dtype=np.int64)
        rows = [[tid, *v] for tid, v in sorted(self._tracks.items())]
        return np.asarray(rows, dtype=np.int64)

    def _new_track(self, t: int, parent: int) -> int:
        tid = self._next_id
        if self._max_tracks is not None and tid > self._max_tracks:
            raise TooManyTracksError(
                f"frame {t}: more than {self._max_tracks:,} tracks, the most a CTC result "
                "(16-bit masks) can hold; expected fewer cells or frames: track the movie in "
                "parts (fewer frames at a time)"
            )
        self._next_id += 1
        self._tracks[tid] = [t, t, parent]
        return tid

    def add(self, labels: np.ndarray, track_offsets: np.ndarray | None = None) -> np.ndarray:
        """Link the next frame.

        Parameters
        ----------
        labels : (Y, X) int array
            Instance labels of this frame (0 = background; any positive values).
        track_offsets : (2, Y, X) float array or None
            Tracking offsets (dy, dx) in pixels from this frame to the previous one. Ignored
            for the first frame; ``None`` on a later frame means "no tracking information":
            every instance starts a new track.

        Returns
        -------
        (Y, X) uint32 array
            The frame with every instance relabelled to its track id.

        Raises
        ------
        TooManyTracksError
            This frame would make track ``max_tracks + 1`` (the linker is unusable after it).
        """
        labels = np.asarray(labels)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be a (Y, X) integer array, got {labels.dtype} {labels.shape}"
            )
        if labels.size and labels.min() < 0:
            raise ValueError("labels must be >= 0 (0 = background)")
        if self._prev is not None and labels.shape != self._prev.shape:
            raise ValueError(
                f"labels shape {labels.shape} differs from the previous frame's {self._prev.shape}"
            )
        if track_offsets is not None and np.shape(track_offsets) != (2, *labels.shape):
            raise ValueError(
                f"track_offsets must have shape {(2, *labels.shape)}, got {np.shape(track_offsets)}"
            )
        self._t += 1
        t = self._t
        if self._prev is None or track_offsets is None:
            ids = _compact(labels[labels != 0].astype(np.int64))[0]
            pred = votes = np.zeros(ids.size, dtype=np.int64)
            sizes = np.ones(ids.size, dtype=np.int64)
        else:
            ids, pred, votes, sizes = vote(labels, track_offsets, self._prev)

        new = np.zeros(ids.size, dtype=np.int64)
        parent_of = np.zeros(ids.size, dtype=np.int64)
        n_div = 0
        for p in np.unique(pred[pred > 0]):
            (succ,) = np.nonzero(pred == p)
            if succ.size == 1:
                new[succ[0]] = p
                self._tracks[int(p)][1] = t
                continue
            # rank successors: vote fraction, then votes, then label (succ is label-sorted)
            rank = np.lexsort((-votes[succ], -(votes[succ] / sizes[succ])))
            daughters = succ[rank[:2]]
            parent_of[daughters] = p
            n_div += 1
            if succ.size > 2:
                logger.info(
                    "frame %d: %d instances point to track %d; two become daughters",
                    t,
                    succ.size,
                    p,
                )
        for k in np.nonzero(new == 0)[0]:
            new[k] = self._new_track(t, int(parent_of[k]))

        tracked = _relabel(labels, ids, new)
        self._prev = tracked
        logger.debug(
            "link frame %d: %d instances, %d continued, %d divisions",
            t,
            ids.size,
            int(np.count_nonzero(new == pred)),
            n_div,
        )
        return tracked


def link_movie(
    labels: np.ndarray, track_offsets: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Link a whole movie of instance labels.

    Parameters
    ----------
    labels : (T, Y, X) int array
        Instance labels per frame.
    track_offsets : (T, 2, Y, X) float array or None
        Tracking offsets in pixels (frame 0's are ignored). ``None``: no linking.

    Returns
    -------
    tracked : (T, Y, X) uint32 array
        Label = track id.
    lineage : (N, 4) int64 array
        ``[id, start, end, parent]``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be (T, Y, X), got shape {labels.shape}")
    if track_offsets is not None and np.shape(track_offsets) != (
        labels.shape[0],
        2,
        *labels.shape[1:],
    ):
        raise ValueError(
            f"track_offsets must have shape {(labels.shape[0], 2, *labels.shape[1:])}, "
            f"got {np.shape(track_offsets)}"
        )
    linker = Linker()
    tracked = np.zeros(labels.shape, dtype=np.uint32)
    for t in range(labels.shape[0]):
        off = None if track_offsets is None else track_offsets[t]
        tracked[t] = linker.add(labels[t], off)
    return tracked, linker.lineage


def iter_cluster_and_link(
    outputs: Sequence[FrameOutput], params: ClusterParams | None = None
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """Cluster and link cached network outputs, yielding progress once per frame.

    Parameters
    ----------
    outputs : sequence of FrameOutput
        One per frame, in time order, all of the same shape.
    params : ClusterParams, optional
        Clustering parameters (defaults to ``ClusterParams()``).

    Yields
    ------
    Progress
        ``done`` = frames finished, ``info = {"frame": t, "n_cells": K}``.

    Returns
    -------
    tracked : (T, Y, X) uint32 array
    lineage : (N, 4) int64 array
    """
    n = len(outputs)
    if n == 0:
        raise ValueError("outputs is empty: need at least one frame")
    params = params or ClusterParams()
    linker = Linker()
    tracked = np.zeros((n, *outputs[0].shape), dtype=np.uint32)
    seeds = np.zeros(tracked.shape, np.uint8) if params.grow_dim else None
    for t, out in enumerate(outputs):
        if out.shape != tracked.shape[1:]:
            raise ValueError(f"outputs[{t}] has shape {out.shape}, expected {tracked.shape[1:]}")
        labels = cluster(out.seediness, out.bandwidth, out.offsets, params)
        tracked[t] = linker.add(labels, out.track_offsets if t > 0 else None)
        if seeds is not None:
            seeds[t] = seediness_u8(out.seediness)
        n_cells = int(labels.max())
        yield Progress(
            t + 1, n, f"clustered and linked frame {t + 1}/{n}", {"frame": t, "n_cells": n_cells}
        )
    return finish_tracks(tracked, linker.lineage, params, seeds)


def cluster_and_link(
    outputs: Sequence[FrameOutput], params: ClusterParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster and link cached network outputs (the GUI's re-cluster path).

    Parameters
    ----------
    outputs : sequence of FrameOutput
        One per frame, in time order.
    params : ClusterParams, optional

    Returns
    -------
    tracked : (T, Y, X) uint32 array
        Label = track id.
    lineage : (N, 4) int64 array
        ``[id, start, end, parent]``.
    """
    return run(iter_cluster_and_link(outputs, params))
