"""Command-line arguments shared by the benchmark scripts that score a model on a CTC
sequence (``evaluate_model.py``, ``tune_thresholds.py``)."""

from __future__ import annotations

import argparse

from napari_embedtrack.cli import _frames


def add_model_and_frames(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--data`` (a CTC dataset folder), ``--seq`` and ``--frames START:STOP``."""
    p.add_argument("--model", required=True, help="shipped model name or model folder")
    p.add_argument("--data", required=True, help="CTC dataset folder (with 01 and 01_GT)")
    p.add_argument("--seq", default="01")
    p.add_argument("--frames", type=_frames, default=slice(None))
