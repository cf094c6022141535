"""Per annotated cell: found, lost or split, and how much of it lies above the seediness threshold.

Re-clusters cached network outputs (``benchmarks/cache_outputs.py``) with a clean-up variant of
``ab_postprocess.py`` (default: the shipped one) and compares every SEG-annotated cell with the
result: found (one object covers more than half of it, the SEG rule) with its area ratio to
the truth, or lost with the share its best object covers and the share of the cell above the
seediness threshold and above 0.2; split when two or more objects each hold over 5 % of it.

    python benchmarks/cell_coverage.py --model Fluo-C2DL-MSC --cache cache10/msc --style hard
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ab_postprocess import VARIANTS, bare, params_for

from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.pipeline import default_cluster_params, retrack
from napari_embedtrack.engine.predict import load_outputs
from napari_embedtrack.engine.progress import run
from napari_embedtrack.io import ctc

LOW = 0.2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--style", default="hard")
    p.add_argument("--variant", default="default", choices=list(VARIANTS))
    p.add_argument("--list", action="store_true", help="print every lost cell")
    args = p.parse_args()
    card = load_model(args.model).card
    params = params_for(bare(default_cluster_params(card)), card.cell_size, VARIANTS[args.variant])
    outputs = load_outputs(Path(args.cache) / f"{args.style}.npz")
    labels = run(retrack(outputs, params)).labels
    gt = ctc.read_ground_truth(Path(args.cache) / "GT")
    ratios, split, lost_partly, lost_none, near = [], 0, 0, 0, 0
    n = 0
    for t, truth in sorted(gt.seg.items()):
        pred, seed = labels[t], np.asarray(outputs[t].seediness, dtype=np.float64)
        for c in np.unique(truth[truth > 0]):
            n += 1
            cell = truth == c
            area = cell.sum()
            ids, counts = np.unique(pred[cell], return_counts=True)
            counts = counts[ids > 0]
            ids = ids[ids > 0]
            split += int(np.count_nonzero(counts > 0.05 * area) > 1)
            if counts.size and counts.max() > 0.5 * area:
                ratios.append((pred == ids[counts.argmax()]).sum() / area)
                continue
            above = np.mean(seed[cell] > params.seed_threshold)
            above_low = np.mean(seed[cell] > LOW)
            cover = counts.max() / area if counts.size else 0.0
            if cover > 0:
                lost_partly += 1
            else:
                lost_none += 1
            near += int(above_low - above > 0.1)
            if args.list:
                print(
                    f"frame {t} cell {c}: {area} px, best object covers {cover:.2f}, "
                    f"seediness > {params.seed_threshold}: {above:.2f}, > {LOW}: {above_low:.2f}"
                )
    r = np.asarray(ratios)
    print(
        f"{Path(args.cache).name} {args.style} ({args.variant}): {n} cells, {r.size} found "
        f"(area ratio to the truth: median {np.median(r):.3f}, 10th-90th percentile "
        f"{np.percentile(r, 10):.2f}-{np.percentile(r, 90):.2f}); lost {n - r.size}: "
        f"{lost_partly} partly covered, {lost_none} without any object, {near} with over a "
        f"tenth of the cell at seediness {LOW}-{params.seed_threshold}; split {split} "
        f"({split / n:.0%})"
    )


if __name__ == "__main__":
    main()
