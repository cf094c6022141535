"""Copy a trained model into the package as a shipped model (float16 weights + card).

Writes ``src/napari_embedtrack/models/<name>/`` with float16 weights and the card, adding the
training command, a description and the official CTC scores measured on the validation
frames (the JSON printed by ``benchmarks/evaluate_model.py``), so that ``embedtrack models``
shows them:

    python benchmarks/evaluate_model.py --model runs/gowt1 \\
        --data ../shared/data/ctc/Fluo-N2DH-GOWT1 --frames 31:36 --no-tta --out /tmp/ev \\
        > /tmp/ev.json
    python benchmarks/ship_model.py runs/gowt1 --scores /tmp/ev.json \\
        --settings "01 frames 31-35, no TTA" --command "embedtrack train ..." \\
        --description "EmbedTrack trained on ..."

Refuses to replace an existing shipped model unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from napari_embedtrack.engine.modelfile import SHIPPED_DIR, load_model, save_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="trained model folder")
    p.add_argument("--scores", required=True, help="JSON from benchmarks/evaluate_model.py")
    p.add_argument("--settings", required=True, help="what the scores were measured on")
    p.add_argument("--command", required=True, help="the training command")
    p.add_argument("--description", required=True)
    p.add_argument(
        "--seed-threshold", type=float, help="default seediness threshold (card; default kept)"
    )
    p.add_argument(
        "--score-threshold", type=float, help="default score threshold (card; default kept)"
    )
    p.add_argument("--name", help="shipped model name (default: the card's)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)

    loaded = load_model(args.model)
    card = loaded.card
    scores = json.loads(Path(args.scores).read_text())
    card.validation["ctc"] = {
        **{k: round(float(scores[k]), 4) for k in ("SEG", "DET", "TRA")},
        "settings": args.settings,
    }
    card.training["command"] = args.command
    card.training["weights"] = "float16 (trained in float32)"
    card.description = args.description
    if args.name:
        card.name = args.name
    if args.seed_threshold is not None:
        card.seed_threshold = args.seed_threshold
    if args.score_threshold is not None:
        card.score_threshold = args.score_threshold
    out = SHIPPED_DIR / card.name
    if out.exists():
        if not args.overwrite:
            print(f"{out} exists; pass --overwrite to replace it", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    save_model(out, loaded.net, card, half=True)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"shipped {card.name} to {out} ({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
