"""Score a model with the official CTC metrics on a frame range of a CTC sequence.

Predicts the frames (default settings of `embedtrack predict`: TTA as the model card says;
`--tta` / `--no-tta` to choose; `--smooth SIGMA` replaces the card's pre-filter),
writes CTC results, writes the ground truth of the same frames (renumbered from 0), and
prints SEG/DET/TRA, the lineage measures CT/TF/BC(1)/CCA and the track counts from
py-ctcmetrics (`ctc.score_results`) plus the timing as one JSON object.

    python benchmarks/evaluate_model.py --model Fluo-N2DH-SIM+ \
        --data ../shared/data/ctc/Fluo-N2DH-SIM+ --frames 59:65 --out /tmp/eval
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import tifffile
from _common import add_model_and_frames, add_smooth, warped_copy

from napari_embedtrack.cli import run_predict
from napari_embedtrack.engine.data import normalize_frame
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.proxy import STYLES, restyle_movie
from napari_embedtrack.io import ctc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_frames(p)
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--style",
        default="plain",
        choices=["plain", *STYLES, "warped", *(f"warped-{s}" for s in STYLES)],
        help="score on a re-styled copy of the frames (engine.proxy): a harder stand-in for a "
        "new movie; warped: one smooth deformation of frames and truth (cells the model has "
        "not seen), warped-STYLE: warped, then re-styled",
    )
    p.add_argument(
        "--contrast",
        type=float,
        help="with a re-styled copy: contrast above background times this instead of the "
        "style's (hard: 0.2; 0.1 is a tenth of the light)",
    )
    p.add_argument(
        "--mostly-dim",
        type=float,
        metavar="FACTOR",
        help="with --style uneven: every cell at this brightness factor except a random "
        "tenth at full brightness (the bright few set the frame's levels), not log-uniform",
    )
    add_smooth(p)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    restyle = args.style.removeprefix("warped").removeprefix("-")  # "", "plain" or a style
    if args.contrast is not None and restyle in ("", "plain"):
        p.error("--contrast needs a re-styled copy (--style STYLE or warped-STYLE)")
    if args.mostly_dim is not None and restyle != "uneven":
        p.error("--mostly-dim needs --style uneven or warped-uneven")
    for name in ("contrast", "mostly_dim"):
        value = getattr(args, name)
        if value is not None and not 0.0 < value <= 1.0:
            p.error(f"--{name.replace('_', '-')} must lie in (0, 1], got {value}")

    data, out = Path(args.data), Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    gt = ctc.read_ground_truth(data / f"{args.seq}_GT")
    start, stop, _ = args.frames.indices(gt.n_frames)
    gt = gt.select_frames(start, stop)
    source, frames = data / args.seq, args.frames
    if args.style != "plain":  # the re-styled frames as one TIFF stack
        movie = ctc.read_movie(source)[start:stop]
        pct = load_model(args.model).card.percentiles
        norm = np.stack([normalize_frame(f, pct) for f in movie])
        style = args.style
        if style.startswith("warped"):
            norm, gt = warped_copy(norm, gt)
            style = style.removeprefix("warped").removeprefix("-")
        if style:
            factors = None
            if args.mostly_dim is not None:
                rng = np.random.default_rng(1234)
                factors = {
                    int(k): 1.0 if rng.random() < 0.1 else args.mostly_dim
                    for k in np.unique(gt.tra[gt.tra > 0])
                }
            norm = restyle_movie(
                norm, style, labels=gt.tra, contrast=args.contrast, factors=factors
            )
        source, frames = out / f"{args.style}.tif", slice(None)
        tifffile.imwrite(source, norm)
    ctc.write_ground_truth(out / "GT", gt.tra, gt.lineage, gt.seg)
    t0 = time.perf_counter()
    run_predict(
        source,
        args.model,
        out / "RES",
        tta=args.tta,
        frames=frames,
        progress=False,
        smooth_sigma=args.smooth,
    )
    seconds = time.perf_counter() - t0
    scores = ctc.score_results(out / "GT", out / "RES")
    print(
        json.dumps(
            {
                "model": args.model,
                "data": f"{data.name}/{args.seq}",
                "frames": f"{start}-{stop - 1}",
                "style": args.style,
                **({"contrast": args.contrast} if args.contrast is not None else {}),
                **({"mostly_dim": args.mostly_dim} if args.mostly_dim is not None else {}),
                "tta": "card default" if args.tta is None else args.tta,
                "smooth": "card default" if args.smooth is None else args.smooth,
                **{k: v if v is None else round(v, 4) for k, v in scores.items()},
                "seconds_per_frame": round(seconds / (stop - start), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
