"""Time one training step on CPU and the share of it spent in the loss (issue #13).

Run: ``python benchmarks/bench_train_step.py [--threads 1] [--batch-size 4] [--steps 5]
[--init Fluo-N2DH-SIM+] [--amp]``.

A batch of augmented ``--crop`` crops of frame pairs from a synthetic movie of touching,
dividing cells (``napari_embedtrack.synthetic``, sampled by ``engine.data.PairSampler`` as in
training) goes through the model; per step, forward, loss, backward and the optimiser step are
timed separately, for the pre-optimisation loss (``tests/engine/_loss_reference.py``) and the
current one (``engine.losses``), and for a trivial linear loss (the network's own backward).
Loss-only rows time the loss forward + backward on the same network outputs as leaves (no
network). The variants take turns; times are medians over ``--steps`` steps after ``--warmup``
steps. The loss share of a step is the loss forward plus the part of the backward beyond the
linear loss's. The last line printed is JSON.

A fresh network (the default) predicts zero offsets: every instance's centre pixel then scores
exactly 1, the loss's worst case (see engine/losses.py); ``--init`` starts from a trained model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_embedtrack.engine import data as D
from napari_embedtrack.engine import losses as L
from napari_embedtrack.engine.model import build_model
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.predict import cpu_has_native_bf16
from napari_embedtrack.synthetic import make_movie

ROOT = Path(__file__).resolve().parents[1]


def _reference_module():
    path = ROOT / "tests" / "engine" / "_loss_reference.py"
    spec = importlib.util.spec_from_file_location("_loss_reference", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def make_batch(batch_size: int, crop: int, seed: int, cells: int) -> dict[str, torch.Tensor]:
    """A training batch of augmented crops from a synthetic movie (as train.py draws them).

    The movie is 2 x 2 crops large; ``cells`` cells of radius 8-13 px give about
    ``cells / 3`` instances per crop (some touching, some dividing).
    """
    movie = make_movie(
        n_frames=8, shape=(2 * crop, 2 * crop), n_cells=cells, seed=seed, radius=(8.0, 13.0)
    )
    seq = D.sequence_from_arrays("synthetic", movie.image, movie.labels, movie.lineage)
    sampler = D.PairSampler([seq], [list(range(1, 8))], crop, D.AugmentConfig(), seed)
    return D.collate([sampler.sample() for _ in range(batch_size)])


def _linear_loss(seg_t, seg_prev, track, batch, spacing, weights=None):
    """Trivial loss: the network's forward/backward alone."""
    return (seg_t.mean() + seg_prev.mean() + track.mean()), {}


def _median(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def _step(net, opt, cur, prev, batch, spacing, loss_fn, amp=False) -> dict[str, float]:
    """One training step; seconds of forward, loss, backward and the whole step. ``amp``:
    the forward under bf16 autocast, as ``engine.train`` runs it on CPUs with native bf16."""
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        seg_t, seg_prev, trk = net(cur, prev)
    t1 = time.perf_counter()
    loss, _ = loss_fn(seg_t, seg_prev, trk, batch, spacing)
    t2 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t3 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
    opt.step()
    t4 = time.perf_counter()
    return {"forward": t1 - t0, "loss": t2 - t1, "backward": t3 - t2, "step": t4 - t0}


def _loss_only(outputs, batch, spacing, loss_fn) -> dict[str, float]:
    """Seconds of the loss forward and backward on leaf outputs (no network)."""
    leaves = [o.detach().clone().requires_grad_(True) for o in outputs]
    t0 = time.perf_counter()
    loss, _ = loss_fn(*leaves, batch, spacing)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    return {"loss_forward": t1 - t0, "loss_backward": t2 - t1}


def time_variants(net, opt, batch, spacing, variants, outputs, steps, warmup, amp=False) -> dict:
    """Median ms per variant; the variants take turns step by step (a busy machine slows
    them alike). ``amp``: bf16 autocast and channels_last, as training on a bf16 CPU."""
    img = batch["image"]
    fmt = torch.channels_last if amp else torch.contiguous_format
    prev = img[:, 0:1].contiguous(memory_format=fmt)
    cur = img[:, 1:2].contiguous(memory_format=fmt)
    rec: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
    for i in range(warmup + steps):
        for name, fn in variants.items():
            times = _step(net, opt, cur, prev, batch, spacing, fn, amp)
            if name != "linear":
                times.update(_loss_only(outputs, batch, spacing, fn))
            if i >= warmup:
                for k, v in times.items():
                    rec[name].setdefault(k, []).append(v)
    return {name: {k: _median(v) for k, v in r.items()} for name, r in rec.items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cells", type=int, default=60, help="cells in the 2x2-crop movie")
    p.add_argument(
        "--init",
        default=None,
        help="start from this model (shipped name or folder; fine-tuning) instead of a fresh "
        "network, whose zero offsets are the loss's worst case",
    )
    p.add_argument(
        "--amp",
        action="store_true",
        help="bf16 autocast + channels_last, as training runs on CPUs with native bf16 "
        "(AVX512-BF16 / AMX; much slower elsewhere)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ref = _reference_module()
    spacing = 1.0 / (args.crop - 1)
    batch = make_batch(args.batch_size, args.crop, args.seed, args.cells)
    if args.init:
        loaded = load_model(args.init)
        net, spacing = loaded.net, loaded.card.grid_spacing
    else:
        net = build_model()
    net.train()
    if args.amp:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-6)  # tiny steps: outputs stay comparable
    variants = {
        "reference": ref.embedtrack_loss,
        "current": L.embedtrack_loss,
        "linear": _linear_loss,
    }
    # both losses on the same outputs: value agreement
    with torch.no_grad():
        outs = net(batch["image"][:, 1:2].contiguous(), batch["image"][:, 0:1].contiguous())
    v_ref, _ = ref.embedtrack_loss(*outs, batch, spacing)
    v_cur, _ = L.embedtrack_loss(*outs, batch, spacing)
    rel = abs(float(v_cur) - float(v_ref)) / max(abs(float(v_ref)), 1e-12)

    result: dict = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "crop": args.crop,
        "steps": args.steps,
        "init": args.init,
        "n_inst_mean": float(batch["n_inst"].float().mean()),
        "n_track_mean": float(batch["n_track"].float().mean()),
        "foreground_fraction": float((batch["labels"] > 0).float().mean()),
        "loss_reference": float(v_ref),
        "loss_current": float(v_cur),
        "loss_rel_diff": rel,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "amp": args.amp,
        "cpu_has_native_bf16": cpu_has_native_bf16(),
    }
    result.update(
        time_variants(net, opt, batch, spacing, variants, outs, args.steps, args.warmup, args.amp)
    )
    net_bwd = result["linear"]["backward"]
    for name in ("reference", "current"):
        r = result[name]
        # loss share of the step: its forward + the part of the backward beyond the network's
        r["loss_share"] = (r["loss"] + max(r["backward"] - net_bwd, 0.0)) / r["step"]

    cols = ("forward", "loss", "backward", "step", "loss_forward", "loss_backward")
    print(
        f"{args.init or 'fresh network'}: batch {args.batch_size} x crop {args.crop}, "
        f"{args.threads} thread(s), median of {args.steps} steps; instances/frame "
        f"{result['n_inst_mean']:.1f}; loss {float(v_ref):.5f} (reference) "
        f"{float(v_cur):.5f} (current), rel. diff {rel:.2e}"
    )
    print(f"{'ms':<10}" + "".join(f"{c:>14}" for c in (*cols, "loss share")))
    for name in variants:
        r = result[name]
        row = "".join(f"{r.get(c, float('nan')):>14.1f}" for c in cols)
        share = f"{100 * r['loss_share']:>13.0f}%" if "loss_share" in r else f"{'':>14}"
        print(f"{name:<10}{row}{share}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
