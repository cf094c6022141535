"""Run a model once over a CTC sequence (plain or re-styled) and keep the network outputs.

The clustering and linking rules are A/B-tested on these cached outputs
(``benchmarks/ab_postprocess.py``) without running the network again. Writes
``OUT/<style>.npz`` (float16 outputs, no TTA) and ``OUT/GT`` (the ground truth of the
frames). ``warped`` / ``warped-STYLE`` (as in ``evaluate_model.py``: one smooth deformation
of frames and truth, cells the model has not seen, then re-styled) write the warped truth,
so a folder holds either warped or unwarped styles. ``--smooth S`` replaces the card's
Gaussian pre-filter. ``--path reference`` gives the original tiling (``embedtrack
benchmark``'s reference path), the default the fast path.

    python benchmarks/cache_outputs.py --model Fluo-N2DH-SIM+ \\
        --data ../shared/data/ctc/Fluo-N2DH-SIM+ --styles plain hard --out cache/sim
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import add_model_and_frames, add_smooth, warped_copy

from napari_embedtrack.benchmark import FAST, REFERENCE
from napari_embedtrack.engine.data import normalize_frame
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.predict import iter_outputs, save_outputs
from napari_embedtrack.engine.proxy import STYLES, restyle_movie
from napari_embedtrack.io import ctc


def path_kwargs(path: str, card) -> dict:
    """iter_outputs keyword arguments of the benchmark's reference or fast path."""
    kw = dict(REFERENCE if path == "reference" else FAST)
    if kw.get("tile_size") == "crop":
        kw["tile_size"] = card.crop_size
    return kw


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_frames(p)
    p.add_argument(
        "--styles",
        nargs="+",
        default=["plain", "hard"],
        choices=["plain", *STYLES, "warped", *(f"warped-{s}" for s in STYLES)],
    )
    p.add_argument("--tta", action="store_true")
    p.add_argument(
        "--path",
        choices=["fast", "reference"],
        default="fast",
        help="inference path of `embedtrack benchmark` (default fast: iter_outputs' defaults; "
        "reference: tiles of the training crop, fp32, BatchNorm unfolded)",
    )
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast on or off (default: iter_outputs' choice for this machine)",
    )
    add_smooth(p)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    warped = {s.startswith("warped") for s in args.styles}
    if len(warped) > 1:
        p.error("--styles: warped and unwarped styles have different truths; use two --out")
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gt = ctc.read_ground_truth(data / f"{args.seq}_GT")
    start, stop, _ = args.frames.indices(gt.n_frames)
    gt = gt.select_frames(start, stop)
    movie = ctc.read_movie(data / args.seq)[start:stop]
    model = load_model(args.model, device="cpu").with_smooth_sigma(args.smooth)
    card = model.card
    norm = None  # the normalised frames, which every style but plain starts from
    if args.styles != ["plain"]:
        norm = np.stack([normalize_frame(f, card.percentiles) for f in movie])
    if warped.pop():
        norm, gt = warped_copy(norm, gt)
    if (out / "GT").exists():  # the folder's styles must share one truth
        old = ctc.read_ground_truth(out / "GT")
        same = old.tra.shape == gt.tra.shape and np.array_equal(old.tra, gt.tra)
        if not same or sorted(old.seg) != sorted(gt.seg):
            raise SystemExit(
                f"{out / 'GT'} holds another truth (warped or not?): use another --out"
            )
    else:
        ctc.write_ground_truth(out / "GT", gt.tra, gt.lineage, gt.seg)
    for style in args.styles:
        base = style.removeprefix("warped").removeprefix("-") or "plain"
        if style == "plain":
            frames = movie
        elif base == "plain":  # warped only
            frames = norm
        else:
            frames = restyle_movie(norm, base, labels=gt.tra)
        t0 = time.perf_counter()
        outs = list(
            iter_outputs(
                model.net,
                frames,
                **card.input_kwargs,
                tta=args.tta,
                device="cpu",
                **(path_kwargs(args.path, card) | ({} if args.amp is None else {"amp": args.amp})),
            )
        )
        save_outputs(out / f"{style}.npz", outs)
        row = {
            "model": args.model,
            "data": f"{data.name}/{args.seq}",
            "frames": f"{start}-{stop - 1}",
            "style": style,
            "path": args.path,
            "amp": args.amp,
            "tta": args.tta,
            "smooth_sigma": card.smooth_sigma,
            "seconds_per_frame": round((time.perf_counter() - t0) / len(outs), 2),
        }
        print(json.dumps(row), flush=True)
        (out / f"{style}.json").write_text(json.dumps(row))


if __name__ == "__main__":
    main()
