"""Make the bundled sample clip: frames 50-64 of Fluo-N2DH-SIM+ 01, cropped to 320 x 320.

Run from the repository root with the shared data next to it:

    python src/napari_embedtrack/data/make_sim_clip.py ../shared/data/ctc/Fluo-N2DH-SIM+

The clip (and its ground truth) is public Cell Tracking Challenge training data
(Maška et al., Nature Methods 2023). Frames 50-58 lie in the shipped SIM+ model's training
range (the first 90% of the sequence); 59-64 are its validation frames.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_embedtrack import ctc

FRAMES = slice(50, 65)
YS, XS = slice(320, 640), slice(192, 512)


def main(dataset: str) -> None:
    root = Path(dataset)
    out = Path(__file__).resolve().parent / "sim_clip"
    if out.exists():
        shutil.rmtree(out)
    movie = ctc.read_movie(root / "01")[FRAMES, YS, XS]
    gt = ctc.read_ground_truth(root / "01_GT")
    gt = gt.select_frames(FRAMES.start, FRAMES.stop).crop(YS, XS)
    (out / "01").mkdir(parents=True)
    for t, frame in enumerate(movie):
        tifffile.imwrite(out / "01" / f"t{t:03d}.tif", frame, compression="zlib")
    ctc.write_ground_truth(out / "01_GT", gt.tra, gt.lineage, gt.seg)
    print(
        f"wrote {out}: {movie.shape}, {len(gt.lineage)} tracks, "
        f"{int((gt.lineage[:, 3] > 0).sum())} with a parent, dtype {movie.dtype}, "
        f"max {int(np.max(movie))}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
