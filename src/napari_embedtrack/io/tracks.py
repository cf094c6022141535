"""Lineage tables <-> napari Tracks layer data, and label movies consistent with their lineage.

Everything here works on plain numpy arrays (see ``docs/architecture.md``):

- instance/track label movies ``(T, Y, X)`` (0 = background, label = track id),
- lineages ``(N, 4)`` int64 with rows ``[track_id, start, end, parent]`` exactly as in CTC
  ``man_track.txt`` / ``res_track.txt`` (inclusive frame indices, ``parent = 0``: none),
- napari Tracks ``data (M, 4)`` float rows ``[track_id, t, y, x]`` plus ``graph`` and
  ``properties``.

It holds :func:`lineage_from_labels`, :func:`consistent_tracks`, :func:`lineage_to_tracks`,
:func:`tracks_to_lineage` and the small checks on label movies and lineage tables they share
with the CTC folder format, :mod:`napari_embedtrack.io.ctc` (which imports them from here;
this module imports nothing from it).

Rules :func:`consistent_tracks` applies (documented choices; CTC results are written through
it):

- A track is a contiguous time range. When labels contain an id with a time gap,
  :func:`consistent_tracks` keeps the id for the first contiguous piece and gives every later
  piece a fresh id (``max id + 1, ...``) whose parent is the previous piece: a single-child
  parent link across the gap, which is how CTC expresses "the same cell, lost for some frames"
  (the CTC ground truth itself contains single-child links, e.g. Fluo-N2DH-SIM+ 01). Children
  of the split track get the *last* piece as parent.
- Lineage entries always follow the masks: start/end are recomputed, tracks absent from the
  masks are dropped (their children get parent 0), label ids missing from the lineage become
  parentless tracks, and a parent link whose parent does not end before the child starts is
  dropped (parent 0) with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "consistent_tracks",
    "lineage_from_labels",
    "lineage_to_tracks",
    "tracks_to_lineage",
]

MAX_LABEL = 65535  # CTC masks are 16-bit
_BINCOUNT_LIMIT = 1 << 22  # use np.bincount for label values below this, np.unique above


# --------------------------------------------------------------------------------------------
# label movie and lineage table helpers
# --------------------------------------------------------------------------------------------


def _empty_lineage() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.int64)


def _present_ids(frame: np.ndarray) -> np.ndarray:
    """Sorted non-zero label ids present in one frame, int64."""
    ids, _ = _label_counts(frame)
    return ids


def _label_counts(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero label ids of a frame (sorted, int64) and their pixel counts (int64)."""
    flat = frame.ravel()
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = int(flat.max())
    if top <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if top < _BINCOUNT_LIMIT and int(flat.min()) >= 0:
        counts = np.bincount(flat)
        ids = np.flatnonzero(counts)
        ids = ids[ids > 0]
        return ids.astype(np.int64), counts[ids].astype(np.int64)
    ids, counts = np.unique(flat, return_counts=True)
    keep = ids > 0
    return ids[keep].astype(np.int64), counts[keep].astype(np.int64)


def _label_centroids(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids (int64), centroids (K, 2) float64 [y, x] and areas (int64) of a 2D label frame.

    One pass of ``np.bincount`` per coordinate (no per-label loop).
    """
    flat = frame.ravel()
    if flat.size == 0 or int(flat.max()) <= 0:
        return np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0, np.int64)
    fg = np.flatnonzero(flat > 0)
    values = flat[fg]
    ids, inverse = np.unique(values, return_inverse=True)
    counts = np.bincount(inverse, minlength=ids.size)
    yy, xx = np.divmod(fg, frame.shape[1])
    cy = np.bincount(inverse, weights=yy, minlength=ids.size) / counts
    cx = np.bincount(inverse, weights=xx, minlength=ids.size) / counts
    return ids.astype(np.int64), np.stack([cy, cx], axis=1), counts.astype(np.int64)


def _as_label_movie(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Validate a label movie argument: (T, Y, X) or (Y, X) non-negative integers <= 65535."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3:
        raise ValueError(f"{name}: shape {labels.shape}; expected (T, Y, X) or (Y, X)")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"{name}: dtype {labels.dtype}; expected integer labels")
    if labels.size and labels.dtype.kind == "i" and labels.min() < 0:
        raise ValueError(f"{name}: negative label values; expected 0 (background) or ids > 0")
    if labels.size and labels.max() > MAX_LABEL:
        raise ValueError(
            f"{name}: label values up to {labels.max()}; CTC masks are 16-bit (max {MAX_LABEL})"
        )
    return labels


def _as_lineage(lineage, name: str = "lineage") -> np.ndarray:
    """Validate a lineage argument shape and return it as (N, 4) int64."""
    if lineage is None:
        return _empty_lineage()
    arr = np.asarray(lineage)
    if arr.size == 0:
        return _empty_lineage()
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name}: shape {arr.shape}; expected (N, 4) [id, start, end, parent]")
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise ValueError(f"{name}: non-integer values; expected integer [id, start, end, parent]")
    return arr.astype(np.int64)


# --------------------------------------------------------------------------------------------
# lineage <-> labels
# --------------------------------------------------------------------------------------------


def lineage_from_labels(labels: np.ndarray) -> np.ndarray:
    """One parentless track per label id, spanning its first to last frame.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(T, Y, X)`` (or ``(Y, X)``) integer labels.

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` int64 ``[id, first frame, last frame, 0]`` sorted by id. An id with a time
        gap is *not* split here (its row spans the gap); :func:`consistent_tracks` /
        :func:`napari_embedtrack.io.ctc.write_results` split it, because that needs new label
        ids in the masks.
    """
    labels = _as_label_movie(labels)
    ids_all, ts_all = _presence(labels)
    if ids_all.size == 0:
        return _empty_lineage()
    ids, first_idx = np.unique(ids_all, return_index=True)
    # _presence is sorted by (id, t): first occurrence = start, last occurrence = end
    last_idx = np.r_[first_idx[1:], ids_all.size] - 1
    lineage = np.stack([ids, ts_all[first_idx], ts_all[last_idx], np.zeros_like(ids)], axis=1)
    return lineage.astype(np.int64)


def _presence(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (id, frame) pairs present in a label movie, sorted by id then frame."""
    return _presence_of([_present_ids(frame) for frame in labels])


def _presence_of(per_frame: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All (id, frame) pairs from the ids present in each frame, sorted by id then frame."""
    ids = np.concatenate([np.zeros(0, np.int64), *per_frame])
    ts = np.concatenate(
        [np.zeros(0, np.int64)] + [np.full(f.size, t, np.int64) for t, f in enumerate(per_frame)]
    )
    order = np.lexsort((ts, ids))
    return ids[order], ts[order]


def consistent_tracks(
    labels: np.ndarray, lineage: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Make labels and lineage agree exactly, as the CTC format requires.

    Rules:

    - start/end of every track are recomputed from the masks;
    - an id present in several separate time ranges is split: the first contiguous piece
      keeps the id, each later piece gets a fresh id (``max id + 1, ...`` in order of id, then
      time) with the previous piece as its parent (a single-child link across the gap = the
      same cell lost for some frames, which the CTC TRA measure scores as a valid link);
    - children of a split track get its last piece as parent;
    - lineage rows whose id is absent from the masks are dropped, their children get parent 0;
      mask ids missing from the lineage become tracks without parent;
    - a parent link whose parent does not end before the child starts is dropped (parent 0),
      with a warning in the log.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(T, Y, X)`` or ``(Y, X)`` non-negative integer labels (<= 65535), label = track id.
    lineage : numpy.ndarray, optional
        ``(N, 4)`` ``[id, start, end, parent]``; only ids and parents are used. None: no
        parent links.

    Returns
    -------
    labels : numpy.ndarray
        ``(T, Y, X)`` uint16 (a new array; relabelled where gaps were split).
    lineage : numpy.ndarray
        ``(N, 4)`` int64 sorted by id, consistent with ``labels``.

    Raises
    ------
    ValueError
        Bad argument shapes/dtypes, a track with two lineage rows, or new ids beyond 65535.
    """
    labels = _as_label_movie(labels)
    relabel, result = _consistency_plan([_present_ids(frame) for frame in labels], lineage)
    out = labels.astype(np.uint16, copy=True)
    for t, (old, new) in relabel.items():
        out[t] = _relabel_frame(out[t], old, new)
    return out, result


def _relabel_frame(frame: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """A uint16 frame with ids ``old`` replaced by ``new`` (other values kept)."""
    lut = np.arange(int(frame.max()) + 1, dtype=np.uint16)
    lut[old] = new
    return lut[frame]


def _consistency_plan(
    per_frame: Sequence[np.ndarray], lineage: np.ndarray | None
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """What :func:`consistent_tracks` does, from the ids present in each frame only:
    ``{frame: (old ids, new ids)}`` to relabel (later pieces of split tracks) and the
    consistent lineage."""
    given = _as_lineage(lineage)
    if given.size and np.unique(given[:, 0]).size != len(given):
        raise ValueError("lineage: a track id is listed twice; expected unique ids")
    ids_all, ts_all = _presence_of(per_frame)
    relabel: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if ids_all.size == 0:
        return relabel, _empty_lineage()

    # contiguous runs of (id, t)
    new_run = np.ones(ids_all.size, dtype=bool)
    new_run[1:] = (ids_all[1:] != ids_all[:-1]) | (ts_all[1:] != ts_all[:-1] + 1)
    run_first = np.flatnonzero(new_run)
    run_last = np.r_[run_first[1:], ids_all.size] - 1
    run_old = ids_all[run_first]
    run_start, run_end = ts_all[run_first], ts_all[run_last]
    is_first_piece = np.r_[True, run_old[1:] != run_old[:-1]]

    run_new = run_old.copy()
    n_extra = int(np.count_nonzero(~is_first_piece))
    top = int(max(run_old.max(), given[:, 0].max() if given.size else 0))
    if n_extra:
        if top + n_extra > MAX_LABEL:
            raise ValueError(
                f"labels: splitting {n_extra} time gaps needs ids up to {top + n_extra}; CTC "
                f"masks are 16-bit (max {MAX_LABEL}); relabel the tracks compactly first"
            )
        run_new[~is_first_piece] = top + 1 + np.arange(n_extra)
        log.info("split %s time gaps into new tracks (ids %s..%s)", n_extra, top + 1, top + n_extra)
        # relabel later pieces frame by frame with a lookup table
        later = np.flatnonzero(~is_first_piece)
        for t in np.unique(np.concatenate([ts_all[run_first[r] : run_last[r] + 1] for r in later])):
            in_t = later[(run_start[later] <= t) & (run_end[later] >= t)]
            relabel[int(t)] = (run_old[in_t], run_new[in_t])

    parent = np.zeros_like(run_new)
    parent[~is_first_piece] = run_new[np.flatnonzero(~is_first_piece) - 1]
    # last piece of each original id: runs are sorted by id then time
    is_last_piece = np.r_[run_old[1:] != run_old[:-1], True]
    last_new = dict(
        zip(run_old[is_last_piece].tolist(), run_new[is_last_piece].tolist(), strict=True)
    )
    last_end = dict(
        zip(run_old[is_last_piece].tolist(), run_end[is_last_piece].tolist(), strict=True)
    )
    if given.size:
        given_parent = dict(zip(given[:, 0].tolist(), given[:, 3].tolist(), strict=True))
        missing = np.setdiff1d(given[:, 0], run_old)
        if missing.size:
            log.info(
                "dropped %s lineage tracks absent from the masks (e.g. %s)",
                missing.size,
                missing[0],
            )
        for r in np.flatnonzero(is_first_piece):
            p = given_parent.get(int(run_old[r]), 0)
            if p == 0:
                continue
            if p not in last_new:
                log.info(
                    "track %s: parent %s absent from the masks; parent set to 0", run_new[r], p
                )
            elif last_end[p] >= run_start[r]:
                log.warning(
                    "track %s starts at frame %s but its parent %s ends at frame %s; "
                    "parent link dropped",
                    run_new[r],
                    run_start[r],
                    p,
                    last_end[p],
                )
            else:
                parent[r] = last_new[p]
    result = np.stack([run_new, run_start, run_end, parent], axis=1).astype(np.int64)
    result = result[np.argsort(result[:, 0], kind="stable")]
    return relabel, result


# --------------------------------------------------------------------------------------------
# napari Tracks
# --------------------------------------------------------------------------------------------


def lineage_to_tracks(
    labels: np.ndarray, lineage: np.ndarray | None = None
) -> tuple[np.ndarray, dict[int, list[int]], dict[str, np.ndarray]]:
    """Convert a tracked label movie (+ lineage) to napari Tracks layer data.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(T, Y, X)`` integer labels, label = track id.
    lineage : numpy.ndarray, optional
        ``(N, 4)`` ``[id, start, end, parent]``; only parents are used (positions and frames
        come from ``labels``). None: no parent links.

    Returns
    -------
    data : numpy.ndarray
        ``(M, 4)`` float64 rows ``[track_id, t, y, x]`` (pixel centroid of the label in frame
        t), sorted by track id then t.
    graph : dict[int, list[int]]
        ``{child_id: [parent_id]}`` for parents that are present in ``labels``.
    properties : dict[str, numpy.ndarray]
        Per-row 1-D arrays: ``generation`` (int, number of ancestors in the graph),
        ``track_length`` (int, last - first frame + 1 of the row's track), ``parent`` (int,
        0 = none), ``root`` (int, id of the track's oldest ancestor) and ``area`` (int, pixels).
    """
    if not hasattr(labels, "shape") or not hasattr(labels, "ndim"):
        labels = np.asarray(labels)  # arrays and lazy arrays are read one frame at a time
    if labels.ndim == 2:
        labels = np.asarray(labels)[None]
    if labels.ndim != 3:
        raise ValueError(f"labels: shape {labels.shape}; expected (T, Y, X)")
    parts = []
    for t in range(labels.shape[0]):
        ids, centroids, areas = _label_centroids(np.asarray(labels[t]))
        if ids.size:
            parts.append(
                np.column_stack([ids, np.full(ids.size, t), centroids, areas]).astype(np.float64)
            )
    table = np.concatenate(parts) if parts else np.zeros((0, 5))
    table = table[np.lexsort((table[:, 1], table[:, 0]))]
    data, area = table[:, :4], table[:, 4].astype(np.int64)
    track_ids = data[:, 0].astype(np.int64)

    uniq, first, counts = np.unique(track_ids, return_index=True, return_counts=True)
    last = first + counts - 1
    t_first = data[first, 1].astype(np.int64)
    t_last = data[last, 1].astype(np.int64)

    given = _as_lineage(lineage)
    present = set(uniq.tolist())
    graph: dict[int, list[int]] = {}
    for tid, _s, _e, par in given.tolist():
        if par and tid in present and par in present:
            graph[int(tid)] = [int(par)]

    # generation and root by walking up the graph (loop over tracks, not pixels)
    generation: dict[int, int] = {}
    root: dict[int, int] = {}
    for tid in uniq.tolist():
        chain = [tid]
        while chain[-1] in graph and chain[-1] not in generation and len(chain) <= len(uniq):
            chain.append(graph[chain[-1]][0])
        top = chain[-1]
        g0 = generation.get(top, 0)
        r0 = root.get(top, top)
        for depth, node in enumerate(reversed(chain)):
            generation.setdefault(node, g0 + depth)
            root.setdefault(node, r0)

    idx = np.searchsorted(uniq, track_ids)
    properties = {
        "generation": np.array([generation[i] for i in uniq.tolist()], np.int64)[idx],
        "track_length": (t_last - t_first + 1)[idx],
        "parent": np.array([graph.get(i, [0])[0] for i in uniq.tolist()], np.int64)[idx],
        "root": np.array([root[i] for i in uniq.tolist()], np.int64)[idx],
        "area": area,
    }
    return data, graph, properties


def tracks_to_lineage(
    data: np.ndarray, graph: Mapping[int, int | Iterable[int]] | None = None
) -> np.ndarray:
    """Convert napari Tracks data + graph to a lineage.

    Parameters
    ----------
    data : numpy.ndarray
        ``(M, 4)`` (or ``(M, 5)`` for 3D) rows ``[track_id, t, ...]``; t must be integer-valued.
    graph : mapping, optional
        ``{child_id: parent_id or [parent_id]}``. A parent that is not a track in ``data`` is
        ignored (parent 0, logged).

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` int64 ``[id, first t, last t, parent]`` sorted by id. Time gaps inside a
        track are not split here (see :func:`consistent_tracks`).

    Raises
    ------
    ValueError
        Bad data shape, non-integer ids/times, or a track with more than one parent (merges
        cannot be written in the CTC format).
    """
    data = np.asarray(data, dtype=np.float64)
    if data.size == 0:
        return _empty_lineage()
    if data.ndim != 2 or data.shape[1] < 3:
        raise ValueError(f"data: shape {data.shape}; expected (M, 4) [track_id, t, y, x]")
    ids_f, ts_f = data[:, 0], data[:, 1]
    if not (np.all(ids_f == np.round(ids_f)) and np.all(ts_f == np.round(ts_f))):
        raise ValueError("data: track ids and times must be integer-valued")
    ids, ts = ids_f.astype(np.int64), ts_f.astype(np.int64)
    uniq, inverse = np.unique(ids, return_inverse=True)
    start = np.full(uniq.size, np.iinfo(np.int64).max)
    end = np.full(uniq.size, np.iinfo(np.int64).min)
    np.minimum.at(start, inverse, ts)
    np.maximum.at(end, inverse, ts)
    parent = np.zeros(uniq.size, np.int64)
    known = set(uniq.tolist())
    for child, parents in (graph or {}).items():
        plist = [int(parents)] if np.isscalar(parents) else [int(p) for p in parents]
        if len(plist) > 1:
            raise ValueError(
                f"graph: track {child} has {len(plist)} parents {plist}; CTC lineages allow one"
            )
        if not plist or int(child) not in known:
            continue
        if plist[0] not in known:
            log.info("graph: parent %s of track %s has no data; ignored", plist[0], child)
            continue
        parent[np.searchsorted(uniq, int(child))] = plist[0]
    return np.stack([uniq, start, end, parent], axis=1).astype(np.int64)
