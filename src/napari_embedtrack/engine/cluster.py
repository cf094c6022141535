"""Pixel clustering: seediness, bandwidths and offsets of one frame -> instance labels.

Implements section 3.3 ("Pixel Clustering") of Löffler & Mikut, EmbedTrack (2022), in pixel
units (see ``docs/architecture.md``). For one frame:

1. ``bw_smooth``: 3x3 mean filter (zero bias, edge pixels replicated) of each bandwidth channel.
2. Foreground: pixels with ``seediness > seed_threshold``. Only foreground pixels take part.
3. Shifted positions ``e_i = p_i + offset_i`` (pixels). The rounded positions that fall inside
   the frame are accumulated into a histogram; every pixel ``j`` whose 3x3 neighbourhood of
   the histogram holds more than ``min_count`` shifted pixels, and which is itself foreground,
   is a candidate centre. Its centre is its own shifted position ``e_j``.
4. Candidates are visited in order of decreasing seediness (ties: larger 3x3 count first, then
   raster order). A candidate whose pixel already belongs to an instance is skipped (this is
   the paper's "candidates inside an accepted mask are removed").
5. For a visited candidate ``j`` the Gaussian score of every foreground pixel ``i`` is::

       d_ji = exp(-((e_iy - e_jy) * g)**2 / s_y - ((e_ix - e_jx) * g)**2 / s_x)
       s = exp(-w_s * bw_smooth[:, j]),  g = grid_spacing

   Only pixels whose shifted position lies in a box around ``e_j`` are evaluated (found by
   bucketing the pixels by rounded shifted position). The box's half-size is ``window`` times
   the distance at which the score falls to ``score_threshold``, so with ``window >= 1`` the
   result equals a full-frame evaluation.
6. Proposed mask ``M = {i : d_ji > score_threshold}``. Every pixel keeps the best score it has
   received so far (0 if unassigned). The pixels the new instance would get are
   ``F = {i in M : d_ji > best_i}`` (unassigned pixels, plus assigned pixels that score higher
   for the new centre). The instance is accepted iff ``|F| >= min_size`` and fewer than half of
   ``F`` was already assigned to another instance; then the pixels of ``F`` move to it and
   their best score is updated. Otherwise nothing changes and the next candidate is visited.
   With ``acceptance="proposal"`` (the default since issue #13, as in the public EmbedTrack
   code) the "fewer than half already assigned" test counts over the whole proposal ``M``
   instead of ``F``: a centre whose kernel mostly covers an accepted cell is rejected even if
   a small rim of unassigned pixels would move to it. On re-styled training movies this cut
   the fragments that the linker read as divisions (docs/models.md, A/B table).
7. Instances that end up with fewer than ``min_size`` pixels (after losing pixels to later
   instances) are removed; the rest are numbered 1..K in order of creation.
8. With ``fragment_size > 0``, instances smaller than it that touch another instance join
   the neighbour they share the longest border with (:func:`.postprocess.merge_fragments`).
9. With ``0 < grow_threshold < seed_threshold``, unlabelled pixels whose seediness exceeds
   ``grow_threshold`` join the instance they are connected to through such pixels, by a
   watershed on the seediness started from the instances (``skimage.segmentation.watershed``):
   masks reach into a cell's dim rim that the seediness threshold cut off, without new
   instances (a region of such pixels that touches no instance stays background).
10. Not in this function: with ``grow_dim > 0`` the pipeline keeps each frame's seediness
   (:func:`.postprocess.seediness_u8`) and adds :func:`.postprocess.dim_rim` to the finished
   frames, after the track clean-up (:class:`.postprocess.StreamFinisher`,
   :func:`.postprocess.finish_tracks`).

Consequences: a cell of at most ``min_count`` pixels can never produce a candidate; a cell
whose pixels all point to a centre rounding outside the frame produces none either; two
centres closer than the kernel radius (the ``score_threshold`` distance) merge. NaN offsets
count as 0, NaN seediness as background. Cost: one pass over the candidates in Python; each
visit that is not skipped evaluates only the pixels in its box (about 0.2 s for a 1024x1024
frame with 300 cells and ideal outputs, 0.7 s with noisy ones; ``benchmarks/bench_cluster.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .postprocess import merge_fragments

logger = logging.getLogger(__name__)


@dataclass
class ClusterParams:
    """Parameters of the clustering step.

    Attributes
    ----------
    seed_threshold : float
        Pixels with seediness above this value are foreground and take part in clustering.
    score_threshold : float
        A pixel joins a centre's instance if its Gaussian score for that centre exceeds this
        value (0 < value < 1; the paper uses 0.5).
    min_count : int
        A pixel is a candidate centre if more than this many shifted pixels land in its 3x3
        neighbourhood (the paper uses 5).
    min_size : int
        Smallest instance kept, in pixels (the model card provides it: half the 1st
        percentile of training mask sizes).
    grid_spacing : float
        Size of one pixel on the network's normalised coordinate grid (from the model card,
        e.g. 1/255 for 256-pixel training crops).
    w_s : float
        Bandwidth scale: the kernel variance is ``exp(-w_s * bandwidth)`` (10, as in training).
    window : float
        Half-size of the search box around a candidate centre, in kernel radii (the distance at
        which the score drops to score_threshold). 1 or more is exact; more only costs time.
    acceptance : {"proposal", "gain"}
        Where the "fewer than half already assigned" test counts (step 6 of the module doc):
        over the whole proposal (``"proposal"``, the public EmbedTrack code) or over the pixels
        that would move (``"gain"``, this project's rule before issue #13).
    fragment_size : int
        Instances smaller than this that touch another instance are merged into it (0: off).
    min_daughter_size : int
        Linking: a division whose daughter is smaller than this at its first frame, or lasts a
        single frame, is undone (the larger daughter continues the track); 0 checks only
        the one-frame rule, -1 (the default) turns the check off. See :mod:`.postprocess`.
    min_daughter_ratio : float
        Linking, with the division check on: a division whose smaller daughter is below this
        fraction of the larger one's area (both at their first frame) is undone too (0: off).
    gap_distance : float
        Linking: a track lost for up to ``max_gap`` frames is joined to a track starting
        within this many pixels after the gap (0: off).
    max_gap : int
        Linking: the longest gap (missing frames) that ``gap_distance`` bridges.
    min_gap : int
        Linking: the shortest gap bridged: 1, or 0 to also join a track that ends without
        children to a track that starts without parent in the next frame, within
        ``gap_distance`` (a link the tracking offsets missed).
    drop_single : bool
        Linking: remove one-frame tracks without parent or children.
    small_track_fraction : float
        Linking: remove tracks without parent or children whose median area is below this
        fraction of the movie's cell area (over all cells in all frames; see
        ``small_track_reference``), except on the frame's edge (see
        ``small_track_edge_fraction``) (0: off).
    small_track_reference : str
        The movie's cell area that ``small_track_fraction`` is a fraction of: ``"count"``
        the median area of a cell, ``"pixels"`` the area-weighted median (robust to many
        small pieces; :func:`.postprocess.reference_area`).
    small_track_edge_fraction : float
        Tracks that touch the frame's edge (cells cut by the field of view) are judged by
        their largest area instead of their median, against this fraction of the movie's
        cell area (0: always kept).
    grow_threshold : float
        Instances grow into connected unlabelled pixels with seediness above this value
        (step 9 of the module doc; 0: off; must be below ``seed_threshold``).
    grow_dim : float
        After the track clean-up, each cell takes the connected unlabelled pixels whose
        seediness exceeds this fraction of its own median seediness, within a quarter of its
        radius (:func:`.postprocess.dim_rim`): the masks of dim cells, whose seediness fades
        before their edge, reach it; bright cells (median seediness above
        ``seed_threshold / grow_dim``) take only pixels above ``seed_threshold`` (0: off).
        The rims are added to the finished frames, after the clean-up rules (which judge
        tracks by their clustered masks); a piece of a cell that the clean-up removed is
        then taken back by the cell.
    """

    seed_threshold: float = 0.5
    score_threshold: float = 0.5
    min_count: int = 5
    min_size: int = 10
    grid_spacing: float = 1.0 / 255.0
    w_s: float = 10.0
    window: float = 1.0
    acceptance: str = "proposal"
    fragment_size: int = 0
    min_daughter_size: int = -1
    min_daughter_ratio: float = 0.0
    gap_distance: float = 0.0
    max_gap: int = 1
    min_gap: int = 1
    drop_single: bool = False
    small_track_fraction: float = 0.0
    small_track_reference: str = "pixels"
    small_track_edge_fraction: float = 0.0
    grow_threshold: float = 0.0
    grow_dim: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if self.grid_spacing <= 0:
            raise ValueError(f"grid_spacing must be > 0, got {self.grid_spacing}")
        if self.window <= 0:
            raise ValueError(f"window must be > 0, got {self.window}")
        if self.acceptance not in ("proposal", "gain"):
            raise ValueError(f"acceptance must be 'proposal' or 'gain', got {self.acceptance!r}")
        if self.fragment_size < 0 or self.gap_distance < 0 or self.min_daughter_size < -1:
            raise ValueError(
                "fragment_size and gap_distance must be >= 0 and min_daughter_size >= -1, got "
                f"{self.fragment_size}, {self.gap_distance}, {self.min_daughter_size}"
            )
        if self.max_gap < 1 or not 0.0 <= self.small_track_fraction < 1.0:
            raise ValueError(
                "max_gap must be >= 1 and small_track_fraction in [0, 1), got "
                f"{self.max_gap}, {self.small_track_fraction}"
            )
        if not 0.0 <= self.min_daughter_ratio <= 1.0:
            raise ValueError(f"min_daughter_ratio must be in [0, 1], got {self.min_daughter_ratio}")
        if self.min_gap not in (0, 1):
            raise ValueError(f"min_gap must be 0 or 1, got {self.min_gap}")
        if self.small_track_reference not in ("count", "pixels"):
            raise ValueError(
                "small_track_reference must be 'count' or 'pixels', got "
                f"{self.small_track_reference!r}"
            )
        if not 0.0 <= self.small_track_edge_fraction < 1.0:
            raise ValueError(
                f"small_track_edge_fraction must be in [0, 1), got {self.small_track_edge_fraction}"
            )
        if self.grow_threshold and not 0.0 < self.grow_threshold < self.seed_threshold:
            raise ValueError(
                "grow_threshold must be 0 (off) or in (0, seed_threshold), got "
                f"{self.grow_threshold} with seed_threshold {self.seed_threshold}"
            )
        if not 0.0 <= self.grow_dim < 1.0:
            raise ValueError(f"grow_dim must be in [0, 1), got {self.grow_dim}")
        if self.min_count < 0 or self.min_size < 0:
            raise ValueError(
                f"min_count and min_size must be >= 0, got {self.min_count}, {self.min_size}"
            )


def smooth_bandwidth(
    bandwidth: np.ndarray, ys: np.ndarray | None = None, xs: np.ndarray | None = None
) -> np.ndarray:
    """3x3 mean filter (zero bias, edge pixels replicated) of each bandwidth channel.

    Parameters
    ----------
    bandwidth : (2, Y, X) float array
    ys, xs : (N,) int arrays, optional
        Evaluate only at these pixels (cheaper than filtering the whole frame).

    Returns
    -------
    (2, Y, X) float64 array, or (2, N) at the given pixels
    """
    bw = np.asarray(bandwidth)
    if ys is None or xs is None:
        bw = bw.astype(np.float64)
        return np.stack([ndimage.uniform_filter(c, size=3, mode="nearest") for c in bw])
    h, w = bw.shape[1:]
    acc = np.zeros((2, ys.size), dtype=np.float64)
    for dy in (-1, 0, 1):
        yy = np.clip(ys + dy, 0, h - 1)
        for dx in (-1, 0, 1):
            acc += bw[:, yy, np.clip(xs + dx, 0, w - 1)]
    return acc / 9.0


def candidate_centres(
    fg: np.ndarray, ey: np.ndarray, ex: np.ndarray, min_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate centres from the histogram of shifted positions.

    Parameters
    ----------
    fg : (Y, X) bool array
        Foreground mask.
    ey, ex : (N,) float arrays
        Shifted positions (pixels) of the N foreground pixels.
    min_count : int
        A pixel is a candidate if more than ``min_count`` rounded shifted positions fall in
        its 3x3 neighbourhood.

    Returns
    -------
    mask : (Y, X) bool array
        Candidate pixels (always foreground).
    count3 : (Y, X) int32 array
        3x3 neighbourhood counts of the histogram.
    """
    h, w = fg.shape
    ry = np.rint(ey).astype(np.int64)
    rx = np.rint(ex).astype(np.int64)
    inside = (ry >= 0) & (ry < h) & (rx >= 0) & (rx < w)
    hist = np.bincount(ry[inside] * w + rx[inside], minlength=h * w).reshape(h, w)
    count3 = ndimage.correlate(hist.astype(np.int32), np.ones((3, 3), np.int32), mode="constant")
    return (count3 > min_count) & fg, count3


class _Buckets:
    """Foreground pixels sorted by rounded (clipped) shifted position, for box queries."""

    def __init__(self, ey: np.ndarray, ex: np.ndarray, shape: tuple[int, int]):
        h, w = shape
        self.h, self.w = h, w
        ky = np.clip(np.rint(ey), 0, h - 1).astype(np.int64)
        kx = np.clip(np.rint(ex), 0, w - 1).astype(np.int64)
        keys = ky * w + kx
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        self.row_keys = np.arange(h, dtype=np.int64) * w

    def query(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Sorted-array positions of pixels whose bucket lies in rows y0..y1, cols x0..x1."""
        rows = self.row_keys[y0 : y1 + 1]
        n = rows.size
        bounds = np.searchsorted(self.keys, np.concatenate((rows + x0, rows + (x1 + 1))))
        starts = bounds[:n]
        lengths = bounds[n:] - starts
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, dtype=np.int64)
        # concatenate the ranges [starts[r], ends[r]) without a Python loop
        shift = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        return shift + np.arange(total, dtype=np.int64)


def _greedy(
    buckets: _Buckets,
    ey: np.ndarray,
    ex: np.ndarray,
    cj: np.ndarray,
    ejy: np.ndarray,
    ejx: np.ndarray,
    a_y: np.ndarray,
    a_x: np.ndarray,
    boxes: np.ndarray,
    threshold: float,
    min_size: int,
    whole_proposal: bool = True,
) -> tuple[np.ndarray, int, int]:
    """Greedy assignment with the paper's reassignment rules (steps 4-6 of the module doc).

    Parameters
    ----------
    buckets : _Buckets
        Foreground pixels sorted by bucket; ``ey``, ``ex`` (N,) are their shifted positions in
        that order.
    cj : (C,) int
        Candidates in visiting order, as positions in the sorted pixel arrays.
    ejy, ejx, a_y, a_x : (C,) float
        Candidate centres and kernel coefficients (score ``exp(-a_y dy^2 - a_x dx^2)``).
    boxes : (C, 4) int
        Search boxes ``y0, y1, x0, x1`` (inclusive, clipped to the frame).

    Returns
    -------
    inst : (N,) int32
        Instance of every sorted pixel (0 = none), 1..n_inst in order of creation.
    n_inst, n_visited : int
    """
    inst = np.zeros(ey.size, dtype=np.int32)
    best = np.zeros(ey.size, dtype=np.float64)
    n_inst = 0
    n_visited = 0
    for k, j in enumerate(cj.tolist()):
        if inst[j]:
            continue
        n_visited += 1
        y0, y1, x0, x1 = boxes[k].tolist()
        idx = buckets.query(y0, y1, x0, x1)
        dy = ey[idx] - ejy[k]
        dx = ex[idx] - ejx[k]
        d = np.exp(-a_y[k] * dy * dy - a_x[k] * dx * dx)
        inside = d > threshold
        gain = inside & (d > best[idx])
        if whole_proposal:
            n_prop = np.count_nonzero(inside)
            if n_prop and 2 * np.count_nonzero(inst[idx[inside]]) >= n_prop:
                continue
        idx, d = idx[gain], d[gain]
        if idx.size < min_size or idx.size == 0:
            continue
        if not whole_proposal and 2 * np.count_nonzero(inst[idx]) >= idx.size:
            continue
        n_inst += 1
        inst[idx] = n_inst
        best[idx] = d
    return inst, n_inst, n_visited


def cluster(
    seediness: np.ndarray,
    bandwidth: np.ndarray,
    offsets: np.ndarray,
    params: ClusterParams | None = None,
) -> np.ndarray:
    """Cluster one frame's network outputs into instance labels.

    See the module docstring for the exact algorithm.

    Parameters
    ----------
    seediness : (Y, X) float array
        Seediness in [0, 1].
    bandwidth : (2, Y, X) float array
        Raw bandwidths (y, x) in [0, 1]; kernel variance is ``exp(-w_s * bandwidth)`` on the
        normalised grid.
    offsets : (2, Y, X) float array
        Segmentation offsets (dy, dx) in pixels.
    params : ClusterParams, optional
        Defaults to ``ClusterParams()``.

    Returns
    -------
    (Y, X) int32 array
        Instance labels 1..K in order of creation, 0 = background.
    """
    params = ClusterParams() if params is None else params
    seed = np.asarray(seediness, dtype=np.float64)
    if seed.ndim != 2:
        raise ValueError(f"seediness must be (Y, X), got shape {seed.shape}")
    shape = seed.shape
    for name, arr in (("bandwidth", bandwidth), ("offsets", offsets)):
        if np.shape(arr) != (2, *shape):
            raise ValueError(f"{name} must have shape {(2, *shape)}, got {np.shape(arr)}")
    labels = np.zeros(shape, dtype=np.int32)

    fg = np.nan_to_num(seed, nan=0.0) > params.seed_threshold
    ys, xs = np.nonzero(fg)
    if ys.size == 0:
        return labels
    ey_all = ys + np.nan_to_num(np.asarray(offsets[0], dtype=np.float64)[ys, xs])
    ex_all = xs + np.nan_to_num(np.asarray(offsets[1], dtype=np.float64)[ys, xs])

    cand, count3 = candidate_centres(fg, ey_all, ex_all, params.min_count)
    cy, cx = np.nonzero(cand)  # raster order
    if cy.size == 0:
        return labels
    visit = np.lexsort((-count3[cy, cx], -seed[cy, cx]))  # stable: raster order breaks ties
    cy, cx = cy[visit], cx[visit]

    # pixel arrays sorted by bucket; pix[y, x] = position of a foreground pixel in them
    buckets = _Buckets(ey_all, ex_all, shape)
    ey, ex = ey_all[buckets.order], ex_all[buckets.order]
    pix = np.full(shape, -1, dtype=np.int64)
    pix[ys[buckets.order], xs[buckets.order]] = np.arange(ys.size)

    # per-candidate kernel: score = exp(-a_y dy^2 - a_x dx^2) with dy, dx in pixels
    bw = np.nan_to_num(smooth_bandwidth(bandwidth, cy, cx))
    g2 = params.grid_spacing**2
    a_y = g2 * np.exp(params.w_s * bw[0])  # g^2 / s_y
    a_x = g2 * np.exp(params.w_s * bw[1])
    log_inv_thr = -math.log(params.score_threshold)
    cj = pix[cy, cx]
    ejy, ejx = ey[cj], ex[cj]
    rad_y = params.window * np.sqrt(log_inv_thr / a_y)  # threshold radius x window, pixels
    rad_x = params.window * np.sqrt(log_inv_thr / a_x)
    h, w = shape
    boxes = np.stack(
        [
            np.clip(np.floor(ejy - rad_y), 0, h - 1),
            np.clip(np.ceil(ejy + rad_y), 0, h - 1),
            np.clip(np.floor(ejx - rad_x), 0, w - 1),
            np.clip(np.ceil(ejx + rad_x), 0, w - 1),
        ],
        1,
    ).astype(np.int64)
    inst, n_inst, n_visited = _greedy(
        buckets,
        ey,
        ex,
        cj,
        ejy,
        ejx,
        a_y,
        a_x,
        boxes,
        params.score_threshold,
        params.min_size,
        params.acceptance == "proposal",
    )

    sizes = np.bincount(inst, minlength=n_inst + 1)
    keep = sizes >= params.min_size
    keep[0] = False
    relabel = np.zeros(n_inst + 1, dtype=np.int32)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    labels[ys[buckets.order], xs[buckets.order]] = relabel[inst]
    if params.fragment_size > 0:
        merged = merge_fragments(labels, params.fragment_size)
        ids, inv = np.unique(merged, return_inverse=True)  # renumber 1..K (0 stays first)
        labels = (inv.reshape(shape) + (0 if ids[0] == 0 else 1)).astype(np.int32)
    if params.grow_threshold > 0 and labels.any():
        labels = grow(labels, seed, params.grow_threshold)
    logger.debug(
        "cluster: %d fg pixels, %d candidates, %d visited, %d instances, %d kept",
        ys.size,
        cy.size,
        n_visited,
        n_inst,
        int(keep.sum()),
    )
    return labels


def grow(labels: np.ndarray, seediness: np.ndarray, threshold: float) -> np.ndarray:
    """Step 9: instances take the connected unlabelled pixels with seediness > ``threshold``.

    A watershed on the negated seediness from the instances, restricted to the instances and
    those pixels: each pixel joins the instance that reaches it along the brightest path.
    Instances keep every pixel they had; no instance is created or removed.
    """
    from skimage.segmentation import watershed

    labels = np.asarray(labels)
    seed = np.nan_to_num(np.asarray(seediness, dtype=np.float64), nan=0.0)
    mask = (labels > 0) | (seed > threshold)
    return watershed(-seed, markers=labels, mask=mask).astype(labels.dtype, copy=False)
