"""Fine-tuning from a few annotated frames: the later frames scored before and after.

A shipped (or any) model is fine-tuned on the ground truth of the first N annotated frames of
a CTC sequence it was not trained on (sparse: only the SEG masks of those frames and the
tracking markers of those frames; every other frame is unknown) with the fine-tuning recipe
of `embedtrack train --init` (`TrainConfig.for_finetuning`: its stop rule validates on the
last corrected frame and keeps the starting model unless a checkpoint beats it; a starting
model trained on cells of another size trains at the scale where it sees them at its own),
for at most M CPU-minutes. The frames after the annotated ones (up to ``--until``) are then
tracked before and after fine-tuning as `embedtrack predict` does (``--cell-diameter``,
default ``auto``; without TTA unless ``--tta``) and scored with the official measures:
SEG / TRA / CT / tracks, plus the SEG of the raw clusters (no clean-up, no linking; the
figure this benchmark printed until session 19). ``--replay``: the starting model's own
results on the whole movie (tracked as above) are trained on beside the corrections, on
the frames :func:`engine.data.replay_frames` picks (what the fine-tune widget does with a
plugin result). ``--spread``: the N annotated frames spread evenly over the movie instead
of its first N (scored on the same frames; the corrections among them are trained on).
Prints one JSON object.

    python benchmarks/finetune_gap.py --model Fluo-N2DH-SIM+ \\
        --data ../shared/data/ctc/Fluo-N2DH-GOWT1 --annotated 5 --minutes 10 --until 48 \\
        --out /tmp/ft
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_embedtrack.cli import run_predict
from napari_embedtrack.engine import data as D
from napari_embedtrack.engine.cellsize import fit_model, parse_cell_diameter
from napari_embedtrack.engine.cluster import cluster
from napari_embedtrack.engine.metrics import seg_score
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.pipeline import default_cluster_params
from napari_embedtrack.engine.predict import iter_outputs
from napari_embedtrack.engine.progress import run
from napari_embedtrack.engine.train import TrainConfig, train
from napari_embedtrack.io import ctc


def cluster_seg(model, seq: D.TrainingSequence, frames: list[int]) -> float:
    """SEG of the raw clusters (no clean-up, no linking) on the annotated ``frames``."""
    params = default_cluster_params(model.card)
    preds = []
    for out in iter_outputs(
        model.net, seq.image[frames], **model.card.input_kwargs, tta=False, device="cpu"
    ):
        preds.append(cluster(out.seediness, out.bandwidth, out.offsets, params))
    return seg_score([seq.seg[t] for t in frames], preds)


def scored(model_path, seq, data: Path, frames: slice, gt: Path, cell_diameter, tta) -> dict:
    """The model set to the movie's cells (as ``embedtrack predict`` does), the frames
    tracked and scored; the raw clusters' SEG on the annotated frames among them."""
    model = load_model(model_path, device="cpu")
    movie = ctc.read_movie(data / "01")[frames]
    fitted = run(fit_model(movie, model, cell_diameter, device="cpu"))
    annotated = [t for t in seq.seg_frames if frames.start <= t < frames.stop]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "RES"
        t0 = time.perf_counter()
        run_predict(data / "01", fitted, out, device="cpu", progress=False, frames=frames,
                    tta=tta, warn=lambda _: None)  # fmt: skip
        seconds = time.perf_counter() - t0
        s = ctc.score_results(gt, out)
    keys = ("SEG", "DET", "TRA", "CT", "BC(1)", "CCA")
    return {
        **{k: s[k] if s.get(k) is None else round(s[k], 3) for k in keys},
        "tracks": s["tracks"],
        "gt_tracks": s["gt_tracks"],
        "cluster_SEG": round(cluster_seg(fitted, seq, annotated), 3),
        "cell_diameter": round(fitted.card.cell_diameter, 1),
        "model_cell_diameter": round(model.card.cell_diameter, 1),
        "scale": round(fitted.card.scale, 3),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="CTC dataset folder (sequence 01 is used)")
    p.add_argument("--annotated", type=int, default=5)
    p.add_argument(
        "--spread",
        action="store_true",
        help="the N annotated frames spread evenly over the movie (up to --until) instead of "
        "its first N; the frames scored stay those after its first N annotated frames (the "
        "corrections among them included)",
    )
    p.add_argument("--until", type=int, help="score frames up to this one (exclusive)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--steps", type=int, help="default: the recipe's")
    p.add_argument("--lr", type=float, help="default: the recipe's")
    p.add_argument("--train-parts", default="all", choices=["all", "decoders"])
    p.add_argument("--anchor", type=float, default=0.0, help="weight-drift penalty (0: off)")
    p.add_argument("--cell-diameter", default="auto", help="px, auto or model (as trained)")
    p.add_argument("--tta", action="store_true", help="score with test-time augmentation")
    p.add_argument("--replay", action="store_true", help="train on the start's results too")
    p.add_argument(
        "--freeze-norm",
        action=argparse.BooleanOptionalAction,
        help="BatchNorm statistics kept (default: the recipe's, on since session 21)",
    )
    p.add_argument(
        "--replay-share", type=float, help="fraction of the pairs drawn from the replayed frames"
    )
    p.add_argument("--seed", type=int, help="training seed (default: the recipe's)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cell_diameter = parse_cell_diameter(args.cell_diameter)

    data = Path(args.data)
    seq = D.load_ctc_sequence(data)
    until = min(args.until or seq.n_frames, seq.n_frames)
    annotated = sorted(seq.seg_frames)
    frames = slice(annotated[args.annotated - 1] + 1, until)
    if args.spread:
        within = [t for t in annotated if t < until]
        ann = [within[round(i)] for i in np.linspace(0, len(within) - 1, args.annotated)]
    else:
        ann = annotated[: args.annotated]
    with tempfile.TemporaryDirectory() as tmp:
        gt = Path(tmp) / "GT"
        truth = ctc.read_ground_truth(data / "01_GT").select_frames(frames.start, frames.stop)
        ctc.write_ground_truth(gt, truth.tra, truth.lineage, truth.seg)
        before = scored(args.model, seq, data, frames, gt, cell_diameter, args.tta)
        sparse = D.keep_frames(D.only_frames(seq, ann), slice(0, ann[-1] + 1))
        sequences = [sparse]
        replayed: list[int] = []
        if args.replay:
            results = Path(tmp) / "START"
            start = load_model(args.model, device="cpu")
            run_predict(data / "01", start, results, device="cpu", progress=False,
                        tta=args.tta, cell_diameter=cell_diameter, warn=lambda _: None)  # fmt: skip
            labels, lineage = ctc.read_results(results)[:2]
            replayed = D.pairs_with_cells(D.replay_frames(seq.n_frames, ann), labels)
            sequences.append(D.replay_sequence("replay", seq, labels, lineage, replayed))
        given = {
            "steps": args.steps,
            "lr": args.lr,
            "train_parts": args.train_parts,
            "anchor": args.anchor,
            "replay_share": args.replay_share,
            "freeze_norm": args.freeze_norm,
            "seed": args.seed,
        }
        cfg = TrainConfig.for_finetuning(
            max_seconds=args.minutes * 60,
            device="cpu",
            **{k: v for k, v in given.items() if v is not None},
        )
        t0 = time.perf_counter()
        run(train(sequences, args.out, cfg, init=args.model, name="finetuned"))
        minutes = (time.perf_counter() - t0) / 60
        after = scored(args.out, seq, data, frames, gt, cell_diameter, args.tta)
    card = load_model(args.out).card
    print(
        json.dumps(
            {
                "model": str(args.model),
                "data": seq.name,
                "annotated_frames": [int(t) for t in ann],
                "scored_frames": f"{frames.start}-{frames.stop - 1}",
                "cell_diameter": args.cell_diameter,
                "tta": args.tta,
                "replayed_frames": len(replayed),
                "before": before,
                "after": after,
                "SEG_gain": round(after["SEG"] - before["SEG"], 4),
                "steps": card.training["steps"],
                "train_minutes": round(minutes, 2),
                "trained_scale": card.scale,
                "lr": cfg.lr,
                "train_parts": cfg.train_parts,
                "anchor": cfg.anchor,
                "outcome": card.training.get("outcome"),
                "replay": card.training.get("replay"),
                "replay_share": cfg.replay_share,
                "freeze_norm": cfg.freeze_norm,
                "seed": cfg.seed,
                "mean_annotated_cells_per_frame": float(
                    np.mean([len(np.unique(seq.seg[t])) - 1 for t in ann])
                ),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
