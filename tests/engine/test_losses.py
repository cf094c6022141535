"""Tests of engine.losses on hand-built network outputs (no network involved)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from napari_embedtrack.engine import data as D
from napari_embedtrack.engine import losses
from napari_embedtrack.engine.losses import (
    LossWeights,
    embedtrack_loss,
    frame_seg_loss,
    frame_track_loss,
    lovasz_hinge_rows,
    make_grid,
)

from . import _loss_reference as ref

H = W = 48  # make_targets expects square crops
G = 1.0 / 63.0  # grid spacing of 64-pixel training crops


# --------------------------------------------------------------------------- helpers
def _disk(cy: float, cx: float, r: float, shape=(H, W)) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _frames() -> tuple[np.ndarray, np.ndarray]:
    """Two frames (t-1, t) of three cells (track ids 1, 2, 3) that move a few pixels."""
    prev = np.zeros((H, W), np.int32)
    cur = np.zeros((H, W), np.int32)
    for tid, (cy, cx, r) in enumerate([(10, 10, 6), (25, 30, 7), (12, 36, 5)], start=1):
        prev[_disk(cy, cx, r)] = tid
        cur[_disk(cy + 2, cx - 3, r)] = tid
    cur[20:26, 6:14] = 4  # a new cell at t (no predecessor)
    return prev, cur


def _sequence(prev: np.ndarray, cur: np.ndarray, **kw) -> D.TrainingSequence:
    seg = np.stack([prev, cur]).astype(np.int32)
    image = (seg > 0).astype(np.float32)
    return D.TrainingSequence("test", image, seg, seg.copy(), np.zeros(seg.shape, bool), **kw)


def _targets(seq: D.TrainingSequence, t: int = 1) -> dict[str, torch.Tensor]:
    arrs = {
        "image": seq.image[t - 1 : t + 1],
        "seg": seq.seg[t - 1 : t + 1],
        "track": seq.track[t - 1 : t + 1],
        "ignore": seq.ignore[t - 1 : t + 1],
    }
    return D.collate([D.make_targets(arrs, seq, t)])


def _ideal_bw(radius_px: float) -> float:
    """Raw bandwidth whose kernel scores 0.5 at ``radius_px`` pixels."""
    s = (radius_px * G) ** 2 / math.log(2.0)
    return -math.log(s) / 10.0


def _ideal_outputs(batch: dict[str, torch.Tensor], radius_px: float = 1.5):
    """seg_t, seg_prev, track (1, C, H, W) whose offsets point at the targets' medoids."""
    grid = make_grid(H, W, G)
    segs = []
    for k in range(2):
        lab = batch["labels"][0, k]
        cen = batch["centres"][0, k] * G  # (K, 2) grid units
        seg = torch.zeros(5, H, W)
        fg = lab > 0
        seg[:2, fg] = cen[lab[fg] - 1].T - grid[:, fg]
        seg[2:4] = _ideal_bw(radius_px)
        seg[4] = fg.float()
        segs.append(seg)
    tl = batch["track_labels"][0]
    tc = batch["track_centres"][0] * G
    track = torch.zeros(2, H, W)
    fg = tl > 0
    track[:, fg] = tc[tl[fg] - 1].T - grid[:, fg]
    return segs[1][None], segs[0][None], track[None]


def _jaccard_loss(mispredicted: np.ndarray, gt: np.ndarray) -> float:
    """Jaccard set loss |M| / |gt u M| of a set M of mispredicted pixels (bool arrays)."""
    union = (gt | mispredicted).sum()
    return float(mispredicted.sum() / union) if union else 0.0


def _lovasz_brute(logits: np.ndarray, labels: np.ndarray) -> float:
    """Lovász extension of the Jaccard loss at the hinge errors, by its integral form.

    ``f(x) = integral_0^inf Jaccard({i : x_i >= tau}) d tau`` with ``x = relu(1 - logit * sign)``,
    evaluated exactly on the distinct error levels (independent of any sorting/tie order).
    """
    signs = np.where(labels, 1.0, -1.0)
    x = np.maximum(1.0 - logits * signs, 0.0)
    levels = np.unique(np.concatenate([x, [0.0]]))[::-1]  # decreasing, ends at 0
    total = 0.0
    for hi, lo in itertools.pairwise(levels):
        total += (hi - lo) * _jaccard_loss(x >= hi, labels)
    return total


# --------------------------------------------------------------------------- Lovász hinge
def test_lovasz_hinge_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 8):
        for _ in range(20):
            logits = rng.uniform(-2, 2, (3, n))
            logits[0, : n // 2] = 0.5  # ties
            labels = rng.random((3, n)) < 0.4
            got = lovasz_hinge_rows(
                torch.tensor(logits, dtype=torch.float64), torch.tensor(labels), None
            ).numpy()
            want = [_lovasz_brute(logits[i], labels[i]) for i in range(3)]
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)  # float32 inside


def test_lovasz_hinge_known_values():
    labels = torch.tensor([[True, True, False, False, False]])
    # perfect separation with margin: no loss
    perfect = torch.tensor([[1.5, 1.0, -1.0, -2.0, -1.0]])
    assert lovasz_hinge_rows(perfect, labels, None).item() == 0.0
    # correct signs but inside the margin: positive loss
    assert lovasz_hinge_rows(perfect * 0.5, labels, None).item() > 0.0
    # all logits 0: every error is 1 -> Jaccard loss of everything = 1
    assert lovasz_hinge_rows(torch.zeros(1, 5), labels, None).item() == pytest.approx(1.0)
    # one positive missed by a hinge error of 2: 2 * |M|/|gt u M| = 2 * 1/2
    one_wrong = torch.tensor([[-1.0, 1.0, -1.0, -1.0, -1.0]])
    assert lovasz_hinge_rows(one_wrong, labels, None).item() == pytest.approx(1.0)


def test_lovasz_ignored_pixels_are_removed():
    """An ignored pixel (positive or negative) counts as if it were not there at all."""
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.uniform(-2, 2, (4, 12)))
    labels = torch.tensor(rng.random((4, 12)) < 0.5)
    valid = torch.ones(12, dtype=torch.bool)
    valid[[0, 3, 7]] = False
    labels[:, 3] = True  # an ignored positive
    labels[:, 7] = False  # an ignored negative
    got = lovasz_hinge_rows(logits, labels, valid)
    want = lovasz_hinge_rows(logits[:, valid], labels[:, valid], None)
    torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------- full loss
def test_loss_lower_for_embeddings_pointing_at_medoids():
    prev, cur = _frames()
    batch = _targets(_sequence(prev, cur, starts={1: 0, 2: 0, 3: 0, 4: 1}))
    assert batch["n_inst"].tolist() == [[3, 4]]
    assert int(batch["n_track"]) == 3  # cell 4 is new: no tracking target
    seg_t, seg_prev, track = _ideal_outputs(batch)
    good, good_parts = embedtrack_loss(seg_t, seg_prev, track, batch, G)

    torch.manual_seed(0)
    rand_t, rand_prev, rand_track = seg_t.clone(), seg_prev.clone(), track.clone()
    for s in (rand_t, rand_prev):
        s[:, :2] = torch.empty(1, 2, H, W).uniform_(-0.3, 0.3)
    rand_track.uniform_(-0.3, 0.3)
    bad, bad_parts = embedtrack_loss(rand_t, rand_prev, rand_track, batch, G)

    # zero offsets (the untrained network) are also worse than the ideal ones
    zero_t, zero_prev = seg_t.clone(), seg_prev.clone()
    zero_t[:, :2] = 0
    zero_prev[:, :2] = 0
    zero, zero_parts = embedtrack_loss(zero_t, zero_prev, torch.zeros_like(track), batch, G)

    assert good_parts["variance"] == pytest.approx(0.0, abs=1e-10)
    assert good_parts["instance"] < 0.1
    assert good_parts["track"] < 0.1
    assert good_parts["seed"] < 0.01  # seediness 1 on cells = the ideal score 1, 0 elsewhere
    for parts in (bad_parts, zero_parts):
        assert parts["instance"] > 0.5
        assert parts["track"] > 0.5
    assert float(good) < 0.2 * float(bad)
    assert float(good) < 0.2 * float(zero)
    # tracking offsets to the cells' own centres at t instead of t-1 are worse too
    own = seg_t[:, :2].clone() * (batch["track_labels"][:, None] > 0)
    _, own_parts = embedtrack_loss(seg_t, seg_prev, own, batch, G)
    assert own_parts["track"] > 5 * good_parts["track"]


def test_loss_parts_and_weights():
    prev, cur = _frames()
    batch = _targets(_sequence(prev, cur))
    seg_t, seg_prev, track = _ideal_outputs(batch)
    torch.manual_seed(1)
    for s in (seg_t, seg_prev):
        s[:, 2:] += torch.empty_like(s[:, 2:]).uniform_(-0.1, 0.1)
    total, parts = embedtrack_loss(seg_t, seg_prev, track, batch, G)
    assert all(v > 0 for v in parts.values())
    want = parts["instance"] + 10 * parts["variance"] + parts["seed"] + parts["track"]
    assert float(total) == pytest.approx(want, rel=1e-5)
    w = LossWeights(instance=2.0, variance=0.0, seed=3.0, foreground=1.0, track=0.5)
    total_w, parts_w = embedtrack_loss(seg_t, seg_prev, track, batch, G, w)
    assert parts_w["seed"] == pytest.approx(3 * parts["seed"], rel=1e-5)
    want = 2 * parts["instance"] + 3 * parts["seed"] + 0.5 * parts["track"]
    assert float(total_w) == pytest.approx(want, rel=1e-5)


def test_ignored_background_changes_nothing():
    """Ignoring a strip of background = cutting it off; outputs there do not matter."""
    _, cur = _frames()
    labels = torch.from_numpy(cur.astype(np.int64))
    ids = np.unique(cur)[1:]
    centres = torch.from_numpy(D.instance_medoids(cur, ids)) * G
    torch.manual_seed(2)
    seg = torch.rand(5, H, W)
    seg[:2] = (seg[:2] - 0.5) * 0.2
    cut = 6  # the last rows hold no cell
    assert not cur[-cut:].any()
    ignore = torch.zeros(H, W, dtype=torch.bool)
    ignore[-cut:] = True
    w = LossWeights()
    full = frame_seg_loss(seg, labels, ignore, centres, make_grid(H, W, G), w)
    cropped = frame_seg_loss(
        seg[:, :-cut],
        labels[:-cut],
        ignore[:-cut],
        centres,
        make_grid(H - cut, W, G),
        w,
    )
    for a, b in zip(full, cropped, strict=True):
        torch.testing.assert_close(a, b)
    seg2 = seg.clone()
    seg2[:, -cut:] = torch.rand(5, cut, W)  # other outputs on ignored pixels
    other = frame_seg_loss(seg2, labels, ignore, centres, make_grid(H, W, G), w)
    for a, b in zip(full, other, strict=True):
        torch.testing.assert_close(a, b)
    # not ignored, the same pixels do count
    counted = frame_seg_loss(seg2, labels, ignore & False, centres, make_grid(H, W, G), w)
    assert not torch.allclose(counted[2], full[2])


def test_daughters_target_parent_centre():
    """Track targets of daughters are their parent's medoid at t-1 (via make_targets)."""
    prev = np.zeros((H, W), np.int32)
    cur = np.zeros((H, W), np.int32)
    prev[_disk(15, 15, 7)] = 1  # the parent, last seen at t-1
    cur[_disk(11, 15, 5)] = 2  # daughters
    cur[_disk(22, 15, 5)] = 3
    prev[_disk(20, 36, 6)] = 4  # a cell that continues
    cur[_disk(21, 35, 6)] = 4
    cur[_disk(33, 33, 4)] = 5  # a new cell without parent
    seq = _sequence(prev, cur, parents={2: 1, 3: 1}, starts={1: 0, 2: 1, 3: 1, 4: 0, 5: 1})
    batch = _targets(seq)
    n = int(batch["n_track"])
    assert n == 2  # the parent (targeted by both daughters) and cell 4
    parent_medoid = D.instance_medoids(prev, np.array([1]))[0]
    own_medoid = D.instance_medoids(prev, np.array([4]))[0]
    tl = batch["track_labels"][0].numpy()
    tc = batch["track_centres"][0, :n].numpy()
    (j,) = np.unique(tl[(cur == 2) | (cur == 3)])  # both daughters: one instance
    np.testing.assert_array_equal(tc[j - 1], parent_medoid)
    (j,) = np.unique(tl[cur == 4])
    np.testing.assert_array_equal(tc[j - 1], own_medoid)
    assert not tl[cur == 5].any()  # new cell: no target
    # a daughter that starts at another frame is not linked to the parent
    seq_late = _sequence(prev, cur, parents={2: 1, 3: 1}, starts={2: 0, 3: 1})
    late = _targets(seq_late)
    assert int(late["n_track"]) == 2
    assert not late["track_labels"][0].numpy()[cur == 2].any()

    # the tracking loss prefers offsets to the parent's centre over the daughters' own
    grid = make_grid(H, W, G)
    bw = torch.full((2, H, W), _ideal_bw(1.5))
    lab = batch["track_labels"][0]
    ign = torch.zeros(H, W, dtype=torch.bool)
    to_parent = torch.zeros(2, H, W)
    fg = lab > 0
    to_parent[:, fg] = (batch["track_centres"][0, :n] * G)[lab[fg] - 1].T - grid[:, fg]
    own = torch.from_numpy(D.instance_medoids(cur, np.array([2, 3, 4]))) * G
    to_own = torch.zeros(2, H, W)
    for k, tid in enumerate((2, 3, 4)):
        m = torch.from_numpy(cur == tid)
        to_own[:, m] = own[k][:, None] - grid[:, m]
    cen = batch["track_centres"][0, :n] * G
    good = frame_track_loss(to_parent, bw, lab, ign, cen, grid)
    bad = frame_track_loss(to_own, bw, lab, ign, cen, grid)
    assert float(good) < 0.05
    assert float(bad) > 0.3


def test_marker_pixels_drive_tracking_even_if_ignored():
    """Sparse labels: a cell known only by its TRA marker sits in an ignore region, yet its
    marker pixels must still be pulled to its centre at t-1."""
    grid = make_grid(H, W, G)
    lab = torch.zeros(H, W, dtype=torch.int64)
    lab[18:22, 18:22] = 1  # marker of the cell at t
    ignore = torch.zeros(H, W, dtype=torch.bool)
    ignore[10:30, 10:30] = True  # unknown region around the marker (covers it)
    centre = torch.tensor([[14.0, 14.0]]) * G
    bw = torch.full((2, H, W), _ideal_bw(2.0))
    zero = torch.zeros(2, H, W)
    ideal = torch.zeros(2, H, W)
    m = lab > 0
    ideal[:, m] = centre[0][:, None] - grid[:, m]
    l_zero = frame_track_loss(zero, bw, lab, ignore, centre, grid)
    l_ideal = frame_track_loss(ideal, bw, lab, ignore, centre, grid)
    assert float(l_ideal) < 0.05
    assert float(l_zero) > 0.5


def test_empty_crops_are_finite():
    b = 2
    batch = {
        "labels": torch.zeros(b, 2, H, W, dtype=torch.int64),
        "ignore": torch.zeros(b, 2, H, W, dtype=torch.bool),
        "centres": torch.zeros(b, 2, D.MAX_INSTANCES, 2),
        "n_inst": torch.zeros(b, 2, dtype=torch.int64),
        "track_labels": torch.zeros(b, H, W, dtype=torch.int64),
        "track_centres": torch.zeros(b, D.MAX_INSTANCES, 2),
        "n_track": torch.zeros(b, dtype=torch.int64),
    }
    batch["ignore"][1] = True  # the second pair is entirely unknown
    seg_t = torch.rand(b, 5, H, W, requires_grad=True)
    seg_prev = torch.rand(b, 5, H, W, requires_grad=True)
    track = torch.rand(b, 2, H, W, requires_grad=True)
    total, parts = embedtrack_loss(seg_t, seg_prev, track, batch, G)
    assert math.isfinite(float(total.detach()))
    assert all(math.isfinite(v) for v in parts.values())
    assert parts["instance"] == parts["variance"] == parts["track"] == 0.0
    assert parts["seed"] > 0.0  # background seediness is still penalised
    total.backward()
    for t in (seg_t, seg_prev):
        assert torch.isfinite(t.grad).all()
    assert track.grad is None or torch.isfinite(track.grad).all()
    # the same through make_targets on an empty crop
    empty = _sequence(np.zeros((H, W), np.int32), np.zeros((H, W), np.int32))
    eb = _targets(empty)
    assert int(eb["n_track"]) == 0 and eb["n_inst"].sum() == 0
    total, parts = embedtrack_loss(seg_t[:1], seg_prev[:1], track[:1], eb, G)
    assert math.isfinite(float(total.detach())) and all(math.isfinite(v) for v in parts.values())


def test_unknown_frames_do_not_dilute_the_loss():
    """A pair whose frames are entirely unknown (unannotated) adds nothing to the mean."""
    prev, cur = _frames()
    batch = _targets(_sequence(prev, cur))
    seg_t, seg_prev, track = _ideal_outputs(batch)
    torch.manual_seed(4)
    seg_t[:, 4] = torch.rand(1, H, W)  # non-trivial seed loss
    one, parts_one = embedtrack_loss(seg_t, seg_prev, track, batch, G)
    empty = _targets(_sequence(np.zeros_like(prev), np.zeros_like(cur)))
    empty["ignore"][:] = True
    two = {k: torch.cat([batch[k], empty[k]]) for k in batch}
    both, parts_two = embedtrack_loss(
        torch.cat([seg_t, torch.rand_like(seg_t)]),
        torch.cat([seg_prev, torch.rand_like(seg_prev)]),
        torch.cat([track, torch.rand_like(track)]),
        two,
        G,
    )
    assert parts_two == pytest.approx(parts_one)
    assert float(both) == pytest.approx(float(one))


# --------------------------------------------------------------------------- = reference
# The loss is computed without instances x pixels products and without sorting whole rows
# (issue #13); its value and gradients must stay those of the plain dense formulas kept in
# _loss_reference.py. The Lovász gradient of a pixel depends on its rank among the errors, so
# two errors within an ulp of each other may swap ranks, and gradients, when the instance
# mean bandwidths are summed in another order (also in the reference, e.g. with other BLAS
# threads). Gradients are therefore compared with bandwidths that are multiples of 1/64,
# whose sums are exact in any order; with arbitrary bandwidths, the values.
S = 64  # crop of the comparison cases
GS = 1.0 / 63.0


def _random_case(
    seed: int,
    n_cells: int = 5,
    radius: tuple[float, float] = (4.0, 9.0),
    divide: bool = False,
    ignore: bool = False,
    size: int = S,
) -> dict[str, torch.Tensor]:
    """A cropped pair (batch of one) of random disk cells, apart where there is room, that
    move a few pixels. With ``divide`` cell 1 divides at t; with ``ignore`` unknown rectangles
    cover background and parts of cells, and one whole cell at t-1 is unknown (an instance
    without valid pixels)."""
    rng = np.random.default_rng(seed)
    prev = np.zeros((size, size), np.int32)
    cur = np.zeros((size, size), np.int32)
    parents, starts = {}, {}
    placed: list[tuple[float, float, float]] = []
    for tid in range(1, n_cells + 1):
        for _ in range(100):  # apart from the others (by at least 4 px after moving)
            r = rng.uniform(*radius)
            cy, cx = rng.uniform(r, size - r, 2)
            if all(math.hypot(cy - y, cx - x) > r + q + 10 for y, x, q in placed):
                break
        placed.append((cy, cx, r))
        prev[_disk(cy, cx, r, (size, size))] = tid
        dy, dx = rng.uniform(-3, 3, 2)
        if divide and tid == 1:  # daughters on either side of the parent's centre
            for k, sgn in ((n_cells + 1, -1), (n_cells + 2, 1)):
                cur[_disk(cy + sgn * r / 2, cx, r / 2, (size, size))] = k
                parents[k], starts[k] = 1, 1
        else:
            cur[_disk(cy + dy, cx + dx, r, (size, size))] = tid
    seg = np.stack([prev, cur])
    ign = np.zeros(seg.shape, bool)
    if ignore:
        for k in range(2):
            for _ in range(3):
                y0, x0 = rng.integers(0, size - 8, 2)
                hh, ww = rng.integers(4, 16, 2)
                ign[k, y0 : y0 + hh, x0 : x0 + ww] = True
        ign[0] |= prev == prev.max()  # one whole cell unknown at t-1
    seq = D.TrainingSequence(
        "case", (seg > 0).astype(np.float32), seg, seg.copy(), ign, parents, starts
    )
    return _targets(seq)


def _random_outputs(batch, seed: int, aim: float = 0.7, noise_px: float = 1.5):
    """Outputs (seg_t, seg_prev, track) of a partly trained network: offsets of a fraction
    ``aim`` of the cells' pixels point near their centres, the others anywhere near; random
    bandwidths (kernels of a few pixels to the whole crop; multiples of 1/64) and seediness."""
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = batch["labels"].shape
    spacing = 1.0 / (w - 1)
    grid = make_grid(h, w, spacing)

    def offsets(lab, cen):
        off = (torch.rand(2, h, w, generator=g) - 0.5) * 0.4
        hit = (lab > 0) & (torch.rand(h, w, generator=g) < aim)
        noise = torch.randn(2, int(hit.sum()), generator=g) * noise_px * spacing
        off[:, hit] = cen[lab[hit] - 1].T * spacing - grid[:, hit] + noise
        return off

    segs = torch.rand(2, b, 5, h, w, generator=g)
    segs[:, :, 2:4] = torch.randint(22, 55, (2, b, 2, h, w), generator=g) / 64.0
    track = torch.zeros(b, 2, h, w)
    for i in range(b):
        for k in range(2):
            segs[1 - k, i, :2] = offsets(batch["labels"][i, k], batch["centres"][i, k])
        track[i] = offsets(batch["track_labels"][i], batch["track_centres"][i])
    return segs[0], segs[1], track


def _both(batch, outs, spacing=GS, weights=None):
    """(total, parts, grads of the three outputs) of the reference and of the loss."""
    res = []
    for fn in (ref.embedtrack_loss, embedtrack_loss):
        leaves = [o.detach().clone().requires_grad_(True) for o in outs]
        total, parts = fn(*leaves, batch, spacing, weights)
        total.backward()
        grads = [torch.zeros_like(x) if x.grad is None else x.grad for x in leaves]
        res.append((float(total.detach()), parts, grads))
    return res


def _assert_same(batch, outs, grads: bool = True, spacing=GS, weights=None) -> float:
    """Loss = reference (value, parts, gradients); returns the largest relative difference."""
    (t0, p0, g0), (t1, p1, g1) = _both(batch, outs, spacing, weights)
    assert t1 == pytest.approx(t0, rel=1e-5, abs=1e-7)
    assert p1 == pytest.approx(p0, rel=1e-5, abs=1e-7)
    worst = abs(t1 - t0) / max(abs(t0), 1e-12)
    if grads:
        for a, b in zip(g1, g0, strict=True):
            scale = float(b.abs().max())
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * scale + 1e-12)
            worst = max(worst, float((a - b).abs().max()) / max(scale, 1e-12))
    return worst


@pytest.mark.parametrize("seed", range(4))
def test_equals_reference_random_crops(seed):
    batch = _random_case(seed)
    assert batch["n_inst"].min() >= 3 and int(batch["n_track"]) >= 3
    _assert_same(batch, _random_outputs(batch, seed))


def test_equals_reference_with_ignore_regions():
    for seed in range(3):
        batch = _random_case(10 + seed, ignore=True)
        assert batch["ignore"].any(1).any() and batch["ignore"][0, 0].any()
        _assert_same(batch, _random_outputs(batch, seed))


def test_equals_reference_with_daughters():
    for seed in range(3):
        batch = _random_case(20 + seed, divide=True)
        tl = batch["track_labels"][0]
        lab_t = batch["labels"][0, 1]
        # both daughters form one tracking instance, aimed at the parent
        assert int(batch["n_inst"][0, 1]) == int(batch["n_track"]) + 1
        assert (tl[lab_t > 0] > 0).all()
        _assert_same(batch, _random_outputs(batch, seed))


def test_equals_reference_one_and_zero_instances():
    one = _random_case(30, n_cells=1)
    assert one["n_inst"][0].tolist() == [1, 1] and int(one["n_track"][0]) == 1
    _assert_same(one, _random_outputs(one, 0))
    empty = _targets(_sequence(np.zeros((S, S), np.int32), np.zeros((S, S), np.int32)))
    _assert_same(empty, _random_outputs(empty, 1))
    # a batch of both, an entirely unknown pair, and a pair whose crop at t is empty
    gone = _random_case(31, n_cells=2)
    gone["labels"][:, 1] = 0
    gone["n_inst"][:, 1] = 0
    gone["track_labels"][:] = 0
    gone["n_track"][:] = 0
    unknown = {k: v.clone() for k, v in empty.items()}
    unknown["ignore"][:] = True
    both = {k: torch.cat([one[k], empty[k], gone[k], unknown[k]]) for k in one}
    _assert_same(both, _random_outputs(both, 2))


def test_equals_reference_large_instances():
    """Cells covering most of the crop (most pixels are positives of some row)."""
    for seed in range(2):
        batch = _random_case(40 + seed, n_cells=3, radius=(18.0, 26.0))
        assert (batch["labels"] > 0).float().mean() > 0.4
        _assert_same(batch, _random_outputs(batch, seed))


def test_equals_reference_batch_and_weights():
    cases = [_random_case(50 + s, ignore=s % 2 == 1, divide=s == 2) for s in range(4)]
    batch = {k: torch.cat([c[k] for c in cases]) for k in cases[0]}
    w = LossWeights(instance=2.0, variance=3.0, seed=0.5, foreground=2.0, track=1.5)
    _assert_same(batch, _random_outputs(batch, 5), weights=w)


@pytest.mark.parametrize("aim", [0.0, 1.0])
def test_equals_reference_untrained_and_trained_like(aim):
    """All offsets random (wide spread of errors), or all pixels near their centres with
    narrow kernels (few pixels left to sort: the pruning does the most)."""
    batch = _random_case(60, n_cells=6)
    seg_t, seg_prev, track = _random_outputs(batch, 6, aim=aim, noise_px=0.7)
    if aim:  # kernels of about 2 px
        bw = round(64 * _ideal_bw(2.0)) / 64
        for s in (seg_t, seg_prev):
            s[:, 2:4] = bw + torch.randint(-1, 2, s[:, 2:4].shape) / 64.0
    _assert_same(batch, (seg_t, seg_prev, track))


def test_equals_reference_any_bandwidths():
    for seed in range(3):
        batch = _random_case(90 + seed, ignore=seed == 1, divide=seed == 2)
        outs = _random_outputs(batch, seed)
        for s in outs[:2]:
            s[:, 2:4] = torch.rand(s[:, 2:4].shape, generator=torch.Generator().manual_seed(seed))
        _assert_same(batch, outs, grads=False)


def test_equals_reference_value_at_ties():
    """Zero offsets (a fresh network): the centre pixel scores exactly 1 (a positive with
    error 0) and symmetric pixels tie, so the gradients depend on the order of ties; the
    value does not. Also kernels so narrow that far scores underflow to 0, and so wide that
    every pixel counts."""
    batch = _random_case(70)
    for bw in (0.55, 1.0, 0.05):
        seg_t, seg_prev, track = _random_outputs(batch, 7)
        for s in (seg_t, seg_prev):
            s[:, :2] = 0.0
            s[:, 2:4] = bw
        _assert_same(batch, (seg_t, seg_prev, torch.zeros_like(track)), grads=False)


def test_frame_losses_equal_reference_edge_cases():
    """Labels above the instance count, ids without pixels, a row without valid pixels."""
    grid = make_grid(S, S, GS)
    batch = _random_case(80, n_cells=4)
    seg_t, _, track = _random_outputs(batch, 8)
    lab = batch["labels"][0, 1].clone()
    m = int(batch["n_inst"][0, 1])
    cen = batch["centres"][0, 1, :m] * GS
    ign = torch.zeros(S, S, dtype=torch.bool)
    ign[lab == 2] = True  # instance 2 entirely unknown (no valid positive)
    ign[:10] = True
    lab[lab == 4] = 9  # ids above m: neither background nor a row
    tl = batch["track_labels"][0].clone()
    n = int(batch["n_track"][0])
    tc = batch["track_centres"][0, : n + 2] * GS  # two targets without pixels
    tl[tl == 1] = 0  # and the first one gone
    tl[tl == 2] = n + 5  # ids above M
    w = LossWeights()
    res = []
    for mod in (ref, losses):
        seg = seg_t[0].clone().requires_grad_(True)
        trk = track[0].clone().requires_grad_(True)
        parts = [*mod.frame_seg_loss(seg, lab, ign, cen, grid, w)]
        parts.append(mod.frame_track_loss(trk, seg[2:4], tl, ign, tc, grid))
        sum(parts).backward()
        res.append(([x.detach() for x in parts], seg.grad, trk.grad))
    (a, ga, ta), (b, gb, tb) = res
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-5 * float(ga.abs().max()))
    torch.testing.assert_close(tb, ta, rtol=1e-5, atol=1e-5 * float(ta.abs().max()))


def test_lovasz_hinge_rows_equals_reference():
    rng = np.random.default_rng(9)
    for dtype in (torch.float32, torch.float64):
        for n in (1, 7, 300):
            logits = torch.tensor(rng.uniform(-2.5, 2.5, (5, n)), dtype=dtype)
            logits[1] = 1.0  # ties, errors <= 0
            labels = torch.tensor(rng.random((5, n)) < 0.3)
            labels[2] = False  # a row without positives
            labels[3] = True
            valid = torch.tensor(rng.random(n) < 0.8)
            for v in (None, valid):
                a = logits.clone().requires_grad_(True)
                b = logits.clone().requires_grad_(True)
                want = ref.lovasz_hinge_rows(a, labels, v)
                got = lovasz_hinge_rows(b, labels, v)
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
                if dtype == torch.float64:  # (rows 0, 2-4 tie-free)
                    want.sum().backward()
                    got.sum().backward()
                    keep = [0, 2, 3, 4]
                    torch.testing.assert_close(b.grad[keep], a.grad[keep], rtol=1e-6, atol=1e-9)
