"""A CTC dataset whose SEG masks are filled in with a model's masks matched to the truth's
markers (pseudo-labels), for training on every frame of a sparsely annotated movie.

GOWT1 01 has complete masks on four frames only (21, 31, 33, 39) and masks of one to three
dim cells on 26 more, but TRA markers for every cell in every frame. A model's masks that match a
marker one to one (the marker mostly inside the mask, no other marker in it, no other mask
on the marker) are nearly always right; with them every frame teaches every cell, and
training on dimmed copies of those frames teaches the model to give on dim frames the masks
it gives on bright ones. The truth's own masks take precedence: a model's mask that
overlaps an annotated cell is dropped. Markers without a matched mask stay as they are
(training leaves an unknown disk around them). Frames in ``--keep-truth`` (the validation
window) keep the truth's masks only, so that validation never scores against the model's.

    embedtrack predict ../shared/data/ctc/Fluo-N2DH-GOWT1/01 --model Fluo-N2DH-GOWT1 \\
        --out RES
    python benchmarks/pseudo_labels.py --data ../shared/data/ctc/Fluo-N2DH-GOWT1 \\
        --results RES --keep-truth 39:48 --out PSEUDO
    embedtrack train PSEUDO --init Fluo-N2DH-GOWT1 --val-frames 39:48 ...

The folder links the movie's frames and TRA markers and writes ``01_GT/SEG``; the matched
share is printed (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from napari_embedtrack.cli import _frames
from napari_embedtrack.io import ctc

MARKER_INSIDE = 0.5  #: share of a marker's pixels that must lie in its mask


def matched_masks(labels: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """The masks of ``labels`` (Y, X) matched one to one to ``markers`` (Y, X), relabelled
    with the marker's id; the rest 0."""
    fg = (labels > 0) & (markers > 0)
    (labs, marks), counts = np.unique(
        np.stack([labels[fg], markers[fg]]).astype(np.int64), axis=1, return_counts=True
    )
    markers_in_mask, masks_on_marker = np.bincount(labs), np.bincount(marks)
    marker_size = np.bincount(markers.ravel().astype(np.int64))
    ok = (markers_in_mask[labs] == 1) & (masks_on_marker[marks] == 1)
    ok &= counts >= MARKER_INSIDE * marker_size[marks]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[labs[ok]] = marks[ok]
    return lut[labels]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="CTC dataset folder (sequence 01)")
    p.add_argument("--results", required=True, help="the model's results on 01 (CTC RES)")
    p.add_argument("--keep-truth", type=_frames, help="frames A:B with the truth's masks only")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    data, out = Path(args.data), Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: give a new folder for the dataset")
    truth = ctc.read_ground_truth(data / "01_GT")
    labels, _ = ctc.read_results(args.results)
    if labels.shape != truth.tra.shape:
        raise SystemExit(f"results {labels.shape} and truth {truth.tra.shape} differ in shape")
    keep = range(truth.n_frames)[args.keep_truth] if args.keep_truth else range(0)
    seg, cells, matched = {}, 0, 0
    for t in range(truth.n_frames):
        real = truth.seg.get(t)
        if t in keep:
            if real is not None:
                seg[t] = real
            continue
        ours = matched_masks(labels[t], truth.tra[t])
        if real is not None:  # the truth's masks first; ours where they touch none
            touching = np.unique(ours[real > 0])
            ours[np.isin(ours, touching[touching > 0])] = 0  # the rest lie off every mask
            frame = np.where(ours > 0, ours + int(real.max()), real.astype(np.int32))
        else:
            frame = ours
        n = len(np.unique(truth.tra[t])) - 1
        cells += n
        matched += len(np.unique(ours)) - 1
        if frame.any():
            seg[t] = frame.astype(np.uint16)
    out.mkdir(parents=True, exist_ok=True)
    os.symlink((data / "01").resolve(), out / "01")
    ctc.write_ground_truth(out / "01_GT", truth.tra, truth.lineage, seg)
    print(
        json.dumps(
            {
                "frames": len(seg),
                "markers": cells,
                "matched": matched,
                "share": round(matched / max(cells, 1), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
