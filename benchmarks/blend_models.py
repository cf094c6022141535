"""Interpolate the weights of two models fine-tuned from the same start (a "model soup").

Writes a model folder whose weights are ``(1 - alpha) * A + alpha * B`` (every floating
tensor, BatchNorm statistics included; integer tensors such as BatchNorm's step counter are
taken from B) and whose card is B's (thresholds, clean-up), with the blend recorded under
``training`` and no validation figures (measure the blend). Both models
must share the architecture, the image scale and the crop geometry; the interpolation only
makes sense between models that started from the same weights (fine-tuning one into the
other), as in WiSE-FT (Wortsman et al. 2022), where the blend of a model and its fine-tuned
copy was more robust to new data than either.

    python benchmarks/blend_models.py Fluo-C2DL-MSC runs10/msc_gain --alpha 0.5 \\
        --out runs11/msc_blend05
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from napari_embedtrack.engine.modelfile import load_model, save_model

SAME = ("architecture", "scale", "crop_size", "grid_spacing", "percentiles")


def blend_state(a: dict, b: dict, alpha: float) -> dict:
    """``(1 - alpha) * a + alpha * b`` for floating tensors; b's value for the others."""
    if a.keys() != b.keys():
        raise ValueError("the two models have different tensors")
    out = {}
    for k, vb in b.items():
        va = a[k]
        if va.shape != vb.shape:
            raise ValueError(f"{k}: shapes differ, {tuple(va.shape)} vs {tuple(vb.shape)}")
        out[k] = torch.lerp(va.float(), vb.float(), alpha) if vb.is_floating_point() else vb
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="model A (name or folder): alpha 0")
    p.add_argument("b", help="model B (name or folder): alpha 1; its card is kept")
    p.add_argument("--alpha", type=float, required=True, help="weight of B, in [0, 1]")
    p.add_argument("--out", required=True, help="model folder to write")
    args = p.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        print(f"--alpha must be in [0, 1], got {args.alpha}", file=sys.stderr)
        return 2
    ma, mb = load_model(args.a), load_model(args.b)
    for key in SAME:
        va, vb = getattr(ma.card, key), getattr(mb.card, key)
        if va != vb:
            print(f"the models differ in {key}: {va!r} vs {vb!r}", file=sys.stderr)
            return 2
    state = blend_state(ma.net.state_dict(), mb.net.state_dict(), args.alpha)
    mb.net.load_state_dict(state)
    card = mb.card
    card.training = {
        "blend": {"a": str(args.a), "b": str(args.b), "alpha": args.alpha},
        "a_training": ma.card.training,
        "b_training": mb.card.training,
    }
    card.validation = {}  # B's figures are not the blend's: measure it
    card.name = Path(args.out).name
    save_model(args.out, mb.net, card)
    print(f"wrote {args.out}: (1 - {args.alpha}) * {args.a} + {args.alpha} * {args.b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
