"""Training data: frame pairs (t-1, t) with labels, crops and augmentation.

Labels per frame (full frame, built once per sequence by :func:`build_labels`):

- ``seg``: instance masks (label = track id) of cells whose full mask is known. These drive
  the segmentation losses.
- ``track``: pixels known to belong to a tracked cell: the full mask where known, otherwise the
  tracking marker. These drive the tracking loss (a marker's pixels must point to the cell's
  centre at t-1, estimated as the marker's/mask's medoid there).
- ``ignore``: pixels whose class is unknown: around markers of cells without a full mask (a
  disk of about one cell radius), plus padding outside the frame. They count neither as
  background nor as cell.

Where the TRA markers are full masks (Fluo-N2DH-SIM+; detected by comparing markers with
the SEG masks), every frame is fully labelled. Where SEG is sparse (GOWT1, MSC), SEG frames
give full masks for the annotated cells and every frame gives markers for tracking.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .predict import resize_image, scaled_shape
from .proxy import (
    UNEVEN_RANGE,
    cell_factor_map,
    draw_cell_factors,
    noise_sd,
    scale_above_background,
    warp_movie,
)

log = logging.getLogger(__name__)

MAX_INSTANCES = 128
MIN_CROP_PIXELS = 20  # instance pieces smaller than this inside a crop are ignored


# --------------------------------------------------------------------------- normalisation
def normalize_frame(frame: np.ndarray, percentiles=(1.0, 99.8)) -> np.ndarray:
    """Scale a frame so its low/high percentiles map to 0/1 (float32, not clipped)."""
    frame = np.asarray(frame, dtype=np.float32)
    lo, hi = np.percentile(frame, percentiles)
    return ((frame - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)


# --------------------------------------------------------------------------- sequences
@dataclass
class TrainingSequence:
    """One movie with labels, ready for cropping.

    Attributes:
        name: where it came from.
        image: (T, Y, X) float32 normalised frames.
        seg: (T, Y, X) int32 full instance masks (track ids), 0 elsewhere.
        track: (T, Y, X) int32 known cell pixels (masks or markers, track ids).
        ignore: (T, Y, X) bool unknown pixels.
        parents: {track id: parent id} for tracks that have a parent.
        starts: {track id: first frame}.
        seg_frames: frames with full masks (used for segmentation validation).
        replay: the labels are the starting model's own results (:func:`replay_sequence`):
            trained on beside corrections, never validated on.
    """

    name: str
    image: np.ndarray
    seg: np.ndarray
    track: np.ndarray
    ignore: np.ndarray
    parents: dict[int, int] = field(default_factory=dict)
    starts: dict[int, int] = field(default_factory=dict)
    seg_frames: list[int] = field(default_factory=list)
    replay: bool = False

    @property
    def n_frames(self) -> int:
        return self.image.shape[0]

    def known_frames(self) -> np.ndarray:
        """Per frame, whether anything of it is known (not every pixel ignored: the frames
        between a person's corrections are wholly unknown)."""
        return ~self.ignore.reshape(self.n_frames, -1).all(axis=1)

    def partial_frames(self) -> np.ndarray:
        """Per frame, whether only some of its cells are known: no pixel of it is known
        background (a frame where a person corrected some cells and left the rest,
        ``sparse_frames``), yet not wholly unknown. A cell found there away from the known
        ones is neither right nor wrong."""
        open_ = (self.ignore | (self.track > 0)).reshape(self.n_frames, -1).all(axis=1)
        return open_ & self.known_frames()


def _match_seg_to_markers(seg: np.ndarray, markers: np.ndarray, fresh: int) -> np.ndarray:
    """Relabel a SEG mask (Y, X) with the track id of the marker it overlaps most.

    SEG masks that overlap no marker get fresh ids ``fresh + 1, fresh + 2, ...`` (above every
    track id, and different in every frame, so they never get a tracking target).
    """
    out = np.zeros(seg.shape, np.int32)
    ids = np.unique(seg)
    ids = ids[ids > 0]
    fg = seg > 0
    pairs, counts = np.unique(
        np.stack([seg[fg], markers[fg]]).astype(np.int64), axis=1, return_counts=True
    )
    best: dict[int, tuple[int, int]] = {}
    for (s, m), c in zip(pairs.T, counts, strict=True):
        if m > 0 and c > best.get(int(s), (0, 0))[1]:
            best[int(s)] = (int(m), int(c))
    for s in ids:
        if int(s) in best:
            tid = best[int(s)][0]
        else:
            fresh += 1
            tid = fresh
        out[seg == s] = tid
    return out


def build_labels(
    tra: np.ndarray, seg: dict[int, np.ndarray], ignore_radius: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int], bool]:
    """Combine TRA markers and sparse SEG masks into seg / track / ignore maps.

    Args:
        tra: (T, Y, X) tracking markers (track ids).
        seg: {frame: (Y, X) SEG mask} for the annotated frames.
        ignore_radius: radius (px) of the unknown region around markers without a mask;
            default: the larger of the median SEG cell radius and the distance from a marker
            within which 95 % of its annotated cell lies (:func:`reach_of_masks`; large for
            cells much bigger than their markers, e.g. MSC).

    Returns:
        seg_lab (T, Y, X) int32, track_lab (T, Y, X) int32, ignore (T, Y, X) bool, the frames
        with full masks, and whether the markers are full masks.
    """
    sizes = np.concatenate([np.bincount(s.ravel())[1:] for s in seg.values()] or [[]])
    sizes = sizes[sizes > 0]
    full = _markers_are_masks(tra, seg)
    if full:
        seg_lab = tra.astype(np.int32)
        return seg_lab, seg_lab.copy(), np.zeros(tra.shape, bool), list(range(len(tra))), True
    seg_lab = np.zeros(tra.shape, np.int32)
    track_lab = tra.astype(np.int32)
    fresh = int(tra.max()) + 100000  # ids of SEG masks without a marker lie above this
    for t in sorted(seg):
        seg_lab[t] = _match_seg_to_markers(seg[t], tra[t], fresh)
        fresh = max(fresh, int(seg_lab[t].max()))
        track_lab[t] = np.where(seg_lab[t] > 0, seg_lab[t], tra[t])
    if ignore_radius is None:
        ignore_radius = float(np.sqrt(np.median(sizes) / np.pi)) if sizes.size else 20.0
        ignore_radius = max(ignore_radius, reach_of_masks(tra, {t: seg_lab[t] for t in seg}))
    ignore = np.zeros(tra.shape, bool)
    for t in range(tra.shape[0]):
        unknown = (tra[t] > 0) & ~np.isin(tra[t], np.unique(seg_lab[t]))
        if unknown.any():
            dist = ndimage.distance_transform_edt(~unknown)
            ignore[t] = (dist <= ignore_radius) & (seg_lab[t] == 0)
    return seg_lab, track_lab, ignore, sorted(seg), False


def reach_of_masks(tra: np.ndarray, masks: dict[int, np.ndarray], q: float = 95.0) -> float:
    """How far annotated cells reach beyond their markers: the ``q`` percentile of the
    distance (px) from a mask pixel to the marker of the same cell (0 if none has one).

    Args:
        tra: (T, Y, X) tracking markers (track ids).
        masks: {frame: (Y, X) SEG masks labelled with the track id of their marker}; masks
            whose id has no marker in that frame are skipped.
    """
    dists = []
    max_id = int(tra.max())
    for t, lab in masks.items():
        for i, sl in enumerate(ndimage.find_objects(lab, max_label=max_id), start=1):
            if sl is None:
                continue
            marker = tra[t] == i
            ys, xs = np.nonzero(marker)
            if ys.size == 0:
                continue
            y0, y1 = min(sl[0].start, ys.min()), max(sl[0].stop, ys.max() + 1)
            x0, x1 = min(sl[1].start, xs.min()), max(sl[1].stop, xs.max() + 1)
            d = ndimage.distance_transform_edt(~marker[y0:y1, x0:x1])
            dists.append(d[lab[y0:y1, x0:x1] == i])
    return float(np.percentile(np.concatenate(dists), q)) if dists else 0.0


def _markers_are_masks(tra: np.ndarray, seg: dict[int, np.ndarray]) -> bool:
    """True if the TRA markers coincide with the SEG masks (IoU of foreground > 0.95)."""
    if not seg:
        return False
    ious = []
    for t, s in seg.items():
        a, b = tra[t] > 0, s > 0
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    return float(np.mean(ious)) > 0.95


def rescale_sequence(seq: TrainingSequence, scale: float) -> TrainingSequence:
    """The sequence at image ``scale``: frames resized as prediction resizes them
    (:func:`~.predict.resize_image`), label maps by nearest neighbour. Models with
    ``scale != 1`` train on these."""
    if scale == 1.0:
        return seq
    size = scaled_shape(seq.image.shape[1:], scale)

    def nearest(arr: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(arr.astype(np.float32))[None]
        return F.interpolate(t, size=size, mode="nearest-exact")[0].numpy().astype(arr.dtype)

    return dataclasses.replace(
        seq,
        image=resize_image(seq.image, size),
        seg=nearest(seq.seg),
        track=nearest(seq.track),
        ignore=nearest(seq.ignore),
    )


def load_ctc_sequence(
    data_dir: str | Path, seq: str | None = None, percentiles=(1.0, 99.8)
) -> TrainingSequence:
    """Load a CTC dataset sequence (``DATA_DIR/01`` + ``DATA_DIR/01_GT``) for training.

    ``data_dir`` may be the dataset folder (then ``seq`` or the first sequence with GT is used)
    or the sequence folder itself (``.../01``).
    """
    from ..io import ctc

    data_dir = Path(data_dir)
    if (data_dir.parent / f"{data_dir.name}_GT").is_dir():
        seq_dir = data_dir
    else:
        cands = (
            sorted(
                p for p in data_dir.iterdir() if p.is_dir() and (data_dir / f"{p.name}_GT").is_dir()
            )
            if data_dir.is_dir()
            else []
        )
        if seq is not None:
            cands = [p for p in cands if p.name == seq]
        if not cands:
            raise ctc.CTCFormatError(
                f"{data_dir}: no CTC sequence with ground truth found "
                "(expected a folder NN with a sibling NN_GT)"
            )
        seq_dir = cands[0]
    movie = ctc.read_movie(seq_dir)
    gt = ctc.read_ground_truth(seq_dir.parent / f"{seq_dir.name}_GT")
    if gt.tra.shape != movie.shape:
        raise ctc.CTCFormatError(
            f"{seq_dir}: movie shape {movie.shape} differs from ground truth {gt.tra.shape}"
        )
    seg_lab, track_lab, ignore, seg_frames, _ = build_labels(gt.tra, gt.seg)
    image = np.stack([normalize_frame(f, percentiles) for f in movie])
    return TrainingSequence(
        name=f"{seq_dir.parent.name}/{seq_dir.name}",
        image=image,
        seg=seg_lab,
        track=track_lab,
        ignore=ignore,
        parents={int(r[0]): int(r[3]) for r in gt.lineage if r[3] > 0},
        starts={int(r[0]): int(r[1]) for r in gt.lineage},
        seg_frames=seg_frames,
    )


def sequence_from_arrays(
    name: str,
    movie: np.ndarray,
    labels: np.ndarray,
    lineage: np.ndarray | None = None,
    annotated_frames: list[int] | None = None,
    percentiles=(1.0, 99.8),
    sparse_frames: list[int] | None = None,
) -> TrainingSequence:
    """Training sequence from arrays (e.g. napari layers): sparse corrections.

    Args:
        movie: (T, Y, X) frames.
        labels: (T, Y, X) instance labels; label = track id when ``lineage`` is given.
        lineage: optional (N, 4) lineage; without it, equal labels in consecutive frames are
            taken as the same cell (as napari Labels edited by hand usually are).
        annotated_frames: frames whose labels are complete; other frames are ignored
            entirely. Default: frames with at least one label.
        sparse_frames: frames where only some cells were corrected: their labelled cells are
            learnt, every unlabelled pixel is unknown (neither background nor cell). Frames
            listed here need not be in ``annotated_frames``.

    Tracking targets come from consecutive labelled frames only: a cell whose previous
    frame is unknown has no predecessor to point to and teaches segmentation alone.
    """
    movie = np.asarray(movie)
    labels = np.asarray(labels).astype(np.int32)
    if movie.ndim == 2:
        movie, labels = movie[None], labels[None]
    if movie.shape != labels.shape:
        raise ValueError(f"image {movie.shape} and labels {labels.shape} differ in shape")
    image = np.stack([normalize_frame(f, percentiles) for f in movie])
    return _labelled(name, image, labels, lineage, annotated_frames, sparse_frames)


def _labelled(
    name: str,
    image: np.ndarray,
    labels: np.ndarray,
    lineage: np.ndarray | None,
    annotated_frames: list[int] | None,
    sparse_frames: list[int] | None,
) -> TrainingSequence:
    """:func:`sequence_from_arrays` for frames already normalised (``image``)."""
    if annotated_frames is None:
        annotated_frames = [t for t in range(len(labels)) if labels[t].any()]
    sparse = np.zeros(len(labels), bool)
    sparse[list(sparse_frames or [])] = True
    ann = np.zeros(len(labels), bool)
    ann[list(annotated_frames)] = True
    ann |= sparse
    ignore = np.broadcast_to(~ann[:, None, None], labels.shape).copy()
    ignore[sparse] = labels[sparse] == 0
    seg = np.where(ann[:, None, None], labels, 0).astype(np.int32)
    parents, starts = {}, {}
    if lineage is not None and len(lineage):
        parents = {int(r[0]): int(r[3]) for r in lineage if r[3] > 0}
        starts = {int(r[0]): int(r[1]) for r in lineage}
    return TrainingSequence(
        name, image, seg, seg.copy(), ignore, parents, starts, list(np.flatnonzero(ann))
    )


#: Replay: one pair (t-1, t) of every this many candidate frames of a model's own results
#: is trained on beside the corrections (:func:`replay_frames`).
REPLAY_EVERY = 3


def replay_frames(n_frames: int, corrected: Iterable[int], every: int = REPLAY_EVERY) -> list[int]:
    """Frames of a model's own results to train on beside ``corrected`` frames.

    Fine-tuning on a few corrected frames alone teaches the model those frames' cells and
    can make it worse on the rest of the movie while it looks better on the corrections
    held out (issue #13: the GOWT1 model fine-tuned on SIM+ 01's first five frames lost
    0.019 SEG on frames 5-64, masks 12 % too large there; docs/models.md, "Fine-tuning
    with replay"). Training on the model's own results for the other frames as well keeps
    what it did there unless the corrections teach otherwise.

    Returns pairs (t-1, t): every ``every``-th frame t whose pair neither holds nor touches
    a corrected frame (a corrected frame's neighbours are left out too, so that no pair
    mixes the person's labels with the model's), with t-1; sorted.
    """
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    near = {t + d for t in corrected for d in (-1, 0, 1)}
    candidates = [t for t in range(1, n_frames) if t not in near and t - 1 not in near]
    return sorted({f for t in candidates[::every] for f in (t - 1, t)})


def pairs_with_cells(frames: Iterable[int], labels: np.ndarray) -> list[int]:
    """The pairs (t-1, t) of ``frames`` (as :func:`replay_frames` returns them) in which
    ``labels`` has cells in both frames; sorted.

    A frame of a model's results without a single cell is a frame it failed on or was not
    run on (a partial result in the viewer), not a frame known to be empty: replayed, it
    would teach "background everywhere" where the corrections say nothing."""
    chosen = set(frames)
    pairs = {t for t in chosen if t - 1 in chosen and labels[t].any() and labels[t - 1].any()}
    return sorted({f for t in pairs for f in (t - 1, t)})


def replay_sequence(
    name: str,
    beside: TrainingSequence,
    labels: np.ndarray,
    lineage: np.ndarray | None,
    frames: list[int],
) -> TrainingSequence:
    """A starting model's own results (``labels``, label = track id, and their
    ``lineage``) on ``frames`` (:func:`replay_frames`) as a training sequence that
    :func:`~.train.train` trains on and never validates on (``replay=True``): the stop rule
    compares models on the person's corrections only. ``beside``: the corrections'
    sequence of the same movie, whose normalised frames are shared, not made again."""
    if not frames:
        raise ValueError("no frames to replay: the corrections cover the whole movie")
    labels = np.asarray(labels).astype(np.int32)
    if labels.shape != beside.image.shape:
        raise ValueError(f"results {labels.shape} and movie {beside.image.shape} differ in shape")
    seq = _labelled(name, beside.image, labels, lineage, frames, None)
    return dataclasses.replace(seq, replay=True)


# --------------------------------------------------------------------------- medoids
def medoid(coords: np.ndarray, n_candidates: int = 64, max_points: int = 4000) -> np.ndarray:
    """Medoid of a point set (n, 2) without an n x n matrix.

    Candidates are the ``n_candidates`` points closest to the centroid (the medoid lies near
    it); each is scored by its summed distance to (a fixed subsample of at most ``max_points``
    of) all points. Exact for sets of up to ``n_candidates`` points.

    The candidate-to-point distances come from one small matrix product on coordinates
    centred at the centroid (|c|^2 + |p|^2 - 2 c.p), not from an (n_candidates, n, 2)
    difference array: a third of the time of a training sample went into this (issue #13).
    """
    n = len(coords)
    if n <= 2:
        return coords[0].astype(np.float32)
    pts = coords.astype(np.float32)
    mid = pts.mean(0)
    c = pts - mid
    d0 = (c * c).sum(1)
    k = min(n_candidates, n)
    pick = np.argpartition(d0, k - 1)[:k]
    ref = c if n <= max_points else c[:: int(np.ceil(n / max_points))]
    sq = (ref * ref).sum(1)
    d2 = d0[pick, None] + sq[None, :] - 2.0 * (c[pick] @ ref.T)
    cost = np.sqrt(np.maximum(d2, 0.0)).sum(1)
    return pts[pick[np.argmin(cost)]]


def instance_medoids(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Medoids (len(ids), 2) in pixel coordinates (y, x) of the given label ids."""
    out = np.zeros((len(ids), 2), np.float32)
    if len(ids) == 0:
        return out
    slices = ndimage.find_objects(labels, max_label=int(ids.max()))
    for i, lab in enumerate(ids):
        sl = slices[lab - 1]
        yy, xx = np.nonzero(labels[sl] == lab)
        out[i] = medoid(np.stack([yy + sl[0].start, xx + sl[1].start], 1))
    return out


# --------------------------------------------------------------------------- augmentation
@dataclass
class AugmentConfig:
    """Augmentation strengths (probabilities and ranges)."""

    flip_rot: bool = True
    scale_range: tuple[float, float] = (0.75, 1.33)
    p_scale: float = 0.5
    p_shift: float = 0.3
    max_shift: int = 24
    p_contrast: float = 0.75
    contrast_range: tuple[float, float] = (0.08, 1.0)
    noise_range: tuple[float, float] = (0.0, 0.12)
    p_gain_field: float = 0.5
    p_gamma: float = 0.4
    p_blur: float = 0.3
    p_clahe: float = 0.1
    foreground_bias: float = 0.8
    #: cap the added noise so that the crop's cells stay at least this many background-noise
    #: SDs above the background (median cell pixel minus median background pixel; 0: no
    #: cap). Contrast and noise augmentation can otherwise make cells invisible (issue #13:
    #: on MSC 6 % of augmented crops fell below 0.5, and continued training then called
    #: faint cells background); off by default until a training run has measured it.
    min_cell_to_noise: float = 0.0
    #: probability that each cell of a pair gets its own brightness: its contrast above the
    #: crop's background scaled by a factor drawn log-uniformly from ``cell_gain_range``
    #: (the same for the cell in both frames), the noise kept. Frame-level contrast changes
    #: are largely undone by the per-frame normalisation; cells of unequal brightness are
    #: not (the ``uneven`` validation proxy, engine/proxy.py). Off by default until a
    #: training run has measured it.
    p_cell_gain: float = 0.0
    cell_gain_range: tuple[float, float] = UNEVEN_RANGE
    #: probability that a training pair is deformed by one smooth random displacement field
    #: (the same for both frames, so the tracking targets stay true; random vectors on a
    #: grid of two of the crop's cell diameters, SD ``warp_strength`` diameters, as the
    #: ``warped`` validation proxy's :func:`~.proxy.warp_field` but over the whole crop):
    #: cell shapes the training movie does not have. Off by default until a training run
    #: has measured it.
    p_warp: float = 0.0
    warp_strength: float = 0.3


def _extract(arr: np.ndarray, y0: int, x0: int, h: int, w: int, fill) -> np.ndarray:
    """Window (h, w) at (y0, x0) of a 2D array, filled with ``fill`` outside it."""
    out = np.full((h, w), fill, dtype=arr.dtype)
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + h, arr.shape[0]), min(x0 + w, arr.shape[1])
    if yb > ya and xb > xa:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = arr[ya:yb, xa:xb]
    return out


def _resize(arr: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    mode = "nearest" if nearest else "bilinear"
    kw = {} if nearest else {"align_corners": False}
    r = F.interpolate(t, size=(size, size), mode=mode, **kw)[0, 0].numpy()
    return r.astype(arr.dtype) if nearest else r


def _intensity(
    img: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    params: dict,
    ref: np.ndarray | None = None,
    percentiles: tuple[float, float] = (1.0, 99.8),
):
    """Apply intensity augmentation with shared ``params`` (drawn once per pair).

    The crop comes from a frame normalised as a whole (its 1st / 99.8th percentiles at 0 / 1),
    as inference normalises every frame. After the changes the crop is normalised again with
    the levels the whole frame would have, not with the crop's own percentiles: a dim cell in
    an otherwise empty crop stays dim, as it is in a dim frame at inference. (Re-normalising
    each crop by itself stretched such cells to full brightness in training only; issue #13.)

    ``ref``: a subsample of the whole frame's pixels. The same changes (the field's median
    gain, contrast about the crop's background, gamma, noise) are applied to it and its
    ``percentiles`` are the levels, exactly what frame normalisation at inference does to a
    frame filmed that way. Without it the levels are moved analytically (the frame's 0 / 1
    mapped, widened by the noise's normal quantiles), which overestimates the upper level of
    a dim noisy frame: its background then sat lower in training (median 0.26, 95th
    percentile 0.38 on MSC crops) than in a dim frame normalised at inference (0.44 on the
    hard proxy of MSC 01; issue #13, docs/models.md).
    """
    img = img.copy()
    lo, hi = 0.0, 1.0  # where the frame's normalisation percentiles are now
    r = None if ref is None else ref.astype(np.float32)
    if "gain" in params:
        img = img * params["gain"]
        g = float(np.median(params["gain"]))
        lo, hi = lo * g, hi * g
        r = None if r is None else r * g
    if "contrast" in params:
        bg = float(np.percentile(img, 20))
        c = params["contrast"]
        img = bg + (img - bg) * c
        lo, hi = bg + (lo - bg) * c, bg + (hi - bg) * c
        r = None if r is None else bg + (r - bg) * c
    if "gamma" in params:
        img = np.clip(img, 0, None) ** params["gamma"]
        lo, hi = max(lo, 0.0) ** params["gamma"], max(hi, 0.0) ** params["gamma"]
        r = None if r is None else np.clip(r, 0, None) ** params["gamma"]
    if "blur" in params:
        img = ndimage.gaussian_filter(img, params["blur"])
    if "noise" in params:
        img = img + rng.normal(0, params["noise"], img.shape).astype(np.float32)
        # the 1st / 99.8th percentiles of a frame move by these normal quantiles of the noise
        lo, hi = lo - 2.33 * params["noise"], hi + 2.88 * params["noise"]
        if r is not None:
            r = r + rng.normal(0, params["noise"], r.shape).astype(np.float32)
    if "contrast" in params or "gamma" in params or "gain" in params:
        if r is not None:
            lo, hi = (float(v) for v in np.percentile(r, percentiles))
        img = (img - lo) / max(hi - lo, 1e-3)
    if "clahe" in params:
        from skimage.exposure import equalize_adapthist

        img = equalize_adapthist(np.clip(img, 0, 1), clip_limit=0.01).astype(np.float32)
    return img.astype(np.float32)


def _draw_intensity(rng: np.random.Generator, cfg: AugmentConfig, size: int) -> dict:
    p: dict = {}
    if rng.random() < cfg.p_gain_field:
        # a smooth field: 4 x 4 random gains, resized and blurred (sigma size / 8) at a
        # quarter of the crop's resolution, then resized to it (blurring at full
        # resolution cost 13 ms a crop for the same field to within 1 %)
        coarse = rng.uniform(0.25, 1.5, (4, 4)).astype(np.float32)
        small = max(size // 4, 8)
        field = ndimage.gaussian_filter(_resize(coarse, small, nearest=False), small / 8)
        p["gain"] = _resize(field, size, nearest=False)
    if rng.random() < cfg.p_contrast:
        p["contrast"] = float(rng.uniform(*cfg.contrast_range))
        p["noise"] = float(rng.uniform(*cfg.noise_range))
    if rng.random() < cfg.p_gamma:
        p["gamma"] = float(np.exp(rng.uniform(np.log(0.6), np.log(1.7))))
    if rng.random() < cfg.p_blur:
        p["blur"] = float(rng.uniform(0.5, 2.0))
    if rng.random() < cfg.p_clahe:
        p["clahe"] = True
    return p


# --------------------------------------------------------------------------- pair sampler
class PairSampler:
    """Random augmented crops of frame pairs (t-1, t) from training sequences.

    Args:
        sequences: the training sequences.
        frames: per sequence, the frames t usable as the later frame of a pair (t >= 1).
        crop_size: crop edge in pixels.
        augment: augmentation config, or None for plain crops.
        seed: random seed.
    """

    def __init__(
        self,
        sequences: list[TrainingSequence],
        frames: list[list[int]],
        crop_size: int = 256,
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ):
        self.sequences = sequences
        self.pairs = [(i, t) for i, fr in enumerate(frames) for t in fr if t >= 1]
        if not self.pairs:
            raise ValueError("no training pairs: every sequence needs at least two frames")
        # pairs of two entirely unknown frames (unannotated frames of sparse corrections)
        # teach nothing: leave them out
        known = [s.known_frames() for s in sequences]
        self.pairs = [(i, t) for i, t in self.pairs if known[i][t - 1] or known[i][t]]
        if not self.pairs:
            raise ValueError("no training pairs: the training frames hold no labels")
        # pairs whose frame t has full masks are drawn three times as often
        w = np.array([3.0 if t in set(sequences[i].seg_frames) else 1.0 for i, t in self.pairs])
        self.weights = w / w.sum()
        self.crop = crop_size
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self._refs: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def keep_sequences(self, keep: set[int]) -> None:
        """Draw pairs of the sequences with these indices only (their weights kept)."""
        idx = [k for k, (i, _) in enumerate(self.pairs) if i in keep]
        if not idx:
            raise ValueError("no training pairs left in the sequences kept")
        self.pairs = [self.pairs[k] for k in idx]
        self.weights = self.weights[idx] / self.weights[idx].sum()

    def set_share(self, group: set[int], share: float) -> None:
        """Draw the pairs of the sequences with these indices ``share`` of the time (their
        weights among themselves kept), the others the rest."""
        inside = np.array([i in group for i, _ in self.pairs])
        if inside.all() or not inside.any():
            return
        w = self.weights.copy()
        w[inside] *= share / w[inside].sum()
        w[~inside] *= (1.0 - share) / w[~inside].sum()
        self.weights = w / w.sum()

    #: pixels of a frame's subsample that intensity augmentation re-normalises with
    REFERENCE_PIXELS = 16384

    def _reference(self, i: int, t: int) -> np.ndarray:
        """A fixed, evenly strided subsample of frame ``t`` of sequence ``i`` (cached)."""
        key = (i, t)
        if key not in self._refs:
            frame = self.sequences[i].image[t]
            step = max(1, int(np.sqrt(frame.size / self.REFERENCE_PIXELS)))
            self._refs[key] = np.ascontiguousarray(frame[::step, ::step]).ravel()
        return self._refs[key]

    def sample(self) -> dict[str, np.ndarray]:
        """One augmented pair as numpy arrays (see :func:`collate`)."""
        rng, cfg, crop = self.rng, self.augment, self.crop
        i, t = self.pairs[rng.choice(len(self.pairs), p=self.weights)]
        s = self.sequences[i]
        size = crop
        if cfg and rng.random() < cfg.p_scale:
            size = round(crop / rng.uniform(*cfg.scale_range))
        h, w = s.image.shape[1:]
        fgy, fgx = None, None
        if rng.random() < (cfg.foreground_bias if cfg else 0.5):
            ys, xs = np.nonzero(s.track[t][::4, ::4])
            if len(ys):
                k = rng.integers(len(ys))
                fgy, fgx = ys[k] * 4, xs[k] * 4
        if fgy is None:
            y0 = int(rng.integers(min(0, h - size), max(h - size, 0) + 1))
            x0 = int(rng.integers(min(0, w - size), max(w - size, 0) + 1))
        else:
            y0 = int(fgy - rng.integers(size // 4, 3 * size // 4 + 1))
            x0 = int(fgx - rng.integers(size // 4, 3 * size // 4 + 1))
            y0 = int(np.clip(y0, min(0, h - size), max(h - size, 0)))
            x0 = int(np.clip(x0, min(0, w - size), max(w - size, 0)))
        dy = dx = 0
        if cfg and rng.random() < cfg.p_shift:
            dy, dx = (int(v) for v in rng.integers(-cfg.max_shift, cfg.max_shift + 1, 2))
        out: dict[str, list[np.ndarray]] = {"image": [], "seg": [], "track": [], "ignore": []}
        for tt, oy, ox in ((t - 1, y0 + dy, x0 + dx), (t, y0, x0)):
            img = _extract(s.image[tt], oy, ox, size, size, 0.0)
            seg = _extract(s.seg[tt], oy, ox, size, size, 0)
            trk = _extract(s.track[tt], oy, ox, size, size, 0)
            ign = _extract(s.ignore[tt], oy, ox, size, size, True)
            if size != crop:
                img = _resize(img, crop, False)
                seg, trk = _resize(seg, crop, True), _resize(trk, crop, True)
                ign = _resize(ign.astype(np.uint8), crop, True).astype(bool)
            out["image"].append(img)
            out["seg"].append(seg)
            out["track"].append(trk)
            out["ignore"].append(ign)
        arrs = {k: np.stack(v) for k, v in out.items()}  # (2, crop, crop), [t-1, t]
        if cfg and cfg.flip_rot:
            k = int(rng.integers(4))
            flip = bool(rng.integers(2))
            for key in arrs:
                a = np.rot90(arrs[key], k, axes=(1, 2))
                arrs[key] = np.ascontiguousarray(a[:, :, ::-1] if flip else a)
        if cfg and cfg.p_warp > 0 and rng.random() < cfg.p_warp:
            arrs = _warp_pair(arrs, rng, cfg.warp_strength)
        if cfg and cfg.p_cell_gain > 0 and rng.random() < cfg.p_cell_gain:
            arrs["image"] = _cell_gain(arrs, rng, cfg.cell_gain_range)
        if cfg:
            params = _draw_intensity(rng, cfg, crop)
            if cfg.min_cell_to_noise > 0 and "noise" in params:
                params["noise"] = _capped_noise(arrs, params, cfg.min_cell_to_noise)
            refs = [self._reference(i, tt) for tt in (t - 1, t)]
            arrs["image"] = np.stack(
                [
                    _intensity(im, rng, cfg, params, ref)
                    for im, ref in zip(arrs["image"], refs, strict=True)
                ]
            )
        return make_targets(arrs, s, t)


def _warp_pair(
    arrs: dict[str, np.ndarray], rng: np.random.Generator, strength: float
) -> dict[str, np.ndarray]:
    """The pair (images, SEG, TRA, ignore; each (2, crop, crop)) under one smooth random
    deformation sized by the crop's median cell diameter; unchanged without cells.

    The field is drawn on a coarse grid (two cell diameters a step), smoothed there and
    interpolated (cubic) to the crop, so a pair costs a few milliseconds; pixels pulled
    from beyond the crop's edge are mirrored (image and labels alike)."""
    labels = np.where(arrs["seg"] > 0, arrs["seg"], arrs["track"])
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas >= MIN_CROP_PIXELS]
    if not areas.size:
        return arrs
    diameter = 2.0 * float(np.sqrt(np.median(areas) / np.pi))
    shape = labels.shape[1:]
    step = 2.0 * diameter
    coarse_shape = (int(np.ceil(shape[0] / step)) + 3, int(np.ceil(shape[1] / step)) + 3)
    coarse = rng.normal(0.0, strength * diameter, (2, *coarse_shape))
    coarse = ndimage.gaussian_filter(coarse, (0, 0.5, 0.5), mode="wrap")
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    at = np.stack([g / step + 1.0 for g in grid])  # crop pixel -> coarse grid coordinate
    field = np.stack([ndimage.map_coordinates(c, at, order=3) for c in coarse])
    out = {"image": warp_movie(arrs["image"], field, mode="mirror").astype(arrs["image"].dtype)}
    for key in ("seg", "track"):
        out[key] = warp_movie(arrs[key], field, labels=True, mode="mirror")
    ignore = warp_movie(arrs["ignore"].astype(np.uint8), field, labels=True, mode="mirror")
    out["ignore"] = ignore.astype(bool)
    return out


def _cell_gain(
    arrs: dict[str, np.ndarray], rng: np.random.Generator, gain_range: tuple[float, float]
) -> np.ndarray:
    """The pair's images with every cell's contrast above the background scaled by its own
    factor (log-uniform in ``gain_range``, one per track id for both frames), the noise
    kept: what the ``uneven`` proxy does to a movie (:mod:`.proxy`)."""
    labels = np.where(arrs["seg"] > 0, arrs["seg"], arrs["track"])
    if not labels.any():
        return arrs["image"]
    factors = draw_cell_factors(labels, rng, gain_range)
    return np.stack(
        [
            scale_above_background(img, cell_factor_map(lab, factors), noise_sd(img), rng)
            for img, lab in zip(arrs["image"], labels, strict=True)
        ]
    )


def _signal_and_noise(image: np.ndarray, cells: np.ndarray) -> tuple[float, float] | None:
    """Median cell pixel minus median background pixel, and the background-noise SD
    (:func:`~.proxy.noise_sd`); None without both cell and background pixels."""
    fg = cells > 0
    if not fg.any() or fg.all():
        return None
    return float(np.median(image[fg]) - np.median(image[~fg])), noise_sd(image)


def cell_to_noise(image: np.ndarray, cells: np.ndarray) -> float | None:
    """Median cell pixel minus median background pixel, in background-noise SDs
    (:func:`~.proxy.noise_sd`); None without both cell and background pixels."""
    measured = _signal_and_noise(image, cells)
    if measured is None:
        return None
    signal, sd = measured
    return signal / sd if sd > 0 else float("inf")


def _capped_noise(arrs: dict, params: dict, least: float) -> float:
    """The drawn noise SD, lowered so that the crop's cells stay ``least`` noise SDs above the
    background after contrast ``c`` and noise ``n``: ``c s / sqrt((c sd)^2 + n^2) >= least``
    (``s`` and ``sd`` of the frame t crop before augmentation)."""
    measured = _signal_and_noise(arrs["image"][1], arrs["track"][1])
    if measured is None or measured[1] <= 0:
        return params["noise"]
    signal, sd = measured
    c = params.get("contrast", 1.0)
    room = (signal / least) ** 2 - sd**2
    return float(min(params["noise"], c * np.sqrt(room) if room > 0 else 0.0))


def make_targets(arrs: dict[str, np.ndarray], s: TrainingSequence, t: int) -> dict:
    """Consecutive instance ids, medoids and tracking targets for one cropped pair.

    ``track_labels`` numbers the cells at t by their predecessor at t-1 (1..``n_track``; the
    two daughters of a parent share a label) and ``track_centres`` holds each predecessor's
    medoid at t-1 (pixels).
    """
    crop = arrs["image"].shape[-1]
    labels = np.zeros((2, crop, crop), np.int64)
    centres = np.zeros((2, MAX_INSTANCES, 2), np.float32)
    n_inst = np.zeros(2, np.int64)
    ignore = arrs["ignore"].copy()
    for k in range(2):
        ids, counts = np.unique(arrs["seg"][k], return_counts=True)
        keep = (ids > 0) & (counts >= MIN_CROP_PIXELS)
        small = ids[(ids > 0) & ~keep]
        if small.size:
            ignore[k] |= np.isin(arrs["seg"][k], small)
        ids = ids[keep][:MAX_INSTANCES]
        lut = np.zeros(int(arrs["seg"][k].max()) + 1, np.int64)
        lut[ids] = np.arange(1, len(ids) + 1)
        labels[k] = lut[arrs["seg"][k]]
        over = (arrs["seg"][k] > 0) & (labels[k] == 0)
        ignore[k] |= over & ~np.isin(arrs["seg"][k], small)
        n_inst[k] = len(ids)
        centres[k, : len(ids)] = instance_medoids(
            labels[k].astype(np.int32), np.arange(1, len(ids) + 1)
        )
    # tracking: cells at t (masks or markers) whose predecessor is in the t-1 crop; one
    # target per predecessor, so both daughters of a parent form one instance (as separate
    # instances with the same centre, each would be a negative of the other's row)
    prev, cur = arrs["track"][0], arrs["track"][1]
    prev_ids, prev_counts = np.unique(prev, return_counts=True)
    prev_ok = set(prev_ids[(prev_ids > 0) & (prev_counts >= MIN_CROP_PIXELS)].tolist())
    cur_ids, cur_counts = np.unique(cur, return_counts=True)
    track_labels = np.zeros((crop, crop), np.int64)
    track_centres = np.zeros((MAX_INSTANCES, 2), np.float32)
    targets: dict[int, int] = {}  # predecessor id at t-1 -> track label 1..n_track
    for cid, cnt in zip(cur_ids, cur_counts, strict=True):
        if cid == 0 or cnt < MIN_CROP_PIXELS:
            continue
        pred = int(cid)
        if pred not in prev_ok and s.starts.get(pred) == t:
            pred = s.parents.get(pred, 0)
        if pred not in prev_ok:
            continue
        if pred not in targets:
            if len(targets) >= MAX_INSTANCES:
                continue
            targets[pred] = len(targets) + 1
        track_labels[cur == cid] = targets[pred]
    n_track = len(targets)
    if targets:
        relab = np.zeros(int(prev.max()) + 1, np.int32)
        relab[list(targets)] = list(targets.values())
        track_centres[:n_track] = instance_medoids(
            relab[prev], np.arange(1, n_track + 1, dtype=np.int32)
        )
    return {
        "image": arrs["image"].astype(np.float32),
        "labels": labels,
        "ignore": ignore,
        "centres": centres,
        "n_inst": n_inst,
        "track_labels": track_labels,
        "track_centres": track_centres,
        "n_track": np.int64(n_track),
    }


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch of tensors (B leading)."""
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}


def split_frames(
    n_frames: int,
    val_fraction: float,
    seg_frames: list[int] | None = None,
    window: tuple[int, int] | None = None,
) -> tuple[list[int], list[int]]:
    """Training pairs and validation frames of one sequence; pairs never straddle the split.

    The validation window is the last ``val_fraction`` of the frames. If ``seg_frames`` (the
    frames with full masks) is given and none of them lies in that tail (sparse annotations,
    e.g. GOWT1 01 has masks only in frames 2-47), the window is instead the span of the last
    ``val_fraction`` of the annotated frames (at least one), and training uses the frames on
    both sides of it. ``window=(start, stop)`` chooses the validation frames explicitly
    (clipped to the sequence; ``val_fraction`` is then unused).

    Returns:
        frames t usable as the later frame of a training pair (t-1 and t both outside the
        window), and the validation frames.
    """
    if window is not None:
        lo, hi = max(0, int(window[0])), min(n_frames, int(window[1]))
        if lo >= hi:
            raise ValueError(
                f"validation frames {window[0]}:{window[1]} lie outside the {n_frames} frames"
            )
        train = [t for t in range(1, n_frames) if not (lo <= t < hi or lo <= t - 1 < hi)]
        return train, list(range(lo, hi))
    n_val = round(n_frames * val_fraction)
    lo, hi = n_frames - n_val, n_frames  # window [lo, hi)
    if seg_frames and n_val > 0 and not any(lo <= t < hi for t in seg_frames):
        ann = sorted(seg_frames)
        k = max(1, round(len(ann) * val_fraction))
        lo, hi = ann[-k], ann[-1] + 1
    train = [t for t in range(1, n_frames) if not (lo <= t < hi or lo <= t - 1 < hi)]
    return train, list(range(lo, hi))


def keep_frames(seq: TrainingSequence, frames: slice) -> TrainingSequence:
    """The same sequence restricted to a frame range (e.g. a few annotated frames)."""
    idx = np.arange(seq.n_frames)[frames]
    if idx.size == 0:
        raise ValueError(f"{seq.name}: frame range {frames} selects no frame")
    lo = int(idx[0])
    if not np.array_equal(idx, np.arange(lo, lo + idx.size)):
        raise ValueError(f"{seq.name}: frame range must be contiguous, got {frames}")
    return TrainingSequence(
        name=f"{seq.name}[{lo}:{lo + idx.size}]",
        image=seq.image[idx],
        seg=seq.seg[idx],
        track=seq.track[idx],
        ignore=seq.ignore[idx],
        parents=seq.parents,
        starts={k: v - lo for k, v in seq.starts.items()},
        seg_frames=[t - lo for t in seq.seg_frames if lo <= t < lo + idx.size],
        replay=seq.replay,
    )


def only_frames(seq: TrainingSequence, frames: list[int]) -> TrainingSequence:
    """The same sequence with labels kept only on ``frames``; every other frame is unknown.

    This is what a person's corrections look like: a few annotated frames in a movie.
    """
    keep = np.zeros(seq.n_frames, bool)
    keep[list(frames)] = True
    drop = ~keep
    seg, track, ignore = seq.seg.copy(), seq.track.copy(), seq.ignore.copy()
    seg[drop], track[drop], ignore[drop] = 0, 0, True
    return TrainingSequence(
        name=f"{seq.name}{{{','.join(str(t) for t in frames)}}}",
        image=seq.image,
        seg=seg,
        track=track,
        ignore=ignore,
        parents=seq.parents,
        starts=seq.starts,
        seg_frames=[t for t in seq.seg_frames if keep[t]],
        replay=seq.replay,
    )
