"""Intensities as the network sees them: held-out frames (plain and a proxy style) against
augmented training crops (issue #13, docs/models.md "Training crops normalised like whole
frames").

Frames are normalised and resized as prediction does; crops come from ``PairSampler`` with
the default augmentation. Per image: median background pixel, median cell pixel (cells =
TRA markers), background-noise SD (``engine.proxy.noise_sd``) and their ratio.

    python benchmarks/intensity_stats.py ../shared/data/ctc/Fluo-C2DL-MSC --scale 0.5 \\
        --frames 40:48 [--crops 300]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from napari_embedtrack.engine import data as D
from napari_embedtrack.engine.predict import resize_image, scaled_shape
from napari_embedtrack.engine.proxy import noise_sd, restyle_movie


def stats(img: np.ndarray, cells: np.ndarray) -> tuple[float, float, float, float] | None:
    fg = cells > 0
    if not fg.any() or fg.all():
        return None
    sd = noise_sd(img)
    bg, cell = float(np.median(img[~fg])), float(np.median(img[fg]))
    return bg, cell, sd, (cell - bg) / sd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="CTC dataset folder")
    p.add_argument("--scale", type=float, default=1.0, help="the model's image scale")
    p.add_argument("--frames", default="40:48", help="START:STOP held-out frames")
    p.add_argument("--style", default="hard", help="proxy style (engine/proxy.py)")
    p.add_argument("--crops", type=int, default=300, help="training crops to sample")
    args = p.parse_args()
    torch.set_num_threads(1)
    seq = D.load_ctc_sequence(args.data)
    a, b = (int(v) for v in args.frames.split(":"))
    frames = list(range(a, b))
    size = scaled_shape(seq.image.shape[1:], args.scale)

    def nearest(arr: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(arr.astype(np.float32))[None, None]
        return F.interpolate(t, size=size, mode="nearest-exact")[0, 0].numpy()

    names = ("background", "cells", "noise SD", "ratio")
    for style in ("plain", args.style):
        movie = seq.image[frames]
        if style != "plain":
            movie = restyle_movie(movie, style)
        rows = [
            stats(resize_image(D.normalize_frame(f), size), nearest(seq.track[t]))
            for f, t in zip(movie, frames, strict=True)
        ]
        r = np.array([x for x in rows if x])
        print(
            f"{style:>8}: "
            + ", ".join(f"{n} {np.median(r[:, k]):.3f}" for k, n in enumerate(names))
        )
    scaled = D.rescale_sequence(seq, args.scale)
    train, _ = D.split_frames(seq.n_frames, 0.1, seq.seg_frames, (a, b))
    sampler = D.PairSampler([scaled], [train], 256, D.AugmentConfig(), 0)
    rows = []
    for _ in range(args.crops):
        crop = sampler.sample()
        x = stats(crop["image"][1], crop["track_labels"])
        if x:
            rows.append(x)
    r = np.array(rows)
    for k, n in enumerate(names):
        pct = np.percentile(r[:, k], [5, 25, 50, 75, 95])
        print(f"crops {n:>10} (5/25/50/75/95th pct): " + " ".join(f"{v:.3f}" for v in pct))


if __name__ == "__main__":
    main()
