"""Pack GPU training runs for the trip back: per run, the best model and the last checkpoint's
weights in float16, the history and the log, as RUN.tar.gz (benchmarks/gpu/runs.sh)."""

from __future__ import annotations

import dataclasses
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from napari_embedtrack.engine.modelfile import load_model, save_model


def pack(run: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if (run / "card.json").is_file():
            best = load_model(run)
            save_model(tmp / "best", best.net, best.card, half=True)
            ck = run / "checkpoint.pt"
            if ck.is_file():
                state = torch.load(ck, map_location="cpu", weights_only=True)
                best.net.load_state_dict(state["model"])
                card = dataclasses.replace(best.card, validation={})
                card.training = {**card.training, "note": f"last checkpoint, step {state['step']}"}
                save_model(tmp / "last", best.net, card, half=True)
        with tarfile.open(out / f"{run.name}.tar.gz", "w:gz") as tar:
            for p in (
                tmp / "best",
                tmp / "last",
                run / "history.json",
                run.parent / f"{run.name}.log",
            ):
                if p.exists():
                    tar.add(p, arcname=f"{run.name}/{p.name}")


if __name__ == "__main__":
    dest = Path(sys.argv[1])
    for r in sys.argv[2:]:
        try:
            pack(Path(r), dest)
        except Exception as err:  # one broken run must not lose the others
            print(f"{r}: {err}", file=sys.stderr)
