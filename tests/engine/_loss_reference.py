"""Pre-optimisation loss (engine/losses.py before issue #13), kept to test against.

EmbedTrack losses (paper, section 3.2), vectorised over instances.

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


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss, batched over rows.

    Args:
        gt_sorted: (M, N) float 0/1 labels sorted by decreasing error.
    """
    gts = gt_sorted.sum(1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(1)
    union = gts + (1.0 - gt_sorted).cumsum(1)
    jaccard = 1.0 - intersection / union.clamp_min(1e-12)
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], 1)


def lovasz_hinge_rows(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None):
    """Lovász hinge per row, (M,) losses.

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
    errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
    gt_sorted = torch.gather(labels.float(), 1, perm)
    grad = lovasz_grad(gt_sorted)
    return (torch.relu(errors_sorted) * grad).sum(1)


def _gaussian_scores(e: torch.Tensor, centres: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian scores (M, N) of predicted centres e (2, N), centres (M, 2), sigma (M, 2)."""
    diff2 = (e[None] - centres[:, :, None]) ** 2  # (M, 2, N)
    return torch.exp(-(diff2 * torch.exp(W_S * sigma)[:, :, None]).sum(1))


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
    masks = lab[None] == torch.arange(1, m + 1, device=lab.device)[:, None]  # (M, N)
    counts = masks.sum(1).clamp_min(1).float()
    maskf = masks.float()
    bw_mean = (maskf @ bw.T) / counts[:, None]  # (M, 2)
    var = ((maskf[:, None] * (bw[None] - bw_mean[:, :, None]) ** 2).sum((1, 2))) / counts
    d = _gaussian_scores(e, centres, bw_mean)  # (M, N)
    inst = lovasz_hinge_rows(2.0 * d - 1.0, masks, valid)
    fg = (maskf * (seed[None] - d.detach()) ** 2).sum(1) / counts
    seed_loss = weights.foreground * fg.mean() + seed_bg
    return inst.mean(), var.mean(), weights.seed * seed_loss


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
    masks = lab[None] == torch.arange(1, m + 1, device=lab.device)[:, None]
    present = masks.any(1)
    if not bool(present.any()):
        return None
    masks = masks[present]
    centres = prev_centres[present]
    maskf = masks.float()
    counts = maskf.sum(1).clamp_min(1)
    bw_mean = ((maskf @ bw.reshape(2, n).T) / counts[:, None]).detach()
    e = (grid + track).reshape(2, n)
    d = _gaussian_scores(e, centres, bw_mean)
    # pixels with a tracking target always count, even inside an ignore region (sparse
    # labels: a marker without a SEG mask lies inside the unknown region around itself)
    valid = ~ignore.reshape(n) | (lab > 0)
    return lovasz_hinge_rows(2.0 * d - 1.0, masks, valid).mean()


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
    for i in range(b):
        for k, seg in ((0, seg_prev[i]), (1, seg_t[i])):
            n = int(batch["n_inst"][i, k])
            centres = batch["centres"][i, k, :n] * grid_spacing
            li, lv, ls = frame_seg_loss(
                seg, batch["labels"][i, k], batch["ignore"][i, k], centres, grid, weights
            )
            if li is not None:
                inst_l.append(li)
                var_l.append(lv)
            if li is not None or not bool(batch["ignore"][i, k].all()):
                seed_l.append(ls)  # (an entirely unknown frame has no seed term)
        n = int(batch["n_track"][i])
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
