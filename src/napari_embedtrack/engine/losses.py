"""EmbedTrack losses (paper, section 3.2), vectorised over instances.

Per frame, with instance masks ``B_m``, medoid centres ``c_m`` (normalised grid units),
predicted centres ``e_i = p_i + o_i`` and scaled bandwidths ``s_m = exp(-10 * mean_m(bw))``:

- instance: Lovász hinge of ``2 * d_m - 1`` against ``B_m`` (every pixel of the frame; pixels
  marked *ignore* are left out), averaged over instances;
- variance: mean squared deviation of the bandwidths from their instance mean, averaged over
  instances;
- seed: ``w_fg`` x mean over instances of the mean squared error between seediness and the
  (detached) Gaussian score on the instance's pixels, plus the mean squared seediness on
  confident background (not ignored, not in any instance);
- tracking: Lovász hinge of the pixels at t shifted by the tracking offsets against the centre
  of the same cell at t-1 (daughters: their parent's centre), with the cell's mean bandwidth at
  t (detached), averaged over the predecessors in the crop (the pixels at t pointing to one
  cell at t-1 form one instance: both daughters of a parent are one instance). Pixels with a
  target count even inside an ignore region (a marker without a mask lies in its own).

Every term is averaged over instances and then over images, so the weights mean what they say.

Computation (issue #13; the values are those of the plain dense formulas kept in
``tests/engine/_loss_reference.py``, up to the order of summation): the instance means, the
variance and the seed term are sums over each instance's own pixels, not instances x pixels
products. The Lovász hinge of a row needs its pixels sorted only down to the last one that can
contribute: sorted by decreasing error, a pixel contributes ``relu(error) * g``, and the weight
``g`` of a pixel depends only on the pixels before it and on the row's positive count. Pixels
with error <= 0 contribute nothing and come last; a negative pixel whose error is below every
positive's comes after all positives, where the Jaccard loss is already 1, so its ``g`` is
exactly 0. Each row therefore keeps its positives and the negatives whose error reaches the
smallest positive error (picked by the squared distance to the centre, with a margin, before
any exponential), and one sort of those (row, error) pairs replaces a full sort of every row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

W_S = 10.0


@dataclass
class LossWeights:
    """Weights of the loss terms (paper defaults: all 1, variance 10)."""

    instance: float = 1.0
    variance: float = 10.0
    seed: float = 1.0
    foreground: float = 1.0
    track: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def lovasz_grad(gt_sorted: torch.Tensor, gts: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss, batched over rows.

    Args:
        gt_sorted: (M, K) float 0/1 labels sorted by decreasing error: whole rows, or their
            first K pixels if ``gts`` is given.
        gts: (M, 1) positive count of the whole rows (default: ``gt_sorted.sum(1)``).
    """
    if gts is None:
        gts = gt_sorted.sum(1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(1)
    union = gts + (1.0 - gt_sorted).cumsum(1)
    jaccard = 1.0 - intersection / union.clamp_min(1e-12)
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], 1)


def lovasz_hinge_rows(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None):
    """Lovász hinge per row, (M,) losses.

    Only the top of each row is sorted (``torch.topk``): the pixels left out contribute
    exactly nothing (see the module notes).

    Args:
        logits: (M, N) real scores (here ``2 d - 1``).
        labels: (M, N) bool, the instance masks.
        valid: (N,) bool pixels that count, or None for all.
    """
    if valid is not None:
        # ignored pixels: negative label and lowest error -> sorted last, contribute nothing
        labels = labels & valid[None]
    signs = labels.float() * 2.0 - 1.0
    errors = 1.0 - logits * signs
    if valid is not None:
        errors = torch.where(valid[None], errors, torch.full_like(errors, -1e4))
    labels_f = labels.float()
    with torch.no_grad():
        # smallest error of a positive (inf: none); only pixels with error > 0 and >= it count
        tau = torch.where(labels, errors, torch.full_like(errors, float("inf"))).amin(1)
        head = (errors > 0) & (errors >= tau[:, None])
        k = int(head.sum(1).max()) if errors.numel() else 0
    k = min(max(k, 1), errors.shape[1])
    errors_top, perm = torch.topk(errors, k, dim=1)
    gt_top = torch.gather(labels_f, 1, perm)
    grad = lovasz_grad(gt_top, labels_f.sum(1, keepdim=True))
    return (torch.relu(errors_top) * grad).sum(1)


def _lovasz_flat(
    rows: torch.Tensor, errors: torch.Tensor, gt: torch.Tensor, gts: torch.Tensor, m: int
) -> torch.Tensor:
    """Lovász hinge per row, (m,) losses, from the entries of each row that can contribute.

    Args:
        rows: (T,) int64 row of each entry, ascending.
        errors: (T,) hinge errors.
        gt: (T,) bool labels.
        gts: (m,) float32 positive count of each whole row.
        m: number of rows.

    The entries of a row must be the top of the whole row by error (every pixel with error
    >= some level), and the pixels left out must contribute nothing.
    """
    t = errors.numel()
    if t == 0:
        return errors.sum() * torch.zeros(m, dtype=errors.dtype, device=errors.device)
    # sort by (row ascending, error descending); errors <= 0 contribute nothing and come
    # last whatever their order
    key = torch.relu(errors.detach())
    if key.dtype == torch.float32:  # one sort: the bits of a float32 >= 0 sort like it
        order = torch.argsort(rows * 2**31 + (2**31 - 1 - key.view(torch.int32)))
    else:
        order = torch.argsort(key, descending=True, stable=True)
        order = order[torch.argsort(rows[order], stable=True)]
    err_s = errors[order]
    gt_s = gt[order].to(torch.int32)
    counts = torch.bincount(rows, minlength=m)
    starts = (torch.cumsum(counts, 0) - counts).to(torch.int32)  # first entry of each row
    first = starts[rows]
    rank = torch.arange(t, dtype=torch.int32, device=rows.device) - first  # 0-based
    cum = torch.cumsum(gt_s, 0, dtype=torch.int32)
    tp = cum - (cum - gt_s)[first]  # positives up to here in the row (exact integers)
    # lovasz_grad, entry by entry (in float32 as there)
    g_rows = gts[rows]
    intersection = g_rows - tp
    union = g_rows + (rank + 1 - tp)
    jaccard = 1.0 - intersection / union.clamp_min(1e-12)
    prev = torch.cat([jaccard.new_zeros(1), jaccard[:-1]])
    grad = jaccard - prev.masked_fill_(rank == 0, 0.0)
    terms = torch.relu(err_s) * grad
    # summed per row as a padded (m, K) array: the pairwise summation of a dense row sum
    padded = terms.new_zeros(m, int(counts.max()))
    return padded.index_put((rows, rank.long()), terms).sum(1)


def _sq_dist(e: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor, centres, scale):
    """Scaled squared distances ``x`` (T,) of the predicted centres ``e`` (2, N) of pixels
    ``idx`` to the ``centres`` (M, 2) of ``rows``, with ``scale`` (M, 2); the Gaussian score
    is ``exp(-x)``. Entry by entry the operations of the dense (M, 2, N) form, so the same
    values."""
    dy = (e[0, idx] - centres[rows, 0]) ** 2 * scale[rows, 0]
    dx = (e[1, idx] - centres[rows, 1]) ** 2 * scale[rows, 1]
    return dy + dx


class _Instances:
    """The pixels of instances 1..m of a label image.

    Attributes:
        own: (N,) int64 instance of each pixel (1..m; 0: none, also for labels > m).
        idx: (P,) the instances' pixels; rows: (P,) their instance - 1.
        counts: (m,) pixels per instance, at least 1 (float).
    """

    def __init__(self, own: torch.Tensor, m: int, dtype: torch.dtype):
        self.m = m
        self.own = own
        self.idx = torch.nonzero(own > 0, as_tuple=True)[0]
        self.rows = own[self.idx] - 1
        self.counts = torch.bincount(self.rows, minlength=m).clamp_min(1).to(dtype)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """(m, C) mean over each instance of (C, N) values."""
        v = values[:, self.idx].T
        s = torch.zeros(self.m, v.shape[1], dtype=v.dtype, device=v.device)
        return s.index_add(0, self.rows, v) / self.counts[:, None]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """(m,) sums over each instance of (P,) values on its pixels."""
        s = torch.zeros(self.m, dtype=values.dtype, device=values.device)
        return s.index_add(0, self.rows, values)


def _gaussian_hinge(
    e: torch.Tensor, centres: torch.Tensor, scale: torch.Tensor, inst: _Instances, valid
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lovász hinge of ``2 d - 1`` per instance, (M,), d the Gaussian scores; and the scores
    (P,) of the instances' pixels for their own instance (detached).

    Args:
        e: (2, N) predicted centres.
        centres: (M, 2) instance centres.
        scale: (M, 2) ``exp(W_S * sigma)``.
        inst: the instances (the rows).
        valid: (N,) bool pixels that count.
    """
    m = centres.shape[0]
    with torch.no_grad():
        ed, cd, sd = e.detach(), centres.detach(), scale.detach()
        d_own = torch.exp(-_sq_dist(ed, inst.idx, inst.rows, cd, sd))
        keep = valid[inst.idx]
        pos_idx, pos_rows = inst.idx[keep], inst.rows[keep]
        gts = torch.bincount(pos_rows, minlength=m).to(torch.float32)
        # smallest error of a positive, 1 - (2 d - 1) (0 for a row without positives)
        err_pos = 1.0 - (2.0 * d_own[keep] - 1.0)
        tau = torch.full((m,), float("inf"), dtype=e.dtype, device=e.device)
        tau = tau.scatter_reduce(0, pos_rows, err_pos, "amin")
        tau = torch.where(torch.isinf(tau), torch.zeros_like(tau), tau)
        # Negatives that can contribute: error >= tau and > 0. A negative's error, computed
        # as 1 + (2 d - 1), is 2 d to within eps, and 0 where 2 d < eps / 4; so those have
        # d >= max(tau / 2 - eps, eps / 8), i.e. x = -log d <= x_max (with room for the
        # rounding of tau, exp and log). Picked on x, before any exponential.
        eps = torch.finfo(e.dtype).eps
        x_max = -torch.log((tau / 2 - 2 * eps).clamp_min(eps / 16)) + 1e-3
        x = (ed[0][None] - cd[:, :1]).pow_(2).mul_(sd[:, :1])  # (M, N), in place
        x.add_((ed[1][None] - cd[:, 1:]).pow_(2).mul_(sd[:, 1:]))
        cand = x <= x_max[:, None]
        del x
        cand &= valid[None]
        cand[pos_rows, pos_idx] = True  # every positive
        rows, idx = cand.nonzero(as_tuple=True)
        gt = inst.own[idx] == rows + 1
    # the errors of those, as in lovasz_hinge_rows(2 d - 1, ...)
    d = torch.exp(-_sq_dist(e, idx, rows, centres, scale))
    logits = 2.0 * d - 1.0
    errors = 1.0 - logits * (gt.to(e.dtype) * 2.0 - 1.0)
    return _lovasz_flat(rows, errors, gt, gts, m), d_own


def frame_seg_loss(
    seg: torch.Tensor,
    labels: torch.Tensor,
    ignore: torch.Tensor,
    centres: torch.Tensor,
    grid: torch.Tensor,
    weights: LossWeights,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Instance, variance and seed loss of one frame.

    Args:
        seg: (5, H, W) network output [off_y, off_x, bw_y, bw_x, seed] (grid units).
        labels: (H, W) int64 instance ids 1..M (0 = background or unknown).
        ignore: (H, W) bool pixels whose class is unknown (left out of the background terms).
        centres: (M, 2) medoids of instances 1..M in grid units (y, x).
        grid: (2, H, W) pixel coordinates in grid units.
        weights: loss weights.

    Returns:
        instance, variance, seed losses (scalars); instance and variance are None for a
        frame without instances.
    """
    h, w = labels.shape
    n = h * w
    m = centres.shape[0]
    seed = seg[4].reshape(n)
    lab = labels.reshape(n)
    valid = ~ignore.reshape(n)
    bg = valid & (lab == 0)
    seed_bg = (seed[bg] ** 2).mean() if bool(bg.any()) else seed.sum() * 0.0
    if m == 0:
        return None, None, weights.seed * seed_bg
    e = (grid + seg[:2]).reshape(2, n)
    bw = seg[2:4].reshape(2, n)
    inst = _Instances(torch.where(lab <= m, lab, torch.zeros_like(lab)), m, bw.dtype)
    bw_mean = inst.mean(bw)  # (M, 2)
    var = inst.sum(((bw[:, inst.idx] - bw_mean[inst.rows].T) ** 2).sum(0)) / inst.counts
    hinge, d_own = _gaussian_hinge(e, centres, torch.exp(W_S * bw_mean), inst, valid)
    fg = inst.sum((seed[inst.idx] - d_own) ** 2) / inst.counts
    seed_loss = weights.foreground * fg.mean() + seed_bg
    return hinge.mean(), var.mean(), weights.seed * seed_loss


def frame_track_loss(
    track: torch.Tensor,
    bw: torch.Tensor,
    labels: torch.Tensor,
    ignore: torch.Tensor,
    prev_centres: torch.Tensor,
    grid: torch.Tensor,
) -> torch.Tensor | None:
    """Tracking loss of one pair, or None if no instance at t has a predecessor.

    Args:
        track: (2, H, W) tracking offsets at t (grid units).
        bw: (2, H, W) bandwidths at t (used detached, instance mean).
        labels: (H, W) int64 ids 1..M of instances at t that have a predecessor target.
        ignore: (H, W) bool pixels left out (except pixels with a target: ``labels > 0``).
        prev_centres: (M, 2) centre at t-1 of each instance's predecessor (grid units).
        grid: (2, H, W) coordinates.
    """
    m = prev_centres.shape[0]
    if m == 0:
        return None
    h, w = labels.shape
    n = h * w
    lab = labels.reshape(n)
    own = torch.where(lab <= m, lab, torch.zeros_like(lab))
    present = torch.bincount(own, minlength=m + 1)[1:] > 0
    if not bool(present.any()):
        return None
    # the instances present, renumbered 1..M'
    lut = torch.zeros(m + 1, dtype=lab.dtype, device=lab.device)
    lut[1:][present] = torch.arange(1, int(present.sum()) + 1, device=lab.device)
    centres = prev_centres[present]
    inst = _Instances(lut[own], centres.shape[0], bw.dtype)
    bw_mean = inst.mean(bw.reshape(2, n)).detach()
    e = (grid + track).reshape(2, n)
    # pixels with a tracking target always count, even inside an ignore region (sparse
    # labels: a marker without a SEG mask lies inside the unknown region around itself)
    valid = ~ignore.reshape(n) | (lab > 0)
    return _gaussian_hinge(e, centres, torch.exp(W_S * bw_mean), inst, valid)[0].mean()


def make_grid(h: int, w: int, spacing: float, device=None) -> torch.Tensor:
    """(2, H, W) pixel coordinates (y, x) in normalised grid units."""
    ys = torch.arange(h, device=device, dtype=torch.float32) * spacing
    xs = torch.arange(w, device=device, dtype=torch.float32) * spacing
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"))


def embedtrack_loss(
    seg_t: torch.Tensor,
    seg_prev: torch.Tensor,
    track: torch.Tensor,
    batch: dict[str, torch.Tensor],
    grid_spacing: float,
    weights: LossWeights | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of a batch of pairs and its parts.

    Args:
        seg_t, seg_prev: (B, 5, H, W) segmentation outputs of frames t and t-1.
        track: (B, 2, H, W) tracking offsets.
        batch: from :mod:`engine.data` — ``labels`` (B, 2, H, W) int64 [t-1, t] consecutive
            ids, ``ignore`` (B, 2, H, W) bool, ``centres`` (B, 2, K, 2) pixel coords,
            ``n_inst`` (B, 2), ``track_labels`` (B, H, W) ids at t of cells with a target,
            ``track_centres`` (B, K, 2) pixel coords of their target at t-1, ``n_track`` (B,).
        grid_spacing: pixel size on the normalised grid.
        weights: loss weights.

    Returns:
        total loss (scalar tensor) and a dict of the parts as floats.
    """
    weights = weights or LossWeights()
    b, _, h, w = seg_t.shape
    grid = make_grid(h, w, grid_spacing, seg_t.device)
    seg_t, seg_prev, track = seg_t.float(), seg_prev.float(), track.float()
    inst_l, var_l, seed_l, track_l = [], [], [], []
    # counts to the host once (not one device sync per frame on a GPU)
    n_inst = batch["n_inst"].tolist()
    n_track = batch["n_track"].tolist()
    all_unknown = batch["ignore"].flatten(2).all(-1).tolist()
    for i in range(b):
        for k, seg in ((0, seg_prev[i]), (1, seg_t[i])):
            n = int(n_inst[i][k])
            centres = batch["centres"][i, k, :n] * grid_spacing
            li, lv, ls = frame_seg_loss(
                seg, batch["labels"][i, k], batch["ignore"][i, k], centres, grid, weights
            )
            if li is not None:
                inst_l.append(li)
                var_l.append(lv)
            if li is not None or not all_unknown[i][k]:
                seed_l.append(ls)  # (an entirely unknown frame has no seed term)
        n = int(n_track[i])
        lt = frame_track_loss(
            track[i],
            seg_t[i, 2:4],
            batch["track_labels"][i],
            batch["ignore"][i, 1],
            batch["track_centres"][i, :n] * grid_spacing,
            grid,
        )
        if lt is not None:
            track_l.append(lt)
    zero = seg_t.sum() * 0.0
    inst = torch.stack(inst_l).mean() if inst_l else zero
    var = torch.stack(var_l).mean() if var_l else zero
    seed = torch.stack(seed_l).mean() if seed_l else zero
    trk = torch.stack(track_l).mean() if track_l else zero
    total = (
        weights.instance * inst
        + weights.variance * var
        + seed  # weights.seed applied per frame
        + weights.track * trk
    )
    parts = {
        "instance": float(inst.detach()),
        "variance": float(var.detach()),
        "seed": float(seed.detach()),
        "track": float(trk.detach()),
    }
    return total, parts
