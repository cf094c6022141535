"""npe2 sample data: a synthetic movie with exact ground truth, and a bundled real clip."""

from __future__ import annotations

from pathlib import Path

from . import ctc
from .synthetic import make_movie

#: A short clip of a real sequence shipped with the package (CTC layout: ``01``, ``01_GT``).
SIM_CLIP = Path(__file__).resolve().parent / "data" / "sim_clip"


def synthetic_movie() -> list[tuple]:
    """A 20-frame 192x192 synthetic movie of dividing cells, with its ground-truth labels
    (label = track id) and tracks."""
    movie = make_movie(n_frames=20, shape=(192, 192), n_cells=8, seed=0)
    data, graph, props = ctc.lineage_to_tracks(movie.labels, movie.lineage)
    return [
        (movie.image, {"name": "synthetic movie"}, "image"),
        (movie.labels, {"name": "synthetic ground truth", "visible": False}, "labels"),
        (data, {"name": "synthetic ground truth tracks", "graph": graph, "properties": props,
                "visible": False}, "tracks"),
    ]  # fmt: skip


def sim_clip() -> list[tuple]:
    """The bundled clip of a real sequence (and its ground truth, if bundled)."""
    seq = SIM_CLIP / "01"
    if not seq.is_dir():
        raise FileNotFoundError(f"{seq}: the bundled clip is missing from this installation")
    layers = [(ctc.read_movie(seq), {"name": "sim clip"}, "image")]
    gt = SIM_CLIP / "01_GT"
    if (gt / "TRA" / "man_track.txt").is_file():
        truth = ctc.read_ground_truth(gt)
        data, graph, props = ctc.lineage_to_tracks(truth.tra, truth.lineage)
        layers.append((truth.tra, {"name": "sim clip ground truth", "visible": False}, "labels"))
        layers.append((data, {"name": "sim clip ground truth tracks", "graph": graph,
                              "properties": props, "visible": False}, "tracks"))  # fmt: skip
    return layers
