"""Clustering thresholds of a model on annotated frames of a CTC sequence: SEG per setting.

Runs the network once over the frames (no TTA unless ``--tta``), then re-clusters the cached
outputs for every pair of seediness / score thresholds and prints SEG (the in-memory score,
same definition as py-ctcmetrics) on the frames with SEG ground truth, as JSON lines. Use it
on validation frames to choose a model card's defaults (``benchmarks/ship_model.py
--seed-threshold``), and report that the frames were used for the choice.

    python benchmarks/tune_thresholds.py --model runs3/msc_b \\
        --data ../shared/data/ctc/Fluo-C2DL-MSC --frames 43:48
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from _common import add_model_and_frames

from napari_embedtrack.engine.metrics import seg_score
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.pipeline import retrack, track_movie
from napari_embedtrack.engine.progress import run
from napari_embedtrack.io import ctc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_frames(p)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--seed", type=float, nargs="+", default=[0.3, 0.35, 0.4, 0.45, 0.5, 0.55])
    p.add_argument("--score", type=float, nargs="+", default=[0.4, 0.5, 0.6])
    args = p.parse_args()

    data = Path(args.data)
    gt = ctc.read_ground_truth(data / f"{args.seq}_GT")
    start, stop, _ = args.frames.indices(gt.n_frames)
    movie = ctc.read_movie(data / args.seq)[start:stop]
    frames = [t for t in range(start, stop) if t in gt.seg]
    if not frames:
        raise SystemExit(f"no SEG ground truth in frames {start}-{stop - 1}")
    model = load_model(args.model, device="cpu")
    result = run(track_movie(movie, model, tta=args.tta, device="cpu"))
    refs = [gt.seg[t] for t in frames]
    for seed in args.seed:
        for score in args.score:
            params = dataclasses.replace(result.params, seed_threshold=seed, score_threshold=score)
            labels = run(retrack(result.outputs, params)).labels
            seg = seg_score(refs, [labels[t - start] for t in frames])
            print(json.dumps({"seed": seed, "score": score, "SEG": round(seg, 4)}))


if __name__ == "__main__":
    main()
