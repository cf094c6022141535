"""Training throughput: steps per second of ``engine.train.train`` on real data (issue #13).

Two figures per batch size, on the device ``train`` picks (a GPU where there is one):

- **loop**: the training loop itself (``train()``: crops drawn and augmented by ``--workers``
  DataLoader processes, forward + loss + backward + optimiser step, mixed precision as
  ``train`` chooses it), median seconds per step after ``--warmup`` steps, no validation;
- **compute**: the same step on one batch kept on the device (no crop drawing): what the
  loop would reach if crops were free. loop / compute near 1 means compute-bound.

    python benchmarks/bench_train_throughput.py ../shared/data/ctc/Fluo-N2DH-SIM+/01 \
        --batch-sizes 4 16 --workers 8 --steps 60 [--json out.json]

The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from napari_embedtrack.engine import data as D
from napari_embedtrack.engine.losses import LossWeights, embedtrack_loss
from napari_embedtrack.engine.model import build_model
from napari_embedtrack.engine.predict import auto_amp, resolve_device
from napari_embedtrack.engine.train import (
    TrainConfig,
    _amp_dtype,
    auto_workers,
    train,
)


def loop_seconds(seqs, batch_size: int, workers: int | None, steps: int, warmup: int) -> dict:
    cfg = TrainConfig(
        steps=steps + warmup,
        batch_size=batch_size,
        val_fraction=0.0,
        val_every=10**9,
        checkpoint_every=10**9,
        workers=workers,
    )
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        gen = train(seqs, Path(tmp) / "m", cfg)
        last = None
        for p in gen:
            if "loss" not in p.info:
                continue
            now = time.perf_counter()
            if last is not None and p.done > warmup:
                times.append(now - last)
            last = now
    med = statistics.median(times)
    return {"seconds_per_step": med, "steps_per_s": 1 / med, "pairs_per_s": batch_size / med}


def compute_seconds(seqs, batch_size: int, steps: int, warmup: int) -> dict:
    device = resolve_device("auto")
    amp = auto_amp(device)
    dtype = _amp_dtype(device)
    frames = [list(range(1, s.n_frames)) for s in seqs]
    sampler = D.PairSampler(seqs, frames, 256, D.AugmentConfig(), 0)
    crops = D.collate([sampler.sample() for _ in range(batch_size)])
    batch = {k: v.to(device) for k, v in crops.items()}
    fmt = torch.channels_last if amp or device.type == "cuda" else torch.contiguous_format
    net = build_model().to(device).to(memory_format=fmt)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    img = batch["image"]
    prev = img[:, 0:1].contiguous(memory_format=fmt)
    cur = img[:, 1:2].contiguous(memory_format=fmt)
    times = []
    for i in range(steps + warmup):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            seg_t, seg_prev, trk = net(cur, prev)
        loss, _ = embedtrack_loss(seg_t, seg_prev, trk, batch, 1 / 255, LossWeights())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"seconds_per_step": med, "steps_per_s": 1 / med, "amp": str(dtype) if amp else None}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", help="CTC sequence folders (…/NN)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    p.add_argument("--workers", type=int, default=None, help="crop workers (default: train's)")
    p.add_argument("--steps", type=int, default=40, help="timed steps")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    seqs = [D.load_ctc_sequence(d) for d in args.data]
    device = resolve_device("auto")
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "data": [s.name for s in seqs],
        "workers": args.workers if args.workers is not None else auto_workers(device),
        "rows": [],
    }
    for bs in args.batch_sizes:
        row = {"batch_size": bs}
        row["compute"] = compute_seconds(seqs, bs, args.steps, args.warmup)
        row["loop"] = loop_seconds(seqs, bs, args.workers, args.steps, args.warmup)
        result["rows"].append(row)
        print(
            f"batch {bs}: loop {row['loop']['steps_per_s']:.2f} steps/s "
            f"({row['loop']['pairs_per_s']:.1f} pairs/s), compute alone "
            f"{row['compute']['steps_per_s']:.2f} steps/s",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
