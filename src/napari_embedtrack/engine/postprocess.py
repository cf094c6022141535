"""Clean-up rules between clustering, linking and the final lineage (issue #13).

Network outputs on a movie unlike the training data give small fragments that split off a
cell; the linker reads cell + fragment as a division and the cell's track ends there. On SIM+
02 this made 451 tracks for 107 true ones. The rules here, each measured on re-styled copies
of the training movies (``benchmarks/ab_postprocess.py``, table in docs/models.md):

- :func:`merge_fragments` (per frame, before linking): an instance smaller than
  ``fragment_size`` that touches another instance joins the neighbour it shares the longest
  border with. An isolated small instance is kept (it may be a small cell).
- :func:`repair_divisions` (whole lineage): a division is plausible only if both daughters are
  at least ``min_daughter_size`` at their first frame, the smaller at least
  ``min_daughter_ratio`` of the larger (two halves of a cell, not a piece split off it), and
  each lasts more than one frame (or divides again, or is born in the movie's last frame).
  Otherwise the larger daughter continues the parent's track (same id) and the smaller one
  becomes a track without parent.
- :func:`close_gaps`: a track that ends without children at t-1 and one that starts without
  parent at t+g (g = 1 .. ``max_gap``) within ``gap_distance`` pixels (centroids) are the same
  cell missed in frames t .. t+g-1: the second track takes the first one's id and each
  missing frame gets the first track's t-1 mask moved its share of the way (half-way for one
  frame; painted on background only). Shorter gaps are bridged first, then nearer tracks.
  With ``min_gap`` 0, g = 0 too: a track broken between two consecutive frames (a link the
  tracking offsets missed) is joined, nothing painted.
- :func:`drop_single_frame_tracks` (an option): tracks of one frame without parent or children
  are removed (labels and lineage), except in the movie's first and last frame.
- :func:`drop_small_tracks`: tracks without parent or children whose median area is below
  ``fraction`` of the movie's cell area (the area-weighted median, :func:`reference_area`)
  are removed (debris and pieces of cells on dim movies); a track that touches the frame's
  edge (a cell cut by the field of view) is judged by its largest area instead, against
  ``edge_fraction``.

All functions take and return ``(labels, lineage)``: ``labels`` (T, Y, X) uint32 with label =
track id, ``lineage`` (N, 4) int64 ``[id, start, end, parent]``; the input arrays are not
modified. Every track stays a contiguous range of frames, as the CTC format requires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator

import numpy as np
from scipy import ndimage

from .progress import Progress

log = logging.getLogger(__name__)

__all__ = [
    "StreamFinisher",
    "close_gaps",
    "drop_single_frame_tracks",
    "drop_small_tracks",
    "finish_tracks",
    "merge_fragments",
    "reference_area",
    "repair_divisions",
]


def _touching_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of different instances sharing a 4-connected border: (a, b, border length),
    both orders listed."""
    pairs = []
    for a, b in (
        (labels[:-1, :], labels[1:, :]),
        (labels[:, :-1], labels[:, 1:]),
    ):
        m = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([a[m], b[m]], 1))
    p = np.concatenate(pairs).astype(np.int64)
    if p.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    p = np.concatenate([p, p[:, ::-1]])
    uniq, counts = np.unique(p, axis=0, return_counts=True)
    return uniq[:, 0], uniq[:, 1], counts


def merge_fragments(labels: np.ndarray, fragment_size: int) -> np.ndarray:
    """Join instances smaller than ``fragment_size`` to the neighbour they touch most.

    Args:
        labels: (Y, X) int instance labels of one frame.
        fragment_size: instances with fewer pixels that touch another instance are merged
            into it (0 turns the rule off).

    Returns:
        (Y, X) labels of the same dtype (merged pieces carry the neighbour's label).
    """
    labels = np.asarray(labels)
    if fragment_size <= 0 or not labels.any():
        return labels
    sizes = np.bincount(labels.ravel().astype(np.int64))
    a, b, border = _touching_pairs(labels)
    if a.size == 0:
        return labels
    small = sizes[a] < fragment_size
    a, b, border = a[small], b[small], border[small]
    if a.size == 0:
        return labels
    # per fragment: a neighbour that is no fragment itself if there is one, else another
    # fragment; then the longest border, then the larger neighbour
    b_small = sizes[b] < fragment_size
    order = np.lexsort((-sizes[b], -border, b_small, a))
    a, b = a[order], b[order]
    first = np.ones(a.size, dtype=bool)
    first[1:] = a[1:] != a[:-1]
    # join each fragment with its choice (union-find); a group takes the label of its
    # largest member, so fragments that choose each other still become one instance
    root = np.arange(sizes.size, dtype=np.int64)

    def find(k: int) -> int:
        while root[k] != k:
            root[k] = root[root[k]]
            k = int(root[k])
        return k

    for frag, dest in zip(a[first].tolist(), b[first].tolist(), strict=True):
        ra, rb = find(frag), find(dest)
        if ra != rb:
            big, small_root = (ra, rb) if sizes[ra] >= sizes[rb] else (rb, ra)
            root[small_root] = big
    lut = np.array([find(k) for k in range(sizes.size)], dtype=np.int64)
    return lut[labels].astype(labels.dtype)


def _sizes_in(frame: np.ndarray, ids: list[int]) -> dict[int, int]:
    """Area of every track of ``ids`` in one frame (0 if absent)."""
    fg = frame[frame > 0].astype(np.int64)
    counts = np.bincount(fg, minlength=max(ids) + 1) if fg.size else np.zeros(max(ids) + 1)
    return {tid: int(counts[tid]) if tid < counts.size else 0 for tid in ids}


def _first_sizes(labels: np.ndarray, lineage: np.ndarray) -> dict[int, int]:
    """Area of every track in its first frame."""
    out: dict[int, int] = {}
    for t, ids in _starts(lineage).items():
        out.update(_sizes_in(labels[t], ids))
    return out


def _starts(lineage: np.ndarray) -> dict[int, list[int]]:
    """Track ids by first frame."""
    starts: dict[int, list[int]] = {}
    for tid, start, _end, _parent in np.asarray(lineage).tolist():
        starts.setdefault(start, []).append(tid)
    return starts


def _apply(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Relabel track ids (``mapping`` old -> new; 0 removes) in a copy of the movie."""
    if not mapping:
        return labels.copy()
    top = int(max(int(labels.max(initial=0)), *mapping.keys()))
    lut = np.arange(top + 1, dtype=labels.dtype)
    for old, new in mapping.items():
        lut[old] = new
    return lut[labels]


def seediness_u8(seediness: np.ndarray) -> np.ndarray:
    """Seediness in [0, 1] as uint8 (x255; NaN as 0): what a run keeps of each frame for
    :func:`dim_rim`, which compares seediness only with fractions of itself."""
    s = np.nan_to_num(np.asarray(seediness, dtype=np.float32), nan=0.0)
    return np.clip(np.rint(s * 255.0), 0, 255).astype(np.uint8)


#: how far :func:`dim_rim` lets a mask grow, as a fraction of the cell's radius
RIM_REACH = 0.25


def dim_rim(labels: np.ndarray, seediness: np.ndarray, fraction: float) -> np.ndarray:
    """The pixels each instance of ``labels`` takes with
    :attr:`.cluster.ClusterParams.grow_dim`.

    An instance whose median seediness is ``m`` takes the unlabelled pixels with seediness
    above ``fraction * m`` that it reaches through such pixels (a watershed on the seediness
    started from the instances, as :func:`.cluster.grow`, so a pixel between two cells joins the one
    it is brighter towards), up to :data:`RIM_REACH` of its radius (``sqrt(area / pi)``)
    away. Dim cells (low ``m``) take the rim the seediness threshold cut off; bright cells
    take pixels only where the seediness is nearly theirs; where the seediness does not
    fall off at all (an untrained model, haze) a mask grows by a rim, not over the frame.

    Returns:
        (Y, X) labels of ``labels``' dtype: each taken pixel holds its instance's id; 0 on
        the instances and everywhere else. No instance is created or removed.
    """
    labels = np.asarray(labels)
    rim = np.zeros_like(labels)
    top = int(labels.max(initial=0))
    if top == 0 or fraction <= 0:
        return rim
    seed = np.nan_to_num(np.asarray(seediness, dtype=np.float64), nan=0.0)
    inside = labels > 0
    ids = np.unique(labels[inside])  # track ids are sparse: the medians of those present
    limit = np.full(top + 1, np.inf)
    limit[ids] = fraction * np.asarray(ndimage.median(seed[inside], labels[inside], ids))
    # which instance would reach each pixel above the lowest limit, then that instance's
    # limit; the floods start from the cells' pixels next to such pixels (the same result
    # as from whole cells, which flood only through them, at a fraction of the cost)
    cand = ~inside & (seed > limit[ids].min())
    if not cand.any():
        return rim
    claim = _flood(labels, inside, seed, cand)
    radius = np.sqrt(np.bincount(labels.ravel(), minlength=top + 1) / np.pi)
    near = ndimage.distance_transform_edt(~inside) <= RIM_REACH * radius[claim]
    take = cand & (seed > limit[claim]) & near
    grown = _flood(labels, inside, seed, take)
    rim[take] = grown[take]
    return rim


def _flood(labels, inside, seed, free) -> np.ndarray:
    """Watershed on ``-seed`` from the cells of ``labels`` into the ``free`` pixels; only the
    cells' pixels next to a free pixel (4-neighbours, the watershed's connectivity) start
    it."""
    from skimage.segmentation import watershed

    edge = inside & ndimage.binary_dilation(free)
    markers = np.where(edge, labels, 0)
    return watershed(-seed, markers=markers, mask=edge | free)


def add_dim_rims(frame: np.ndarray, seediness: np.ndarray | None, fraction: float) -> np.ndarray:
    """``frame`` (instance or track ids) with its :func:`dim_rim` added (a new array), or
    ``frame`` itself when ``seediness`` is None or ``fraction`` is 0."""
    if seediness is None or fraction <= 0:
        return frame
    rim = dim_rim(frame, seediness, fraction)
    return np.where(rim > 0, rim, frame).astype(frame.dtype, copy=False)


def _table(lineage: np.ndarray) -> dict[int, list[int]]:
    return {int(r[0]): [int(r[1]), int(r[2]), int(r[3])] for r in np.asarray(lineage)}


def _as_lineage(table: dict[int, list[int]]) -> np.ndarray:
    if not table:
        return np.zeros((0, 4), dtype=np.int64)
    return np.asarray([[k, *v] for k, v in sorted(table.items())], dtype=np.int64)


def _continue_track(table: dict[int, list[int]], keep: int, merged: int, parents: set[int]) -> None:
    """Track ``merged`` continues ``keep`` (same id): ``keep`` ends where ``merged`` did,
    ``merged``'s children become ``keep``'s, and ``merged`` leaves the table. ``parents``
    (ids with children) is updated."""
    table[keep][1] = table[merged][1]
    for v in table.values():
        if v[2] == merged:
            v[2] = keep
    if merged in parents:
        parents.add(keep)
    del table[merged]


def _repair_plan(
    table: dict[int, list[int]],
    size0: dict[int, int],
    last: int,
    min_daughter_size: int,
    min_daughter_ratio: float = 0.0,
) -> dict[int, int]:
    """The division check on a lineage table (changed in place): returns the relabelling
    (daughter -> parent) it needs. ``size0``: area of (at least) every track with a parent in
    its first frame; ``last``: the movie's last frame index."""
    has_children = {v[2] for v in table.values() if v[2]}
    mapping: dict[int, int] = {}

    def plausible(d: int) -> bool:
        # a daughter born in the last frame cannot last longer: only its size counts
        s, e, _ = table[d]
        lasting = e > s or d in has_children or e == last
        return size0.get(d, 0) >= min_daughter_size and lasting

    for t in sorted({v[0] for v in table.values()}):
        kids_of: dict[int, list[int]] = {}
        for k, (s, _e, p) in table.items():
            if s == t and p:
                kids_of.setdefault(p, []).append(k)
        for parent, kids in sorted(kids_of.items()):
            areas = [size0.get(d, 0) for d in kids]
            balanced = min(areas) >= min_daughter_ratio * max(areas)
            if len(kids) < 2 or (balanced and all(plausible(d) for d in kids)):
                continue
            big = max(kids, key=lambda d: (size0.get(d, 0), -d))
            for d in kids:
                if d != big:
                    table[d][2] = 0
            _continue_track(table, parent, big, has_children)
            mapping[big] = parent
    if mapping:
        log.info("repaired %d implausible division(s)", len(mapping))
    return mapping


def repair_divisions(
    labels: np.ndarray,
    lineage: np.ndarray,
    min_daughter_size: int = 0,
    min_daughter_ratio: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Undo implausible divisions (see the module docstring).

    Divisions are visited in time order, so a daughter that continues its parent passes its
    own later divisions on to the parent's id before they are checked.

    Args:
        labels: (T, Y, X) tracked labels (label = track id).
        lineage: (N, 4) ``[id, start, end, parent]``.
        min_daughter_size: smallest plausible daughter area in pixels at its first frame.
        min_daughter_ratio: smallest plausible area of the smaller daughter as a fraction of
            the larger one's, both at their first frame (a piece split off a cell, not two
            halves; 0: off).

    Returns:
        (labels, lineage) with the larger daughter of every implausible division continuing
        its parent's track.
    """
    labels = np.asarray(labels)
    lineage = np.asarray(lineage)
    table = _table(lineage)
    size0 = _first_sizes(labels, lineage)
    mapping = _repair_plan(table, size0, labels.shape[0] - 1, min_daughter_size, min_daughter_ratio)
    return _apply(labels, mapping), _as_lineage(table)


def _drop_lonely(
    table: dict[int, list[int]], condition: Callable[[int, int, int], bool], what: str
) -> list[int]:
    """Remove the tracks without parent or children for which ``condition(id, start, end)``
    holds from a lineage table (in place); returns their ids."""
    parents = {v[2] for v in table.values() if v[2]}
    drop = [
        k for k, (s, e, p) in table.items() if p == 0 and k not in parents and condition(k, s, e)
    ]
    for k in drop:
        del table[k]
    if drop:
        log.info("dropped %d %s without parent or children", len(drop), what)
    return drop


def _drop_plan(table: dict[int, list[int]], last: int) -> list[int]:
    """Remove one-frame tracks without parent or children from a lineage table (in place);
    returns their ids (see :func:`drop_single_frame_tracks`)."""
    return _drop_lonely(table, lambda _k, s, e: s == e and 0 < s < last, "one-frame track(s)")


def drop_single_frame_tracks(
    labels: np.ndarray, lineage: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Remove tracks that last one frame and have neither parent nor children.

    Tracks in the movie's first or last frame are kept: a cell there may simply be seen for
    one frame before the movie ends (or after it starts).
    """
    labels = np.asarray(labels)
    table = _table(lineage)
    drop = _drop_plan(table, labels.shape[0] - 1)
    return _apply(labels, dict.fromkeys(drop, 0)), _as_lineage(table)


def _centroids(frame: np.ndarray, ids: list[int]) -> dict[int, np.ndarray]:
    if not ids:
        return {}
    cms = ndimage.center_of_mass(np.ones(frame.shape), frame, ids)
    return {i: np.asarray(c) for i, c in zip(ids, cms, strict=True)}


def _gap_step(
    t: int,
    before: np.ndarray,
    ahead: list[np.ndarray],
    table: dict[int, list[int]],
    parents: set[int],
    gap_distance: float,
    min_gap: int = 1,
) -> list[tuple[int, int, int, int]]:
    """One frame of :func:`close_gaps`: join tracks ending at ``t - 1`` (frame ``before``) to
    tracks starting at ``t + g`` for ``g = min_gap .. len(ahead) - 1`` (``ahead[j]`` is frame
    ``t + j``; ``g = 0``: a track broken without a missing frame); shorter gaps first, then
    nearer centroids. Paints the moved masks into the missing frames (changed in place) and
    updates ``table`` / ``parents``. Returns ``(a, b, start_b, end_b)`` per join: track ``b``
    (frames ``start_b .. end_b``) is to be relabelled ``a``."""
    ending = [k for k, (s, e, p) in table.items() if e == t - 1 and k not in parents]
    if not ending:
        return []
    cand = []
    ca = None
    for g in range(min_gap, len(ahead)):
        starting = [k for k, (s, e, p) in table.items() if s == t + g and p == 0]
        if not starting:
            continue
        ca = ca if ca is not None else _centroids(before, ending)
        cb = _centroids(ahead[g], starting)
        for a in ending:
            for b in starting:
                dist = float(np.linalg.norm(ca[a] - cb[b]))
                if dist <= gap_distance:
                    cand.append((g, dist, a, b, cb[b]))
    cand.sort(key=lambda c: c[:4])
    used_a, used_b = set(), set()
    joins = []
    for g, _dist, a, b, cb_b in cand:
        if a in used_a or b in used_b:
            continue
        used_a.add(a)
        used_b.add(b)
        ys0, xs0 = np.nonzero(before == a)
        for j in range(g):  # frame t + j: the mask moved (j + 1) / (g + 1) of the way
            frame = ahead[j]
            shift = np.rint((cb_b - ca[a]) * (j + 1) / (g + 1)).astype(np.int64)
            ys, xs = ys0 + shift[0], xs0 + shift[1]
            ok = (ys >= 0) & (ys < frame.shape[0]) & (xs >= 0) & (xs < frame.shape[1])
            ys, xs = ys[ok], xs[ok]
            free = frame[ys, xs] == 0
            frame[ys[free], xs[free]] = a
        joins.append((a, b, t + g, table[b][1]))
        _continue_track(table, a, b, parents)
    return joins


def close_gaps(
    labels: np.ndarray,
    lineage: np.ndarray,
    gap_distance: float,
    max_gap: int = 1,
    min_gap: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Join a track lost for ``min_gap`` to ``max_gap`` frames to the track that appears where
    it was (see the module docstring); ``gap_distance`` (pixels) bounds the centroid distance,
    0 turns it off. ``min_gap`` 0 also joins a track that ends without children to one that
    starts without parent in the next frame (a link the linker missed)."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    if gap_distance <= 0 or max_gap < 1 or n < 3 - (min_gap == 0):
        return labels.copy(), np.asarray(lineage).copy()
    table = _table(lineage)
    parents = {v[2] for v in table.values() if v[2]}
    out = labels.copy()
    n_closed = 0
    for t in range(1, n - 1 + (min_gap == 0)):  # with min_gap 0 up to the last frame
        ahead = [out[t + j] for j in range(min(max_gap, n - 1 - t) + 1)]  # views
        joins = _gap_step(t, out[t - 1], ahead, table, parents, gap_distance, min_gap)
        for a, b, start_b, end_b in joins:
            later = out[start_b : end_b + 1]  # b's own frames only (a view)
            later[later == b] = a
        n_closed += len(joins)
    if n_closed:
        log.info("closed %d gap(s) of up to %d frame(s)", n_closed, max_gap)
    return out, _as_lineage(table)


def _border_ids(frame: np.ndarray) -> set[int]:
    """Tracks with a pixel on the frame's edge (a cell cut by the field of view)."""
    edge = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
    return set(np.unique(edge[edge > 0]).tolist())


class _TrackSizes:
    """Per-track areas (one per frame) and whether the track ever touches the frame's edge,
    gathered one frame at a time."""

    def __init__(self) -> None:
        self.areas: dict[int, list[int]] = {}
        self.border: set[int] = set()

    def add(self, frame: np.ndarray) -> None:
        fg = frame[frame > 0].astype(np.int64)
        if not fg.size:
            return
        counts = np.bincount(fg)
        for k in np.flatnonzero(counts).tolist():
            self.areas.setdefault(k, []).append(int(counts[k]))
        self.border |= _border_ids(frame)


def reference_area(areas, reference: str = "pixels") -> float:
    """The movie's typical cell area from all its cell areas (one per cell and frame):
    ``"count"`` the median area of a cell, ``"pixels"`` the area-weighted median (half of all
    foreground pixels lie in cells at most this large). Debris and pieces of cells are many
    but hold few pixels, so they pull the first down and hardly move the second."""
    a = np.sort(np.asarray(areas, dtype=np.float64))
    if not a.size:
        return 0.0
    if reference == "count":
        return float(np.median(a))
    if reference != "pixels":
        raise ValueError(f"reference must be 'count' or 'pixels', got {reference!r}")
    cum = np.cumsum(a)
    return float(a[np.searchsorted(cum, 0.5 * cum[-1])])


def _small_plan(
    table: dict[int, list[int]],
    sizes: _TrackSizes,
    fraction: float,
    reference: str,
    edge_fraction: float,
) -> list[int]:
    """Remove tracks without parent or children whose median area is below ``fraction`` (on
    the frame's edge: whose largest area is below ``edge_fraction``) of the movie's typical
    cell area (:func:`reference_area` of all cells in all frames) from a lineage table (in
    place); returns their ids (see :func:`drop_small_tracks`)."""
    every = [a for k, v in sizes.areas.items() if k in table for a in v]
    if not every:
        return []
    typical = reference_area(every, reference)
    min_track_area, min_edge_area = fraction * typical, edge_fraction * typical

    def small(k: int, _s: int, _e: int) -> bool:
        areas = sizes.areas.get(k, [0])
        if k in sizes.border:
            return max(areas) < min_edge_area
        return np.median(areas) < min_track_area

    return _drop_lonely(table, small, "small track(s)")


def drop_small_tracks(
    labels: np.ndarray,
    lineage: np.ndarray,
    fraction: float,
    reference: str = "pixels",
    edge_fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Remove tracks that have neither parent nor children and whose median area over their
    frames is below ``fraction`` of the movie's typical cell area (over all cells in all
    frames, so that a movie of small cells keeps them; ``reference`` as in
    :func:`reference_area`): debris and pieces of cells, not cells (a real cell that small is
    rarer than such pieces on the proxies, docs/models.md). The field of view cuts cells on
    the frame's edge: a track that touches it in any frame is judged by its largest area,
    against ``edge_fraction`` of the typical area (0: such tracks are always kept)."""
    labels = np.asarray(labels)
    table = _table(lineage)
    sizes = _TrackSizes()
    for frame in labels:
        sizes.add(frame)
    drop = _small_plan(table, sizes, fraction, reference, edge_fraction)
    return _apply(labels, dict.fromkeys(drop, 0)), _as_lineage(table)


def finish_tracks(
    labels: np.ndarray, lineage: np.ndarray, params, seediness: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The whole-movie rules of ``params`` (a :class:`.cluster.ClusterParams`), in order:
    division check, gap closing, one-frame track removal, small track removal; then, with
    ``params.grow_dim`` and ``seediness`` (T, Y, X) given, each frame's :func:`dim_rim`."""
    labels, lineage = np.asarray(labels), np.asarray(lineage)
    if labels.shape[0] == 0:
        return labels, lineage
    if params.min_daughter_size >= 0:
        labels, lineage = repair_divisions(
            labels, lineage, params.min_daughter_size, params.min_daughter_ratio
        )
    if params.gap_distance > 0:
        labels, lineage = close_gaps(
            labels, lineage, params.gap_distance, params.max_gap, params.min_gap
        )
    if params.drop_single:
        labels, lineage = drop_single_frame_tracks(labels, lineage)
    if params.small_track_fraction > 0:
        labels, lineage = drop_small_tracks(
            labels,
            lineage,
            params.small_track_fraction,
            params.small_track_reference,
            params.small_track_edge_fraction,
        )
    if seediness is not None and params.grow_dim:
        labels = np.stack(
            [add_dim_rims(f, s, params.grow_dim) for f, s in zip(labels, seediness, strict=True)]
        )
    return labels, lineage


class StreamFinisher:
    """:func:`finish_tracks` for a movie read one frame at a time: the same result (masks and
    lineage), with a few frames in memory instead of the whole movie.

    The rules look one or two frames ahead and behind, so the work is split into passes over
    the tracked frames as :meth:`~.link.Linker.add` returned them (``read_frame(t)``, e.g.
    from a run's checkpoint): :meth:`plan` reads the frames where daughters start (their
    areas decide the division check), then every frame once for the gap closing (a window of
    three frames), and fixes the final lineage; :meth:`frames` then yields the finished
    frames in order (the gap closing is replayed on a window of three frames, the division
    and one-frame-track relabelling applied frame by frame). :meth:`frames` may be iterated
    several times (each time re-reading the frames).

    Args:
        lineage: (N, 4) the linker's lineage ``[id, start, end, parent]``.
        params: a :class:`.cluster.ClusterParams` (the clean-up settings).
        n_frames: frames tracked (``read_frame`` takes 0 .. n_frames - 1).
        read_frame: frame ``t`` as tracked (uint32 track ids); must not be changed by the
            caller while the finisher works (a copy is made before any change).
        read_seediness: frame ``t``'s seediness (:func:`seediness_u8`) or None; with
            ``params.grow_dim``, each finished frame gets its :func:`dim_rim`.
    """

    def __init__(
        self,
        lineage: np.ndarray,
        params,
        n_frames: int,
        read_frame: Callable[[int], np.ndarray],
        read_seediness: Callable[[int], np.ndarray | None] | None = None,
    ) -> None:
        self.params = params
        self.n_frames = int(n_frames)
        self._read = read_frame
        self._read_seediness = read_seediness
        self._given = np.asarray(lineage)
        self._repair: dict[int, int] = {}
        self._drop: list[int] = []
        self._after_repair: dict[int, list[int]] | None = None
        self.lineage: np.ndarray | None = None

    @property
    def _gaps(self) -> bool:
        return self.params.gap_distance > 0 and self.n_frames >= 3 - (self.params.min_gap == 0)

    def plan(self) -> Generator[Progress, None, np.ndarray]:
        """Decide every rule (reads frames; yields Progress per frame read); returns the final
        lineage (also in :attr:`lineage`)."""
        n, params = self.n_frames, self.params
        table = _table(self._given)
        if n == 0:
            self.lineage = self._given
            self._after_repair = table
            return self.lineage
        if params.min_daughter_size >= 0:
            starts = _starts(self._given)
            with_parent = sorted({v[0] for v in table.values() if v[2]})
            size0: dict[int, int] = {}
            for i, t in enumerate(with_parent):
                size0.update(_sizes_in(np.asarray(self._read(t)), starts[t]))
                yield Progress(i + 1, len(with_parent), "clean-up: divisions", {"frame": t})
            self._repair = _repair_plan(
                table, size0, n - 1, params.min_daughter_size, params.min_daughter_ratio
            )
        self._after_repair = {k: list(v) for k, v in table.items()}
        small = params.small_track_fraction > 0
        sizes = _TrackSizes()
        if self._gaps or small:
            source = self._gap_frames(table) if self._gaps else map(self._repaired, range(n))
            what = "clean-up: gaps" if self._gaps else "clean-up: track sizes"
            for t, frame in enumerate(source):
                if small:
                    sizes.add(frame)
                yield Progress(t + 1, n, what, {"frame": t})
        if params.drop_single:
            self._drop = _drop_plan(table, n - 1)
        if small:
            self._drop += _small_plan(
                table,
                sizes,
                params.small_track_fraction,
                params.small_track_reference,
                params.small_track_edge_fraction,
            )
        self.lineage = _as_lineage(table)
        return self.lineage

    def _repaired(self, t: int) -> np.ndarray:
        frame = np.asarray(self._read(t))
        if self.params.min_daughter_size >= 0:
            return _apply(frame, self._repair)
        return frame.copy() if self._gaps else frame

    def _gap_frames(self, table: dict[int, list[int]]) -> Iterator[np.ndarray]:
        """:func:`close_gaps` over the repaired frames, ``table`` changed in place; yields each
        frame once no later step changes it (step ``t`` reads frames ``t - 1 .. t + max_gap``,
        paints frames from ``t`` on, and leaves frame ``t - 1`` final)."""
        n, distance = self.n_frames, self.params.gap_distance
        k_max = self.params.max_gap  # >= 1 (ClusterParams checks it)
        parents = {v[2] for v in table.values() if v[2]}
        later: dict[int, int] = {}  # b -> a for the frames not read yet
        window: dict[int, np.ndarray] = {}
        n_closed = 0

        def step(t: int) -> int:
            ahead = [window[t + j] for j in range(min(k_max, n - 1 - t) + 1)]
            joins = _gap_step(
                t, window[t - 1], ahead, table, parents, distance, self.params.min_gap
            )
            for a, b, start_b, _end in joins:
                for u in range(start_b, max(window) + 1):
                    f = window[u]
                    f[f == b] = a
                later[b] = a
            return len(joins)

        done = 0  # frames yielded
        for t_in in range(n):
            frame = self._repaired(t_in)
            window[t_in] = _apply(frame, later) if later else frame
            t = t_in - k_max  # the step whose frames are all read now
            if 1 <= t <= n - 2:
                n_closed += step(t)
            while done <= t - 1:
                yield window.pop(done)
                done += 1
        for t in range(max(1, n - k_max), n - 1 + (self.params.min_gap == 0)):
            n_closed += step(t)
        if n_closed:
            log.info("closed %d gap(s) of up to %d frame(s)", n_closed, k_max)
        while done < n:
            yield window.pop(done)
            done += 1

    def frames(self) -> Iterator[np.ndarray]:
        """The finished frames 0 .. n_frames - 1 (uint32, label = track id), after :meth:`plan`."""
        if self._after_repair is None:
            raise RuntimeError("StreamFinisher.frames() before plan()")
        if self._gaps:
            table = {k: list(v) for k, v in self._after_repair.items()}
            source = self._gap_frames(table)
        else:
            source = (self._repaired(t) for t in range(self.n_frames))
        drop = dict.fromkeys(self._drop, 0)
        for t, frame in enumerate(source):
            final = _apply(frame, drop) if drop else frame
            if self._read_seediness is not None and self.params.grow_dim:
                final = add_dim_rims(final, self._read_seediness(t), self.params.grow_dim)
            yield final
