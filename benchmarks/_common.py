"""Command-line arguments shared by the benchmark scripts that score a model on a CTC
sequence (``evaluate_model.py``, ``tune_thresholds.py``, ``cache_outputs.py``)."""

from __future__ import annotations

import argparse

from napari_embedtrack.cli import _frames


def add_model_and_frames(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--data`` (a CTC dataset folder), ``--seq`` and ``--frames START:STOP``."""
    p.add_argument("--model", required=True, help="shipped model name or model folder")
    p.add_argument("--data", required=True, help="CTC dataset folder (with 01 and 01_GT)")
    p.add_argument("--seq", default="01")
    p.add_argument("--frames", type=_frames, default=slice(None))


def add_smooth(p: argparse.ArgumentParser) -> None:
    """``--smooth SIGMA``: the Gaussian pre-filter replacing the card's (``smooth_sigma``)."""
    p.add_argument(
        "--smooth",
        type=float,
        default=None,
        metavar="SIGMA",
        help="Gaussian pre-filter SD in network pixels, replacing the card's (0: off)",
    )


def warped_copy(movie, gt):
    """The movie and its ground truth (``io.ctc.GroundTruth``) under one smooth random
    deformation (``engine.proxy.warp_sequence``: cells the model has not seen, the same
    tracks and lineage)."""
    from napari_embedtrack.engine.proxy import warp_sequence
    from napari_embedtrack.io.ctc import GroundTruth

    frames, tra, seg = warp_sequence(movie, gt.tra, gt.seg, gt.lineage)
    return frames, GroundTruth(tra=tra, seg=seg, lineage=gt.lineage.copy())
