"""How far to trust each cell, link and division of a tracking result (issue #17).

Qt-free. :func:`iter_confidence` scores a tracked label movie (label = track id) with its
lineage and, where they are still known, the network outputs that made it
(:class:`~.outputs.FrameOutput`, one per frame of a run), and returns a
:class:`ConfidenceReport`: a confidence in [0, 1] for every cell (one track in one frame),
every link (a cell to its predecessor in the previous frame: the same track, or the parent
for a daughter's first frame) and every division, and the *suspects*, ranked from the least
trustworthy, each with a one-line reason.

Cues (each a confidence in [0, 1]; an item's confidence is its weakest cue, which names the
reason). ``c`` is the cell's predicted centre (the median over its pixels of pixel + offset),
the kernel is the clustering kernel at ``c`` (bandwidth = median over the cell's pixels),
``r`` its radius (score = ``score_threshold``), ``R`` the cell's equivalent radius.

Cells (needs outputs):

- ``seediness``: mean seediness over the cell, from the threshold (0) to half-way between
  threshold and 1 (1): a dim cell may be background.
- ``cohesion``: share of the cell's pixels whose predicted centre scores above the score
  threshold for ``c``: two cells merged into one label point to two centres.
- ``centre``: share of the cell's predicted centres that land inside the cell itself, and
  the distance of ``c`` to the nearest other cell's centre in ``2 r`` units: the pieces of a
  cell cut in two point to one centre.

Links (``vote`` and ``agreement`` need outputs):

- ``vote``: share of the cell's tracking votes (pixel + tracking offset, rounded) landing on
  the predecessor.
- ``agreement``: distance of the mean tracking target to the predecessor's centre, in ``R``
  of the predecessor (1 at 0, 0 at ``R``).
- ``area``: area ratio to the predecessor (half the parent's area for a daughter), 1 at
  0.9 or closer to 1, 0 at 0.4 or further.
- ``motion``: centroid displacement in predecessor diameters (1 up to one, 0 at two).

Divisions: the daughters' vote shares for the parent, the daughters' centres (two centres
closer than ``2 r`` are one cell cut in two), their size balance (1 from 1:2, 0.5 at 1:4),
their summed area against the parent's (1 within 0.8-1.25), a daughter lasting one frame
(0.3), more than two daughters (0.3).

Tracks starting (ending) without parent (children) other than in the first (last) frame
with cells: when most tracking votes of the start (of a cell one frame after the end) land
on another track, the link was broken (confidence = 1 - that share); otherwise a cell
entering or leaving at the image border (within ``R``) is plausible (0.9) and one appearing or
vanishing elsewhere is not (0.5). An end explained by a start reported already is not listed
again.

Without outputs (labels drawn or corrected by hand, results read from files) only the area,
motion, division-size and track start/end cues are used.

:func:`truth_errors` lists the errors of a result against ground truth (missed and false
cells, merges, splits, wrong links) in the same :class:`Suspect` form, for the review queue.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from .cluster import ClusterParams
from .outputs import FrameOutput
from .progress import Progress, run

__all__ = [
    "ERROR_KINDS",
    "KINDS",
    "ConfidenceReport",
    "Suspect",
    "iter_confidence",
    "score_tracking",
    "truth_errors",
]

#: Kinds of suspects from the network's outputs and from the tracks' shape.
KINDS = ("cell", "link", "division", "track-start", "track-end")
#: Kinds of errors found against ground truth (:func:`truth_errors`).
ERROR_KINDS = ("missed", "false-positive", "merge", "split", "link-error")
#: Items at or above this confidence are not listed as suspects.
LIST_BELOW = 0.95
#: Confidence of a track that starts / ends at the image border, and of one elsewhere.
BORDER_CONFIDENCE = 0.9
INNER_CONFIDENCE = 0.5


@dataclass(frozen=True)
class Suspect:
    """One entry of the review queue.

    Attributes:
        frame: frame index (of the labels given).
        label: the track id (label value) concerned; for a division the parent, for a
            missed cell the ground-truth track id.
        kind: one of :data:`KINDS` or :data:`ERROR_KINDS`.
        confidence: 0 (surely wrong) .. 1 (trustworthy); errors against ground truth are 0.
        reason: one line saying why.
        y, x: where to look (pixels).
        cue: the weakest cue (``"seediness"``, ``"cohesion"``, ...) or the error kind.
    """

    frame: int
    label: int
    kind: str
    confidence: float
    reason: str
    y: float
    x: float
    cue: str = ""

    @property
    def key(self) -> tuple[int, int, str]:
        """What identifies the item across recomputations: ``(frame, label, kind)``."""
        return (self.frame, self.label, self.kind)


@dataclass
class ConfidenceReport:
    """Confidences of one tracking result.

    Attributes:
        cells: one entry per (frame, track) in order of frame, then label: 1-D arrays ``t``,
            ``label``, ``y``, ``x`` (centroid), ``area``, ``confidence`` (the cell's own
            cues), ``link_confidence`` (of the link to its predecessor, for a daughter's
            first frame at most the division's; NaN without one), and one array per cue (NaN
            where not computed).
        divisions: ``parent``, ``t`` (daughters' first frame), ``confidence``.
        suspects: items below :data:`LIST_BELOW`, least confident first.
    """

    cells: dict[str, np.ndarray]
    divisions: dict[str, np.ndarray]
    suspects: list[Suspect] = field(default_factory=list)

    def node_confidence(self) -> np.ndarray:
        """Per cell: the lower of its own confidence and its link's (NaN counts as 1)."""
        link = np.nan_to_num(self.cells["link_confidence"], nan=1.0)
        return np.minimum(self.cells["confidence"], link)

    def track_confidence(self) -> dict[int, float]:
        """Per track id: the lowest :meth:`node_confidence` of its cells."""
        out: dict[int, float] = {}
        for lab, c in zip(
            self.cells["label"].tolist(), self.node_confidence().tolist(), strict=True
        ):
            out[lab] = min(out.get(lab, 1.0), c)
        return out


# --------------------------------------------------------------------------- helpers
def _clip01(v):
    return np.clip(v, 0.0, 1.0)


def _group_median(values: np.ndarray, inv: np.ndarray, n: int) -> np.ndarray:
    """Median (lower middle) of ``values`` per group ``inv`` (0..n-1, every group used)."""
    order = np.lexsort((values, inv))
    counts = np.bincount(inv, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return values[order][starts + (counts - 1) // 2]


def _area_confidence(ratio):
    r = np.minimum(ratio, 1.0 / np.maximum(ratio, 1e-9))
    return _clip01((r - 0.4) / 0.5)


@dataclass
class _Frame:
    """Per-cell values of one frame (arrays aligned with ``ids``)."""

    ids: np.ndarray
    area: np.ndarray
    cy: np.ndarray  # centroid
    cx: np.ndarray
    radius: np.ndarray  # equivalent radius
    near_border: np.ndarray
    # with outputs:
    py: np.ndarray | None = None  # predicted centre
    px: np.ndarray | None = None
    kernel_r: np.ndarray | None = None
    seed: np.ndarray | None = None
    seed_mean: np.ndarray | None = None
    cohesion: np.ndarray | None = None
    own: np.ndarray | None = None
    pair: np.ndarray | None = None
    pair_with: np.ndarray | None = None

    def index(self, label: int) -> int:
        i = int(np.searchsorted(self.ids, label))
        return i if i < self.ids.size and self.ids[i] == label else -1


def _frame_stats(
    lab: np.ndarray, out: FrameOutput | None, params: ClusterParams
) -> tuple[_Frame, np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell values of one frame; also the foreground pixels (ys, xs) and their cell
    index."""
    h, w = lab.shape
    ys, xs = np.nonzero(lab)
    values = lab[ys, xs].astype(np.int64)
    ids, inv, area = np.unique(values, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    n = ids.size
    cy = np.bincount(inv, ys, n) / np.maximum(area, 1)
    cx = np.bincount(inv, xs, n) / np.maximum(area, 1)
    radius = np.sqrt(area / math.pi)
    margin = np.maximum(radius, 2.0)
    dist = np.minimum.reduce([ys, xs, h - 1 - ys, w - 1 - xs]).astype(np.float64)
    closest = np.full(n, np.inf)
    np.minimum.at(closest, inv, dist)
    f = _Frame(ids, area, cy, cx, radius, closest <= margin)
    if out is None or n == 0:
        return f, ys, xs, inv
    seed = np.nan_to_num(out.seediness[ys, xs].astype(np.float64))
    ey = ys + np.nan_to_num(out.offsets[0, ys, xs].astype(np.float64))
    ex = xs + np.nan_to_num(out.offsets[1, ys, xs].astype(np.float64))
    py, px = _group_median(ey, inv, n), _group_median(ex, inv, n)
    bw_y = _group_median(np.nan_to_num(out.bandwidth[0, ys, xs].astype(np.float64)), inv, n)
    bw_x = _group_median(np.nan_to_num(out.bandwidth[1, ys, xs].astype(np.float64)), inv, n)
    g2 = params.grid_spacing**2
    a_y, a_x = g2 * np.exp(params.w_s * bw_y), g2 * np.exp(params.w_s * bw_x)
    score = np.exp(-a_y[inv] * (ey - py[inv]) ** 2 - a_x[inv] * (ex - px[inv]) ** 2)
    f.cohesion = np.bincount(inv, score > params.score_threshold, n) / area
    ln = -math.log(params.score_threshold)
    f.kernel_r = np.sqrt(ln / np.sqrt(a_y * a_x))  # radius where the score = threshold
    thr = params.seed_threshold
    f.seed_mean = np.bincount(inv, seed, n) / area
    f.seed = _clip01(2.0 * (f.seed_mean - thr) / max(1.0 - thr, 1e-6))
    qy = np.clip(np.rint(ey), 0, h - 1).astype(np.int64)
    qx = np.clip(np.rint(ex), 0, w - 1).astype(np.int64)
    f.own = np.bincount(inv, lab[qy, qx] == values, n) / area
    f.py, f.px = py, px
    f.pair = np.ones(n)
    f.pair_with = np.zeros(n, np.int64)
    if n > 1:
        tree = cKDTree(np.stack([py, px], 1))
        dist, nearest = tree.query(np.stack([py, px], 1), k=2)
        d, j = dist[:, 1], nearest[:, 1]
        scale = 2.0 * np.maximum(np.maximum(f.kernel_r, f.kernel_r[j]), 1.0)
        f.pair = _clip01(d / scale)
        f.pair_with = ids[j]
    return f, ys, xs, inv


def _votes(
    lab: np.ndarray, out: FrameOutput, prev: np.ndarray, ys, xs, inv, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tracking votes of the cells of a frame on the previous frame's labels: the
    ``(cell index, previous label, count)`` triples (background excluded), and each cell's
    mean target (y, x)."""
    h, w = lab.shape
    ty = ys + np.nan_to_num(out.track_offsets[0, ys, xs].astype(np.float64))
    tx = xs + np.nan_to_num(out.track_offsets[1, ys, xs].astype(np.float64))
    counts = np.maximum(np.bincount(inv, minlength=n), 1)
    mean_t = np.stack([np.bincount(inv, ty, n), np.bincount(inv, tx, n)], 1) / counts[:, None]
    qy = np.clip(np.rint(ty), 0, h - 1).astype(np.int64)
    qx = np.clip(np.rint(tx), 0, w - 1).astype(np.int64)
    target = prev[qy, qx].astype(np.int64)
    hit = target > 0
    if not hit.any():
        return np.zeros((0, 3), np.int64), mean_t, counts
    pairs, cnt = np.unique(np.stack([inv[hit], target[hit]], 1), axis=0, return_counts=True)
    return np.column_stack([pairs, cnt]), mean_t, counts


# --------------------------------------------------------------------------- main
def iter_confidence(
    labels: np.ndarray,
    lineage: np.ndarray | None = None,
    outputs: Sequence[FrameOutput] | None = None,
    *,
    params: ClusterParams | None = None,
    output_start: int = 0,
) -> Generator[Progress, None, ConfidenceReport]:
    """Score every cell, link and division of a tracked movie (see the module docstring).

    Args:
        labels: (T, Y, X) integer labels, label = track id (frames without cells are fine).
        lineage: (N, 4) ``[id, start, end, parent]``; only the parents are used (presence
            comes from ``labels``). None: no divisions.
        outputs: the network outputs of frames ``output_start, output_start + 1, ...`` of
            ``labels`` (e.g. a run's kept outputs); None or empty: geometric cues only.
        params: the clustering settings that made the labels (score and seediness
            thresholds, grid spacing); default ``ClusterParams()``.
        output_start: frame of ``labels`` that ``outputs[0]`` belongs to.

    Yields:
        Progress per frame.

    Returns:
        ConfidenceReport.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels: {labels.dtype} array of shape {labels.shape}; expected (T, Y, X) integers"
        )
    params = params or ClusterParams()
    outputs = outputs if outputs is not None else []  # indexed frame by frame (may be lazy)
    n_t = labels.shape[0]
    n_out = len(outputs)
    if n_out and outputs[0].shape != labels.shape[1:]:
        raise ValueError(
            f"outputs[0] has frame shape {outputs[0].shape}; the labels have {labels.shape[1:]}"
        )
    parent: dict[int, int] = {}
    if lineage is not None:
        for tid, _s, _e, par in np.asarray(lineage, np.int64).reshape(-1, 4).tolist():
            if par:
                parent[int(tid)] = int(par)

    def out_of(t: int) -> FrameOutput | None:
        i = t - output_start
        out = outputs[i] if 0 <= i < n_out else None
        if out is not None and out.shape != labels.shape[1:]:
            raise ValueError(
                f"outputs[{i}] has frame shape {out.shape}; the labels have {labels.shape[1:]}"
            )
        return out

    frames: list[_Frame] = []
    cols: dict[str, list] = {k: [] for k in _CELL_COLUMNS}
    vote_of: dict[tuple[int, int], float] = {}  # (t, label) -> vote share of its link
    votes_into: dict[tuple[int, int], tuple[float, int]] = {}  # (t-1, label) <- best share
    start_votes: dict[tuple[int, int], tuple[float, int]] = {}  # start cell -> best target
    suspects: list[Suspect] = []
    first_seen: dict[int, int] = {}
    last_seen: dict[int, int] = {}
    prev_lab: np.ndarray | None = None
    yield Progress(0, n_t, f"scoring {n_t} frame(s)")
    for t in range(n_t):
        lab = labels[t]
        out = out_of(t)
        f, ys, xs, inv = _frame_stats(lab, out, params)
        frames.append(f)
        n = f.ids.size
        for lab_id in f.ids.tolist():
            first_seen.setdefault(lab_id, t)
            last_seen[lab_id] = t
        # ---- cells
        cue = {k: np.full(n, np.nan) for k in ("seediness", "cohesion", "centre")}
        if f.seed is not None:
            cue["seediness"] = f.seed
            cue["cohesion"] = f.cohesion
            cue["centre"] = np.minimum(f.own, f.pair)
        # ---- links: predecessor of each cell at t-1
        link = {k: np.full(n, np.nan) for k in ("vote", "agreement", "area", "motion")}
        pred = np.zeros(n, np.int64)
        if t > 0 and frames[t - 1].ids.size and n:
            pf = frames[t - 1]
            votes = mean_t = counts = None
            if out is not None and prev_lab is not None:
                votes, mean_t, counts = _votes(lab, out, prev_lab, ys, xs, inv, n)
                _record_votes(votes, counts, f.ids, t, votes_into, start_votes)
            for i, lab_id in enumerate(f.ids.tolist()):
                j = pf.index(lab_id)
                division = False
                if j < 0:
                    par = parent.get(lab_id, 0)
                    if par and first_seen[lab_id] == t:
                        j = pf.index(par)
                        division = j >= 0
                if j < 0:
                    continue
                pred[i] = pf.ids[j]
                expected = pf.area[j] / (2.0 if division else 1.0)
                link["area"][i] = _area_confidence(f.area[i] / expected)
                d = math.hypot(f.cy[i] - pf.cy[j], f.cx[i] - pf.cx[j])
                link["motion"][i] = _clip01(2.0 - d / (2.0 * pf.radius[j]))
                if votes is not None:
                    mine = votes[(votes[:, 0] == i) & (votes[:, 1] == pf.ids[j])]
                    link["vote"][i] = (mine[0, 2] if len(mine) else 0) / counts[i]
                    cy_p = pf.py[j] if pf.py is not None else pf.cy[j]
                    cx_p = pf.px[j] if pf.px is not None else pf.cx[j]
                    d = math.hypot(mean_t[i, 0] - cy_p, mean_t[i, 1] - cx_p)
                    link["agreement"][i] = _clip01(1.0 - d / max(pf.radius[j], 1.0))
        cell_conf, cell_cue = _weakest(cue, n)
        link_conf, link_cue = _weakest(link, n)
        link_conf[pred == 0] = np.nan
        for i, lab_id in enumerate(f.ids.tolist()):
            y, x = float(f.cy[i]), float(f.cx[i])
            if cell_conf[i] < LIST_BELOW:
                reason = _cell_reason(cell_cue[i], f, i, params.seed_threshold)
                suspects.append(
                    Suspect(t, lab_id, "cell", float(cell_conf[i]), reason, y, x, cell_cue[i])
                )
            if pred[i] and link_conf[i] < LIST_BELOW:
                reason = _link_reason(link_cue[i], lab_id, int(pred[i]), t, link, i)
                suspects.append(
                    Suspect(t, lab_id, "link", float(link_conf[i]), reason, y, x, link_cue[i])
                )
            if pred[i]:
                vote_of[(t, lab_id)] = float(link["vote"][i])
        cols["t"].append(np.full(n, t))
        cols["label"].append(f.ids)
        cols["y"].append(f.cy)
        cols["x"].append(f.cx)
        cols["area"].append(f.area)
        cols["confidence"].append(cell_conf)
        cols["link_confidence"].append(link_conf)
        for k in ("seediness", "cohesion", "centre"):
            cols[k].append(cue[k])
        for k in ("vote", "agreement", "area_change", "motion"):
            cols[k].append(link["area" if k == "area_change" else k])
        prev_lab = lab
        yield Progress(t + 1, n_t, f"scored frame {t + 1}/{n_t}", {"frame": t})

    cells = {
        k: (np.concatenate(v) if v else np.zeros(0)).astype(
            np.int64 if k in ("t", "label", "area") else np.float64
        )
        for k, v in cols.items()
    }
    present = [t for t, f in enumerate(frames) if f.ids.size]
    t_min, t_max = (present[0], present[-1]) if present else (0, -1)
    children: dict[int, list[int]] = {}
    for child, par in parent.items():
        if child in first_seen and par in last_seen and first_seen[child] == last_seen[par] + 1:
            children.setdefault(par, []).append(child)
    div_rows = _divisions(frames, children, first_seen, last_seen, vote_of, t_max, suspects)
    # a daughter's link is the division: at most as trusted as the division
    for par, t, conf in zip(*(div_rows[k].tolist() for k in ("parent", "t", "confidence")),
                            strict=True):  # fmt: skip
        for kid in children[par]:
            row = (cells["t"] == t) & (cells["label"] == kid)
            cells["link_confidence"][row] = np.fmin(cells["link_confidence"][row], conf)
    _starts_and_ends(
        frames, parent, children, first_seen, last_seen, t_min, t_max, start_votes,
        votes_into, suspects, n_out > 0,
    )  # fmt: skip
    suspects.sort(key=lambda s: (s.confidence, s.frame, s.label, s.kind))
    return ConfidenceReport(cells, div_rows, suspects)


_CELL_COLUMNS = (
    "t", "label", "y", "x", "area", "confidence", "link_confidence", "seediness", "cohesion",
    "centre", "vote", "agreement", "area_change", "motion",
)  # fmt: skip


def _weakest(cues: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, list[str]]:
    """Per item: the lowest cue (NaN = not computed; 1 if none) and its name."""
    names = list(cues)
    stack = np.stack([cues[k] for k in names]) if names else np.ones((1, n))
    filled = np.where(np.isnan(stack), np.inf, stack)
    idx = np.argmin(filled, 0) if n else np.zeros(0, int)
    low = filled[idx, np.arange(n)] if n else np.zeros(0)
    conf = np.where(np.isinf(low), 1.0, low)
    return conf.astype(np.float64), [names[i] if np.isfinite(v) else "" for i, v in
                                     zip(idx.tolist(), low.tolist(), strict=True)]  # fmt: skip


def _record_votes(votes, counts, ids, t, votes_into, start_votes) -> None:
    """Remember, per cell at t, its best-voted cell at t-1 (for track starts), and per cell
    at t-1 the best share of a cell at t voting for it (for track ends)."""
    best: dict[int, tuple[float, int]] = {}
    for i, target, cnt in votes.tolist():
        share = cnt / counts[i]
        if share > best.get(i, (0.0, 0))[0]:
            best[i] = (share, target)
        key = (t - 1, target)
        if share > votes_into.get(key, (0.0, 0))[0]:
            votes_into[key] = (share, int(ids[i]))
    for i, (share, target) in best.items():
        start_votes[(t, int(ids[i]))] = (share, target)


def _cell_reason(cue: str, f: _Frame, i: int, threshold: float) -> str:
    if cue == "seediness":
        return f"dim: mean seediness {f.seed_mean[i]:.2f} (threshold {threshold:.2f})"
    if cue == "cohesion":
        return f"possible merge: only {f.cohesion[i]:.0%} of its pixels point to one centre"
    if cue == "centre":
        if f.pair[i] <= f.own[i]:
            return f"possible split: shares its predicted centre with cell {f.pair_with[i]}"
        return f"possible split: {1 - f.own[i]:.0%} of its pixels point outside it"
    return "low confidence"


def _link_reason(cue: str, lab: int, pred: int, t: int, link, i: int) -> str:
    to = f"link {pred} (frame {t - 1}) -> {lab}"
    if cue == "vote":
        return f"{to}: only {link['vote'][i]:.0%} of its tracking votes land on {pred}"
    if cue == "agreement":
        return f"{to}: tracking offsets point away from {pred}'s centre"
    if cue == "area":
        return f"{to}: sudden change of area"
    if cue == "motion":
        return f"{to}: sudden jump in position"
    return f"{to}: low confidence"


def _divisions(frames, children, first_seen, last_seen, vote_of, t_max, suspects) -> dict:
    rows = {"parent": [], "t": [], "confidence": []}
    for par, kids in sorted(children.items()):
        if len(kids) < 2:
            continue  # one child right after the parent: a continuation, not a division
        t = first_seen[kids[0]]
        pf, f = frames[t - 1], frames[t]
        j = pf.index(par)
        idx = [f.index(k) for k in kids]
        cues: dict[str, float] = {}
        if len(kids) > 2:
            cues["daughters"] = 0.3
        areas = np.array([f.area[i] for i in idx], float)
        s = areas.sum() / pf.area[j]
        cues["area"] = float(_clip01((min(s, 1 / s) - 0.4) / 0.4))
        top = np.sort(areas)[::-1][:2]
        cues["balance"] = float(_clip01((top[1] / top[0]) / 0.5))
        shares = [vote_of.get((t, k), np.nan) for k in kids]
        if not np.all(np.isnan(shares)):
            cues["vote"] = float(np.nanmin(shares))
        if f.py is not None:
            a, b = idx[0], idx[1]
            d = math.hypot(f.py[a] - f.py[b], f.px[a] - f.px[b])
            scale = 2.0 * max(f.kernel_r[a], f.kernel_r[b], 1.0)
            cues["centres"] = float(_clip01(d / scale))
        short = [k for k in kids if last_seen[k] == t and t < t_max and k not in children]
        if short:
            cues["short"] = 0.3
        cue = min(cues, key=cues.get)
        conf = cues[cue]
        rows["parent"].append(par)
        rows["t"].append(t)
        rows["confidence"].append(conf)
        if conf < LIST_BELOW:
            names = " and ".join(str(k) for k in kids)
            reason = _division_reason(cue, par, names, cues, s, top, short)
            y = float(np.mean([f.cy[i] for i in idx]))
            x = float(np.mean([f.cx[i] for i in idx]))
            suspects.append(Suspect(t, par, "division", conf, reason, y, x, cue))
    return {k: np.asarray(v, np.float64 if k == "confidence" else np.int64)
            for k, v in rows.items()}  # fmt: skip


def _division_reason(cue, par, names, cues, s, top, short) -> str:
    head = f"division {par} -> {names}"
    if cue == "daughters":
        return f"{par} divides into {names}"
    if cue == "area":
        return f"{head}: the daughters' area is {s:.1f}x the parent's"
    if cue == "balance":
        return f"{head}: daughters of unequal size ({int(top[1])} vs {int(top[0])} px)"
    if cue == "vote":
        return f"{head}: only {cues['vote']:.0%} of a daughter's tracking votes land on {par}"
    if cue == "centres":
        return f"{head}: the daughters share one predicted centre (one cell cut in two)"
    return f"{head}: daughter {short[0]} lasts one frame"


def _starts_and_ends(
    frames, parent, children, first_seen, last_seen, t_min, t_max, start_votes, votes_into,
    suspects, have_outputs,
) -> None:  # fmt: skip
    explained: set[tuple[int, int]] = set()  # (frame, label) of ends a start explains
    for lab, t in sorted(first_seen.items(), key=lambda kv: (kv[1], kv[0])):
        if t <= t_min or (parent.get(lab, 0) in last_seen and last_seen[parent[lab]] == t - 1):
            continue
        f = frames[t]
        i = f.index(lab)
        share, target = start_votes.get((t, lab), (0.0, 0))
        if have_outputs and share >= 0.5:
            conf = 1.0 - share
            ends_here = last_seen.get(target) == t - 1 and target not in children
            if ends_here:
                explained.add((t - 1, target))
            what = f"track {target} ends at frame {t - 1}" if ends_here else f"track {target}"
            reason = (
                f"broken link? starts without parent, but {share:.0%} of its tracking votes "
                f"land on {what}"
            )
            cue = "vote"
        elif f.near_border[i]:
            conf, reason, cue = BORDER_CONFIDENCE, "enters at the image border", "border"
        else:
            conf = INNER_CONFIDENCE
            reason, cue = "appears mid-movie away from the border, without parent", "appears"
        if conf < LIST_BELOW:
            suspects.append(
                Suspect(t, lab, "track-start", conf, reason, float(f.cy[i]), float(f.cx[i]), cue)
            )
    for lab, t in sorted(last_seen.items(), key=lambda kv: (kv[1], kv[0])):
        if t >= t_max or lab in children or (t, lab) in explained:
            continue
        f = frames[t]
        i = f.index(lab)
        share, succ = votes_into.get((t, lab), (0.0, 0))
        if have_outputs and share >= 0.5:
            conf = 1.0 - share
            reason = (
                f"broken link? ends without children, but {share:.0%} of the tracking votes "
                f"of cell {succ} (frame {t + 1}) land on it"
            )
            cue = "vote"
        elif f.near_border[i]:
            conf, reason, cue = BORDER_CONFIDENCE, "leaves at the image border", "border"
        else:
            conf = INNER_CONFIDENCE
            reason, cue = "vanishes mid-movie away from the border, without children", "vanishes"
        if conf < LIST_BELOW:
            suspects.append(
                Suspect(t, lab, "track-end", conf, reason, float(f.cy[i]), float(f.cx[i]), cue)
            )


def score_tracking(
    labels: np.ndarray,
    lineage: np.ndarray | None = None,
    outputs: Sequence[FrameOutput] | None = None,
    *,
    params: ClusterParams | None = None,
    output_start: int = 0,
) -> ConfidenceReport:
    """:func:`iter_confidence` run to completion."""
    return run(iter_confidence(labels, lineage, outputs, params=params, output_start=output_start))


# --------------------------------------------------------------------------- ground truth
def _match(res: np.ndarray, gt: np.ndarray):
    """CTC detection matching of one frame: a result cell matches a true cell when it covers
    more than half of it. Returns (gt ids, their matched result id or 0, result ids, result
    overlaps {res id: [gt ids covered > half]}, {gt id: [(res id, pixels)]})."""
    fg = gt > 0
    pairs, counts = np.unique(
        np.stack([gt[fg].astype(np.int64), res[fg].astype(np.int64)], 1), axis=0,
        return_counts=True,
    )  # fmt: skip
    gt_ids, gt_area = np.unique(gt[fg], return_counts=True)
    area = dict(zip(gt_ids.tolist(), gt_area.tolist(), strict=True))
    match: dict[int, int] = {}
    covers: dict[int, list[int]] = {}
    overlap: dict[int, list[tuple[int, int]]] = {}
    for (g, r), c in zip(pairs.tolist(), counts.tolist(), strict=True):
        if r:
            overlap.setdefault(g, []).append((r, c))
        if r and 2 * c > area[g]:
            match[g] = r
            covers.setdefault(r, []).append(g)
    return gt_ids.tolist(), match, covers, overlap


def truth_errors(
    labels: np.ndarray,
    lineage: np.ndarray | None,
    gt_labels: np.ndarray,
    gt_lineage: np.ndarray | None,
) -> list[Suspect]:
    """Errors of a tracking result against ground truth, as review-queue items.

    Cells are matched per frame as the CTC DET measure does (a result cell matches a true
    cell, e.g. a TRA marker, when it covers more than half of it). Listed, with confidence
    0: ``missed`` (a true cell no result cell matches), ``merge`` (a result cell matching
    several true cells), ``split`` (a result cell matching none that covers part of a true
    cell matched by another), ``false-positive`` (a result cell matching none otherwise),
    ``link-error`` (a matched cell whose predecessor in the result, the same track at t-1 or
    its parent, does not match its true predecessor).
    """
    labels, gt_labels = np.asarray(labels), np.asarray(gt_labels)
    if labels.ndim == 2:
        labels, gt_labels = labels[None], gt_labels[None]
    if labels.shape != gt_labels.shape:
        raise ValueError(
            f"result labels of shape {labels.shape} and ground truth of shape "
            f"{gt_labels.shape}; expected the same shape"
        )

    def parents(lin):
        return {int(r[0]): int(r[3]) for r in np.asarray(lin if lin is not None else
                np.zeros((0, 4)), np.int64).reshape(-1, 4) if r[3]}  # fmt: skip

    res_parent, gt_parent = parents(lineage), parents(gt_lineage)
    out: list[Suspect] = []
    prev_match: dict[int, int] = {}  # gt id -> result id at t-1
    prev_res: set[int] = set()
    prev_gt: set[int] = set()
    res_first: dict[int, int] = {}
    gt_first: dict[int, int] = {}
    for t in range(labels.shape[0]):
        res, gt = labels[t], gt_labels[t]
        gt_ids, match, covers, overlap = _match(res, gt)
        res_ids, inv = np.unique(res[res > 0], return_inverse=True)
        ys, xs = np.nonzero(res > 0)
        n = res_ids.size
        area = np.bincount(inv.ravel(), minlength=n)
        cy = np.bincount(inv.ravel(), ys, n) / np.maximum(area, 1)
        cx = np.bincount(inv.ravel(), xs, n) / np.maximum(area, 1)
        pos = {int(r): (float(cy[i]), float(cx[i])) for i, r in enumerate(res_ids.tolist())}
        for r in res_ids.tolist():
            res_first.setdefault(r, t)
        for g in gt_ids:
            gt_first.setdefault(g, t)
        for g in gt_ids:
            if g not in match:
                gys, gxs = np.nonzero(gt == g)
                out.append(Suspect(t, g, "missed", 0.0, f"true cell {g} is missed",
                                   float(gys.mean()), float(gxs.mean()), "missed"))  # fmt: skip
        matched_gt_of = {r: gs for r, gs in covers.items()}
        for r in res_ids.tolist():
            y, x = pos[r]
            gs = matched_gt_of.get(r, [])
            if len(gs) > 1:
                names = ", ".join(str(g) for g in sorted(gs))
                out.append(Suspect(t, r, "merge", 0.0, f"merges true cells {names}", y, x,
                                   "merge"))  # fmt: skip
            elif not gs:
                part = [g for g, rs in overlap.items() if any(rr == r for rr, _ in rs)]
                if part:
                    out.append(Suspect(t, r, "split", 0.0,
                                       f"a piece of true cell {part[0]} (another cell matches "
                                       "it)" if part[0] in match else
                                       f"covers too little of true cell {part[0]}", y, x,
                                       "split"))  # fmt: skip
                else:
                    out.append(Suspect(t, r, "false-positive", 0.0,
                                       "no true cell here", y, x, "false-positive"))  # fmt: skip
        # links: the result predecessor must match the true predecessor
        if t > 0:
            for g, r in match.items():
                if len(matched_gt_of.get(r, [])) != 1:
                    continue  # a merge: reported already
                if g in prev_gt:
                    true_pred = g
                elif gt_first.get(g) == t and gt_parent.get(g, 0) in prev_gt:
                    true_pred = gt_parent[g]
                else:
                    true_pred = 0
                if r in prev_res:
                    res_pred = r
                elif res_first.get(r) == t and res_parent.get(r, 0) in prev_res:
                    res_pred = res_parent[r]
                else:
                    res_pred = 0
                want = prev_match.get(true_pred, 0) if true_pred else 0
                if true_pred and not want:
                    continue  # the true predecessor was missed: reported at t-1
                if res_pred != want:
                    y, x = pos[r]
                    if want and not res_pred:
                        why = f"starts without predecessor; it continues {want} (frame {t - 1})"
                    elif not want:
                        why = f"linked to {res_pred} (frame {t - 1}), but is a new cell"
                    else:
                        why = f"linked to {res_pred} (frame {t - 1}); it continues {want}"
                    out.append(Suspect(t, r, "link-error", 0.0, why, y, x, "link-error"))
        prev_match = match
        prev_res = set(res_ids.tolist())
        prev_gt = set(gt_ids)
    return out
