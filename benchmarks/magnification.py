"""A movie filmed at another magnification: the model as trained, set to the cells' size it
estimates (``--cell-diameter auto``, the default of ``embedtrack predict`` and the widget),
and set to the size of the truth's cells.

Each zoom resizes the frames (bilinear, anti-aliased when shrinking) and the ground truth
(nearest label) of a CTC sequence's frame range; tracks whose markers vanish at the new size
are dropped from the truth (with their frames). Prints one JSON line per zoom and a
markdown table: SEG / TRA / CT / tracks (the truth's tracks), and the diameters.

    python benchmarks/magnification.py --model Fluo-N2DH-GOWT1 \\
        --data ../shared/data/ctc/Fluo-N2DH-GOWT1 --frames 30:48 --zooms 0.5 0.7 1 1.5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from _common import add_model_and_frames
from skimage.transform import resize

from napari_embedtrack.cli import run_predict
from napari_embedtrack.engine.cellsize import AUTO, MODEL
from napari_embedtrack.engine.modelfile import disc_diameter, load_model
from napari_embedtrack.io import ctc


def zoomed_copy(data: Path, seq: str, frames: slice, zoom: float, folder: Path) -> float:
    """Write ``folder/movie.tif`` and ``folder/GT`` at ``zoom``; the truth's median cell
    diameter (px, as a disc of the SEG masks' median area) at that size."""
    gt = ctc.read_ground_truth(data / f"{seq}_GT")
    start, stop, _ = frames.indices(gt.n_frames)
    gt = gt.select_frames(start, stop)
    movie = ctc.read_movie(data / seq)[start:stop].astype(np.float32)
    shape = tuple(max(2, round(n * zoom)) for n in movie.shape[1:])

    def frame(f):
        return resize(f, shape, order=1, anti_aliasing=zoom < 1, preserve_range=True)

    def nearest(a):
        return resize(a, shape, order=0, anti_aliasing=False, preserve_range=True).astype(a.dtype)

    tra = np.stack([nearest(f) for f in gt.tra])
    seg = {t: nearest(m) for t, m in gt.seg.items()}
    old = {int(r[0]): r for r in gt.lineage}
    rows = []
    for i in np.unique(tra[tra > 0]).tolist():
        present = [t for t in range(len(tra)) if (tra[t] == i).any()]
        first, last = present[0], present[-1]
        for t in range(first, last + 1):  # a marker lost inside its track: drop the track
            if t not in present:
                tra[tra == i] = 0
                break
        else:
            parent = int(old[i][3])
            rows.append([i, first, last, parent])
    kept = {r[0] for r in rows}
    rows = [[i, a, b, p if p in kept else 0] for i, a, b, p in rows]
    ctc.write_ground_truth(folder / "GT", tra, np.array(rows, np.int64).reshape(-1, 4), seg)
    tifffile.imwrite(folder / "movie.tif", np.stack([frame(f) for f in movie]).astype(np.float32))
    return median_diameter(seg.values())


def median_diameter(masks) -> float:
    """Diameter (px) of a disc of the median area of the cells in ``masks`` (label images)."""
    areas = np.concatenate([np.bincount(np.ravel(m))[1:] for m in masks])
    return float(disc_diameter(np.median(areas[areas > 0])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_frames(p)
    p.add_argument("--zooms", type=float, nargs="+", default=[0.5, 1.0])
    args = p.parse_args()
    data = Path(args.data)
    model = load_model(args.model, device="cpu")
    rows = []
    for zoom in args.zooms:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            truth = zoomed_copy(data, args.seq, args.frames, zoom, folder)
            line = {"model": args.model, "data": f"{data.name}/{args.seq}", "zoom": zoom,
                    "model_diameter": round(model.card.cell_diameter, 1),
                    "truth_diameter": round(truth, 1)}  # fmt: skip
            for arm, setting in (("as trained", MODEL), ("auto", AUTO), ("truth", truth)):
                out = folder / f"RES_{arm.replace(' ', '_')}"
                said: list[str] = []
                t0 = time.perf_counter()
                run_predict(folder / "movie.tif", model, out, device="cpu", progress=False,
                            cell_diameter=setting, warn=said.append)  # fmt: skip
                seconds = time.perf_counter() - t0
                s = ctc.score_results(folder / "GT", out)
                keys = ("SEG", "DET", "TRA", "CT", "BC(1)")
                line[arm] = {
                    **{k: s[k] if s[k] is None else round(s[k], 3) for k in keys},
                    "tracks": s["tracks"],
                    "gt_tracks": s["gt_tracks"],
                    "result_diameter": round(median_diameter(ctc.read_results(out)[0]), 1),
                    "seconds": round(seconds, 1),
                    "note": said[0] if said else "",
                }
        rows.append(line)
        print(json.dumps(line), flush=True)
    print()
    print("| zoom | cells (truth / model), px | as trained | auto | truth's size |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[a]['SEG']:.3f} / {r[a]['TRA']:.3f} / {r[a]['CT']:.3f} / "
                 f"{r[a]['tracks']} ({r[a]['gt_tracks']})"
                 for a in ("as trained", "auto", "truth")]  # fmt: skip
        print(f"| {r['zoom']:g} | {r['truth_diameter']:.0f} / {r['model_diameter']:.0f} | "
              + " | ".join(cells) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
