"""Make the bundled sample clips (one per shipped model's dataset), with their ground truth.

Run from the repository root with the shared data next to it:

    python src/napari_embedtrack/data/make_clips.py ../shared/data/ctc

The clips are public Cell Tracking Challenge training data (sequence 01; Maška et al., Nature
Methods 2023), cropped. Which of their frames each shipped model trained on:

- ``sim_clip``: Fluo-N2DH-SIM+ frames 50-64; 50-58 lie in the SIM+ model's training range,
  59-64 are its validation frames.
- ``gowt1_clip``: Fluo-N2DH-GOWT1 frames 31-35 (31 and 33 have masks for every cell): frame
  33 is the GOWT1 model's held-out validation frame, the others are in its training range.
- ``msc_clip``: Fluo-C2DL-MSC frames 43-47: the tail of the movie, held out for validation
  when an MSC model is trained with the default split.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_embedtrack.io import ctc

# folder -> (dataset, frames, rows, columns)
CLIPS = {
    "sim_clip": ("Fluo-N2DH-SIM+", slice(50, 65), slice(320, 640), slice(192, 512)),
    "gowt1_clip": ("Fluo-N2DH-GOWT1", slice(31, 36), slice(288, 800), slice(224, 736)),
    "msc_clip": ("Fluo-C2DL-MSC", slice(43, 48), slice(256, 832), slice(0, 640)),
}


def make_clip(root: Path, folder: str) -> None:
    dataset, frames, ys, xs = CLIPS[folder]
    src = root / dataset
    out = Path(__file__).resolve().parent / folder
    if out.exists():
        shutil.rmtree(out)
    movie = ctc.read_movie(src / "01")[frames, ys, xs]
    gt = ctc.read_ground_truth(src / "01_GT")
    gt = gt.select_frames(frames.start, frames.stop).crop(ys, xs)
    (out / "01").mkdir(parents=True)
    for t, frame in enumerate(movie):
        tifffile.imwrite(out / "01" / f"t{t:03d}.tif", frame, compression="zlib")
    ctc.write_ground_truth(out / "01_GT", gt.tra, gt.lineage, gt.seg)
    print(
        f"wrote {out}: {movie.shape}, {len(gt.lineage)} tracks, "
        f"{int((gt.lineage[:, 3] > 0).sum())} with a parent, {len(gt.seg)} annotated frames, "
        f"dtype {movie.dtype}, max {int(np.max(movie))}"
    )


def main(ctc_root: str) -> None:
    for folder in CLIPS:
        make_clip(Path(ctc_root), folder)


if __name__ == "__main__":
    main(sys.argv[1])
