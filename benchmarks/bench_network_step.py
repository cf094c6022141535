"""Time the network's own training step (forward, backward, Adam) under CPU variants.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_network_step.py --variant V``
(base: fp32 contiguous, as training runs on CPUs without native bf16; cl: channels_last;
compile: ``torch.compile`` with the default inductor backend; bf16 / bf16-cl: the forward
under bf16 autocast, contiguous or channels_last, as training runs on CPUs with native
bf16; bf16-cl-compile: the last compiled with inductor). A fresh network, random inputs
of ``--batch-size`` pairs of ``--crop`` pixels, a linear loss; prints each step's seconds
and, last, the median of the steps after ``--warmup`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from napari_embedtrack.engine.model import build_model


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    variants = ["base", "cl", "compile", "bf16", "bf16-cl", "bf16-cl-compile"]
    p.add_argument("--variant", choices=variants, default="base")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build_model()
    net.train()
    shape = (args.batch_size, 1, args.crop, args.crop)
    cur, prev = torch.randn(shape), torch.randn(shape)
    if "cl" in args.variant.split("-"):
        net = net.to(memory_format=torch.channels_last)
        cur = cur.contiguous(memory_format=torch.channels_last)
        prev = prev.contiguous(memory_format=torch.channels_last)
    fn = torch.compile(net) if args.variant.endswith("compile") else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-6)
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.variant.startswith("bf16")):
            seg_t, seg_prev, trk = fn(cur, prev)
        loss = seg_t.mean() + seg_prev.mean() + trk.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        print(f"step {i}: {times[-1]:.2f} s", flush=True)
    row = {
        "variant": args.variant,
        "batch_size": args.batch_size,
        "crop": args.crop,
        "threads": args.threads,
        "median_s": round(statistics.median(times[args.warmup :]), 3),
    }
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
