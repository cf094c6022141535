"""Time engine.predict.iter_outputs and measure what bf16 autocast does to the outputs.

A randomly initialised EmbedTrackNet (output heads re-initialised so offsets are not zero) runs
on a synthetic movie of blobs, in fp32 and bf16, with and without TTA. Prints frames/s per
configuration and the largest bf16 - fp32 differences (offsets in pixels).

Usage::

    python benchmarks/bench_predict.py [--frames 5] [--size 512] [--crop 256] [--threads N]
        [--configs fp32,fp32+tta,bf16,bf16+tta]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from napari_embedtrack.engine.model import EmbedTrackNet
from napari_embedtrack.engine.predict import iter_outputs

log = logging.getLogger("bench_predict")


def random_model(seed: int = 0) -> EmbedTrackNet:
    """EmbedTrackNet with default-initialised output heads (offsets of tens of pixels)."""
    torch.manual_seed(seed)
    net = EmbedTrackNet()
    for dec in (net.seg_decoder, net.seed_decoder, net.track_decoder):
        dec.output_conv.reset_parameters()
    return net.eval()


def blob_movie(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """(T, size, size) uint16: ~1 blob per 40x40 px drifting down, plus noise."""
    rng = np.random.default_rng(seed)
    n = max(1, size * size // 1600)
    centres = rng.uniform(0, size, (n, 2))
    yy, xx = np.mgrid[:size, :size]
    movie = np.empty((frames, size, size), np.uint16)
    for t in range(frames):
        img = rng.normal(100, 10, (size, size))
        for cy, cx in centres + np.array([1.5 * t, 0]):
            y0, x0 = int(max(cy - 20, 0)), int(max(cx - 20, 0))
            win = (slice(y0, int(cy + 20)), slice(x0, int(cx + 20)))
            img[win] += 800 * np.exp(-((yy[win] - cy) ** 2 + (xx[win] - cx) ** 2) / 60)
        movie[t] = np.clip(img, 0, 65535)
    return movie


def run(model, movie, crop: int, tta: bool, amp: bool) -> tuple[list, float, float]:
    """Outputs, total seconds, and seconds for frames 1.. (steady state, with tracking)."""
    t0 = time.perf_counter()
    outs, t_first = [], None
    for out in iter_outputs(
        model, movie, grid_spacing=1 / (crop - 1), crop_size=crop, tta=tta, device="cpu", amp=amp
    ):
        outs.append(out)
        if t_first is None:
            t_first = time.perf_counter()
    t1 = time.perf_counter()
    return outs, t1 - t0, t1 - t_first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--configs", default="fp32,fp32+tta,bf16,bf16+tta")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    log.info(
        "torch %s, %d threads, %d frames of %d x %d, tiles %d",
        torch.__version__, torch.get_num_threads(), args.frames, args.size, args.size, args.crop,
    )  # fmt: skip
    model = random_model()
    movie = blob_movie(args.frames, args.size)
    results = {}
    for config in args.configs.split(","):
        amp, tta = config.startswith("bf16"), config.endswith("+tta")
        outs, total, steady = run(model, movie, args.crop, tta, amp)
        results[config] = outs
        steady_fps = (len(outs) - 1) / steady if len(outs) > 1 else float("nan")
        log.info(
            "%-9s %6.3f frames/s overall (%5.1f s), %6.3f frames/s after frame 0",
            config, len(outs) / total, total, steady_fps,
        )  # fmt: skip
    for tta in ("", "+tta"):
        a, b = results.get("fp32" + tta), results.get("bf16" + tta)
        if a is None or b is None:
            continue
        for name in ("offsets", "track_offsets", "bandwidth", "seediness"):
            ref = np.stack([getattr(o, name) for o in a])
            diff = np.abs(ref - np.stack([getattr(o, name) for o in b]))
            log.info(
                "bf16 vs fp32%-4s %-13s max |diff| %.4f  p99 %.4f  mean %.4f  (max |fp32| %.2f)",
                tta, name, diff.max(), np.percentile(diff, 99), diff.mean(), np.abs(ref).max(),
            )  # fmt: skip


if __name__ == "__main__":
    main()
