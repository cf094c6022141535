"""Ideal network outputs synthesised from tracked ground truth (test helper).

If clustering and linking are right, clustering + linking these outputs reproduces the ground
truth exactly (up to renaming of track ids), for ground truth that the method can represent
(see :func:`simplify_ground_truth`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from napari_embedtrack.engine.outputs import FrameOutput

#: Bandwidth of the ideal outputs gives a kernel whose score falls to 0.5 at this many pixels.
KERNEL_RADIUS = 1.5


def geometric_median(pts: np.ndarray, n_iter: int = 50) -> np.ndarray:
    """Weiszfeld iterations for the point minimising the sum of distances to ``pts`` (N, 2)."""
    m = pts.mean(0)
    for _ in range(n_iter):
        d = np.maximum(np.hypot(*(pts - m).T), 1e-9)
        m_new = (pts / d[:, None]).sum(0) / (1.0 / d).sum()
        if np.abs(m_new - m).max() < 1e-3:
            return m_new
        m = m_new
    return m


def medoid(ys: np.ndarray, xs: np.ndarray, n_candidates: int = 32) -> tuple[int, int]:
    """Medoid of a pixel set: the pixel minimising the sum of distances to all others.

    Exact sums are evaluated for the ``n_candidates`` pixels nearest the geometric median
    (estimated on at most 1000 of the pixels; the sum of distances is convex, so its minimum
    over the pixels lies next to the continuous minimum); memory is ``n_candidates * N``,
    never ``N * N``.

    Parameters
    ----------
    ys, xs : (N,) int arrays
        Pixel coordinates.

    Returns
    -------
    (y, x) : tuple of int
        A pixel of the set.
    """
    pts = np.stack([ys, xs], 1).astype(np.float64)
    gm = geometric_median(pts[:: max(1, pts.shape[0] // 1000)])
    near = np.argsort(np.hypot(*(pts - gm).T), kind="stable")[:n_candidates]
    cand = pts[near]
    sums = np.hypot(cand[:, None, 0] - pts[None, :, 0], cand[:, None, 1] - pts[None, :, 1]).sum(1)
    y, x = cand[int(np.argmin(sums))]
    return int(y), int(x)


def frame_medoids(labels: np.ndarray) -> dict[int, tuple[int, int]]:
    """Medoid of every instance of a (Y, X) label image, ``{label: (y, x)}``."""
    out = {}
    objs = ndimage.find_objects(labels)
    for lab, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        ys, xs = np.nonzero(labels[sl] == lab)
        y, x = medoid(ys + sl[0].start, xs + sl[1].start)
        out[lab] = (y, x)
    return out


def ideal_bandwidth(grid_spacing: float, radius: float = KERNEL_RADIUS) -> float:
    """Raw bandwidth whose kernel (variance ``exp(-10 bw)``) scores 0.5 at ``radius`` pixels.

    Clipped to [0, 1], so the radius cannot go below ``sqrt(ln 2 * exp(-10)) / grid_spacing``
    (1.43 px for a grid spacing of 1/255).
    """
    s = (radius * grid_spacing) ** 2 / math.log(2.0)
    return float(np.clip(-math.log(s) / 10.0, 0.0, 1.0))


def ideal_outputs(
    tracked_labels: np.ndarray, lineage: np.ndarray, grid_spacing: float
) -> list[FrameOutput]:
    """Network outputs a perfect model would produce for a tracked label movie.

    - seediness 1 in cells, 0 elsewhere;
    - segmentation offsets from every cell pixel to its cell's medoid;
    - constant bandwidth (kernel radius :data:`KERNEL_RADIUS` px at score 0.5);
    - tracking offsets from every cell pixel at t to the medoid at t-1 of the same track; for
      the first frame of a track whose parent exists at t-1, to the parent's medoid; for any
      other cell (a new track) to the background pixel of frame t-1 nearest to the cell's
      medoid, so that it votes for background.

    Parameters
    ----------
    tracked_labels : (T, Y, X) int array
        Label = track id, 0 = background.
    lineage : (N, 4) int array
        ``[id, start, end, parent]``.
    grid_spacing : float
        Normalised grid spacing of the model (for the bandwidth).

    Returns
    -------
    list of FrameOutput
        One per frame, float32.
    """
    tracked_labels = np.asarray(tracked_labels)
    n_t, h, w = tracked_labels.shape
    parent = {int(r[0]): int(r[3]) for r in np.asarray(lineage).reshape(-1, 4)}
    start = {int(r[0]): int(r[1]) for r in np.asarray(lineage).reshape(-1, 4)}
    bw_value = ideal_bandwidth(grid_spacing)
    yy, xx = np.mgrid[0:h, 0:w]
    outputs = []
    prev_medoids: dict[int, tuple[int, int]] = {}
    for t in range(n_t):
        lab = tracked_labels[t].astype(np.int64)
        fg = lab > 0
        medoids = frame_medoids(lab)
        # lookup tables label -> target (y, x)
        n_lut = int(lab.max()) + 1
        cen = np.zeros((2, n_lut), dtype=np.float32)
        tgt = np.zeros((2, n_lut), dtype=np.float32)
        if t > 0:
            bg = tracked_labels[t - 1] == 0
            if not bg.any():
                raise ValueError(f"frame {t - 1} has no background pixel for new tracks")
            _, (near_y, near_x) = ndimage.distance_transform_edt(~bg, return_indices=True)
        for k, (my, mx) in medoids.items():
            cen[:, k] = my, mx
            if t == 0:
                continue
            if k in prev_medoids:
                tgt[:, k] = prev_medoids[k]
            elif start.get(k) == t and parent.get(k, 0) in prev_medoids:
                tgt[:, k] = prev_medoids[parent[k]]
            else:
                tgt[:, k] = near_y[my, mx], near_x[my, mx]
        off = np.zeros((2, h, w), dtype=np.float32)
        toff = np.zeros((2, h, w), dtype=np.float32)
        for c, grid in enumerate((yy, xx)):
            off[c][fg] = cen[c][lab[fg]] - grid[fg]
            if t > 0:
                toff[c][fg] = tgt[c][lab[fg]] - grid[fg]
        seed = fg.astype(np.float32)
        bw = np.full((2, h, w), bw_value, dtype=np.float32)
        outputs.append(FrameOutput(seed, bw, off, toff))
        prev_medoids = medoids
    return outputs


def lineage_from_labels(labels: np.ndarray, parents: dict[int, int]) -> np.ndarray:
    """Lineage ``[id, start, end, parent]`` of a tracked movie from presence per frame."""
    rows = []
    present = [set(np.unique(f).tolist()) - {0} for f in labels]
    ids = sorted(set().union(*present))
    for tid in ids:
        ts = [t for t, p in enumerate(present) if tid in p]
        if ts[-1] - ts[0] + 1 != len(ts):
            raise ValueError(f"track {tid} has a gap")
        par = parents.get(tid, 0)
        rows.append([tid, ts[0], ts[-1], par if par in ids else 0])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def simplify_ground_truth(
    labels: np.ndarray, lineage: np.ndarray, min_pixels: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth reduced to what clustering + linking can represent.

    - masks of fewer than ``min_pixels`` pixels are removed (a cell needs more than
      ``min_count`` = 5 pixels to produce a candidate centre);
    - a parent with a single child that starts right after it ends is merged with the child
      (linking cannot tell a single-child "division" from a continuation).

    Parameters
    ----------
    labels : (T, Y, X) int array
    lineage : (N, 4) int array

    Returns
    -------
    labels : (T, Y, X) int64 array
    lineage : (M, 4) int64 array
    """
    labels = np.asarray(labels).astype(np.int64, copy=True)
    for f in labels:
        sizes = np.bincount(f.ravel())
        f[sizes[f] < min_pixels] = 0
    parents = {int(r[0]): int(r[3]) for r in np.asarray(lineage).reshape(-1, 4)}
    lin = lineage_from_labels(labels, parents)
    while True:
        children: dict[int, list[int]] = {}
        for r in lin:
            if r[3]:
                children.setdefault(int(r[3]), []).append(int(r[0]))
        ends = {int(r[0]): int(r[2]) for r in lin}
        starts = {int(r[0]): int(r[1]) for r in lin}
        single = [
            (p, c[0]) for p, c in children.items() if len(c) == 1 and starts[c[0]] == ends[p] + 1
        ]
        if not single:
            return labels, lin
        p, c = single[0]
        labels[labels == c] = p
        parents = {int(r[0]): (p if int(r[3]) == c else int(r[3])) for r in lin if r[0] != c}
        lin = lineage_from_labels(labels, parents)


def assert_same_tracking(
    labels: np.ndarray, lineage: np.ndarray, gt_labels: np.ndarray, gt_lineage: np.ndarray
) -> None:
    """Assert two tracked movies are identical up to a renaming of track ids.

    Masks must be pixel-identical, the id mapping one-to-one over the whole movie, and the
    lineages equal after renaming.
    """
    labels = np.asarray(labels).astype(np.int64)
    gt_labels = np.asarray(gt_labels).astype(np.int64)
    assert labels.shape == gt_labels.shape
    fg = (labels > 0) | (gt_labels > 0)
    pairs = np.unique(np.stack([labels[fg], gt_labels[fg]]), axis=1)
    assert (pairs > 0).all(), f"masks differ: pairs with background {pairs[:, (pairs == 0).any(0)]}"
    res_ids, gt_ids = pairs
    assert np.unique(res_ids).size == res_ids.size, "a result track covers several GT tracks"
    assert np.unique(gt_ids).size == gt_ids.size, "a GT track is split over result tracks"
    rename = dict(zip(res_ids.tolist(), gt_ids.tolist(), strict=True))
    rename[0] = 0
    mapped = np.asarray(
        [[rename[int(r[0])], r[1], r[2], rename[int(r[3])]] for r in lineage], dtype=np.int64
    ).reshape(-1, 4)
    mapped = mapped[np.argsort(mapped[:, 0])]
    gt = np.asarray(gt_lineage, dtype=np.int64).reshape(-1, 4)
    gt = gt[np.argsort(gt[:, 0])]
    np.testing.assert_array_equal(mapped, gt)
