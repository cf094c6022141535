"""Synthetic movies with planted tracking errors, and the near-ideal network outputs that
made the truth (test helper for the review queue, issue #17).

:func:`planted_movie` takes a synthetic movie (exact ground truth), makes near-ideal
network outputs from the truth (``oracle.ideal_outputs`` with noise, so that good cells do
not all score 1), and then plants errors the way a tracker would make them:

- ``merge``: two touching cells are one instance in one frame;
- ``split``: one cell is two instances in one frame;

(these two are linked with the real linker and the outputs' tracking offsets, so their
consequences are what the pipeline would make of them), then, in the tracked result,

- ``broken link``: a track gets a new id from one frame on, without parent;
- ``false division``: a track and its nearest neighbour both continue as "daughters" of
  the track from one frame on.

Every planted error is listed as ``(name, frame, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_embedtrack.engine.link import link_movie
from napari_embedtrack.engine.outputs import FrameOutput
from napari_embedtrack.synthetic import make_movie

try:
    from .oracle import ideal_outputs, lineage_from_labels
except ImportError:  # loaded from its file (widget tests, docs/make_screenshots.py)
    import importlib.util
    from pathlib import Path

    _spec = importlib.util.spec_from_file_location(
        "embedtrack_test_oracle", Path(__file__).with_name("oracle.py")
    )
    _oracle = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_oracle)
    ideal_outputs, lineage_from_labels = _oracle.ideal_outputs, _oracle.lineage_from_labels

G = 1.0 / 255.0


@dataclass
class Planted:
    image: np.ndarray  # (T, Y, X) the movie
    labels: np.ndarray  # (T, Y, X) tracked result with the errors
    lineage: np.ndarray
    outputs: list[FrameOutput]  # near-ideal outputs of the true movie
    truth: np.ndarray  # (T, Y, X) true labels
    truth_lineage: np.ndarray
    errors: list[tuple[str, int, float, float]]  # (name, frame, y, x)


def noisy_outputs(labels, lineage, seed: int = 0, sigma: float = 0.5) -> list[FrameOutput]:
    """Ideal outputs with seediness 0.8-1 in cells (0-0.2 outside) and offsets off by
    ``sigma`` pixels."""
    rng = np.random.default_rng(seed)
    outs = []
    for o in ideal_outputs(labels, lineage, G):
        fg = o.seediness > 0
        seed_map = np.where(fg, rng.uniform(0.8, 1.0, fg.shape), rng.uniform(0, 0.2, fg.shape))
        off = o.offsets + rng.normal(0, sigma, o.offsets.shape) * fg
        toff = o.track_offsets + rng.normal(0, sigma, o.offsets.shape) * fg
        outs.append(
            FrameOutput(seed_map.astype(np.float32), o.bandwidth, off.astype(np.float32),
                        toff.astype(np.float32))
        )  # fmt: skip
    return outs


def _alive(lin, tid, a, b) -> bool:
    """Track ``tid`` covers frames a..b without dividing in between."""
    row = lin[lin[:, 0] == tid][0]
    return row[1] <= a and row[2] >= b


def _centroid(frame, tid):
    ys, xs = np.nonzero(frame == tid)
    return float(ys.mean()), float(xs.mean())


def _touching(frame, a, b) -> bool:
    m = frame == a
    grown = m.copy()
    grown[1:] |= m[:-1]
    grown[:-1] |= m[1:]
    grown[:, 1:] |= m[:, :-1]
    grown[:, :-1] |= m[:, 1:]
    return bool(np.any(grown & (frame == b)))


def planted_movie(seed: int = 3, frames=(3, 6, 8, 5)) -> Planted:
    """A 12-frame 160x160 movie with a merge, a split, a broken link and a false division
    at the given frames (in that order), each on cells not involved in another."""
    movie = make_movie(n_frames=12, shape=(160, 160), n_cells=8, seed=seed)
    truth, lin = movie.labels.astype(np.int64), movie.lineage
    outputs = noisy_outputs(truth, lin)
    t_merge, t_split, t_break, t_div = frames
    used: set[int] = set()
    inst = truth.copy()
    errors = []

    def candidates(t):
        ids = [int(i) for i in np.unique(truth[t]) if i and int(i) not in used]
        return [i for i in ids if _alive(lin, i, t - 1, t + 1)]

    # merge: two touching cells, one instance at t_merge
    pair = next(
        (a, b) for a in candidates(t_merge) for b in candidates(t_merge)
        if a < b and _touching(truth[t_merge], a, b)
    )  # fmt: skip
    inst[t_merge][inst[t_merge] == pair[1]] = pair[0]
    used.update(pair)
    errors.append(("merge", t_merge, *_centroid(truth[t_merge], pair[0])))
    # split: one cell, two instances at t_split (cut at its centroid's column)
    c = candidates(t_split)[0]
    used.add(c)
    y, x = _centroid(truth[t_split], c)
    frame = inst[t_split]
    cut = (frame == c) & (np.arange(frame.shape[1])[None, :] < x)
    frame[cut] = inst.max() + 1
    errors.append(("split", t_split, y, x))

    labels, lineage = link_movie(inst, np.stack([o.track_offsets for o in outputs]))
    labels = labels.astype(np.int64)
    parents = {int(r[0]): int(r[3]) for r in lineage}
    fresh = int(labels.max()) + 1

    def result_id(t, true_id):
        ids, counts = np.unique(labels[t][truth[t] == true_id], return_counts=True)
        return int(ids[np.argmax(counts)])

    # broken link: a track continues under a new id from t_break on
    c = candidates(t_break)[0]
    used.add(c)
    tid = result_id(t_break, c)
    later = labels[t_break:]
    later[later == tid] = fresh
    errors.append(("broken link", t_break, *_centroid(truth[t_break], c)))
    # false division: a track and its nearest neighbour become its "daughters"
    cands = candidates(t_div)
    e = cands[0]
    ey, ex = _centroid(truth[t_div], e)
    f = min(cands[1:], key=lambda i: np.hypot(*np.subtract(_centroid(truth[t_div], i), (ey, ex))))
    used.update((e, f))
    te, tf = result_id(t_div, e), result_id(t_div, f)
    later = labels[t_div:]
    d1, d2 = fresh + 1, fresh + 2
    later[later == te] = d1
    later[later == tf] = d2
    parents.update({d1: te, d2: te})
    fy, fx = _centroid(truth[t_div], f)
    errors.append(("false division", t_div, (ey + fy) / 2, (ex + fx) / 2))
    lineage = lineage_from_labels(labels, parents)
    return Planted(movie.image, labels, lineage, outputs, truth, lin, errors)
