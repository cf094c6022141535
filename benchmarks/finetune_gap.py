"""Fine-tuning from a few annotated frames: SEG on the later frames before and after.

A shipped (or any) model is fine-tuned on the ground truth of the first N annotated frames of
a CTC sequence it was not trained on (sparse: only the SEG masks of those frames and the
tracking markers of those frames; every other frame is unknown) with the fine-tuning recipe
of `embedtrack train --init` (`TrainConfig.for_finetuning`: its stop rule validates on the
last corrected frame and keeps the starting model unless a checkpoint beats it), for at most
M CPU-minutes. SEG is then measured on the annotated frames after them, before and after
fine-tuning, without TTA. Prints one JSON object.

    python benchmarks/finetune_gap.py --model Fluo-N2DH-SIM+ \
        --data ../shared/data/ctc/Fluo-N2DH-GOWT1 --annotated 5 --minutes 10 --out /tmp/ft
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_embedtrack.engine import data as D
from napari_embedtrack.engine.cluster import cluster
from napari_embedtrack.engine.metrics import seg_score
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.pipeline import default_cluster_params
from napari_embedtrack.engine.predict import iter_outputs
from napari_embedtrack.engine.progress import run
from napari_embedtrack.engine.train import TrainConfig, train


def seg_on(model_path, seq: D.TrainingSequence, frames: list[int]) -> float:
    m = load_model(model_path)
    params = default_cluster_params(m.card)
    preds = []
    for out in iter_outputs(
        m.net,
        seq.image[frames],
        **m.card.input_kwargs,
        tta=False,
        device="cpu",
    ):
        preds.append(cluster(out.seediness, out.bandwidth, out.offsets, params))
    return seg_score([seq.seg[t] for t in frames], preds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--annotated", type=int, default=5)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--steps", type=int, help="default: the recipe's")
    p.add_argument("--lr", type=float, help="default: the recipe's")
    p.add_argument("--train-parts", default="all", choices=["all", "decoders"])
    p.add_argument("--anchor", type=float, default=0.0, help="weight-drift penalty (0: off)")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    seq = D.load_ctc_sequence(args.data)
    ann = sorted(seq.seg_frames)[: args.annotated]
    later = [t for t in seq.seg_frames if t > ann[-1]]
    before = seg_on(args.model, seq, later)
    sparse = D.keep_frames(D.only_frames(seq, ann), slice(0, ann[-1] + 1))
    given = {
        "steps": args.steps,
        "lr": args.lr,
        "train_parts": args.train_parts,
        "anchor": args.anchor,
    }
    cfg = TrainConfig.for_finetuning(
        max_seconds=args.minutes * 60,
        device="cpu",
        **{k: v for k, v in given.items() if v is not None},
    )
    t0 = time.perf_counter()
    run(train([sparse], args.out, cfg, init=args.model, name="finetuned"))
    minutes = (time.perf_counter() - t0) / 60
    after = seg_on(args.out, seq, later)
    card = load_model(args.out).card
    print(
        json.dumps(
            {
                "model": str(args.model),
                "data": seq.name,
                "annotated_frames": ann,
                "evaluated_frames": f"{len(later)} annotated frames {later[0]}-{later[-1]}",
                "SEG_before": round(before, 4),
                "SEG_after": round(after, 4),
                "gain": round(after - before, 4),
                "steps": card.training["steps"],
                "train_minutes": round(minutes, 2),
                "lr": cfg.lr,
                "train_parts": cfg.train_parts,
                "anchor": cfg.anchor,
                "outcome": card.training.get("outcome"),
                "mean_annotated_cells_per_frame": float(
                    np.mean([len(np.unique(seq.seg[t])) - 1 for t in ann])
                ),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
