"""Validation SEG of models on each dataset's held-out frames, plain and re-styled.

The same measure training uses to choose checkpoints (`engine.train.validate`: SEG without
TTA on the held-out frames with masks, and on the same frames dimmed, unevenly lit and noisy
as a stand-in for a new movie), per dataset, for several models side by side: e.g. the
general model against the dataset models. Prints one JSON line per model and dataset.

    python benchmarks/compare_validation.py --models Fluo-N2DH-SIM+ runs4/general \\
        --data ../shared/data/ctc/Fluo-N2DH-SIM+=59:65 \\
        ../shared/data/ctc/Fluo-N2DH-GOWT1=33:34 ../shared/data/ctc/Fluo-C2DL-MSC=43:48
"""

from __future__ import annotations

import argparse
import json

from napari_embedtrack.cli import _frames, _window
from napari_embedtrack.engine import data as D
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.predict import resolve_device
from napari_embedtrack.engine.train import validate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="model names or folders")
    p.add_argument(
        "--data", nargs="+", required=True, help="DATASET_DIR=START:STOP (held-out frames)"
    )
    args = p.parse_args()
    device = resolve_device("cpu")
    models = {name: load_model(name, device="cpu") for name in args.models}
    for spec in args.data:
        path, frames = spec.rsplit("=", 1)
        lo, hi = _window(_frames(frames))
        seq = D.load_ctc_sequence(path)
        val = list(range(lo, min(hi, seq.n_frames)))
        for name, model in models.items():
            scores = validate(model.net, model.card, [seq], [val], device)
            row = {"model": name, "data": seq.name, "frames": f"{val[0]}-{val[-1]}"}
            print(json.dumps({**row, **{k: round(v, 4) for k, v in scores.items()}}), flush=True)


if __name__ == "__main__":
    main()
