"""npe2 sample data: a synthetic movie with exact ground truth, and a bundled real clip."""

from __future__ import annotations

from pathlib import Path

from .io import ctc
from .io.tracks import lineage_to_tracks
from .synthetic import make_movie

_DATA = Path(__file__).resolve().parent / "data"
#: Short clips of real sequences shipped with the package (CTC layout: ``01``, ``01_GT``),
#: by dataset (= the name of the shipped model for it); made by ``data/make_clips.py``.
CLIPS = {
    "Fluo-N2DH-SIM+": _DATA / "sim_clip",
    "Fluo-N2DH-GOWT1": _DATA / "gowt1_clip",
    "Fluo-C2DL-MSC": _DATA / "msc_clip",
}


def synthetic_movie() -> list[tuple]:
    """A 20-frame 192x192 synthetic movie of dividing cells, with its ground-truth labels
    (label = track id) and tracks."""
    movie = make_movie(n_frames=20, shape=(192, 192), n_cells=8, seed=0)
    data, graph, props = lineage_to_tracks(movie.labels, movie.lineage)
    return [
        (movie.image, {"name": "synthetic movie"}, "image"),
        (movie.labels, {"name": "synthetic ground truth", "visible": False}, "labels"),
        (data, {"name": "synthetic ground truth tracks", "graph": graph, "properties": props,
                "visible": False}, "tracks"),
    ]  # fmt: skip


def clip_layers(dataset: str) -> list[tuple]:
    """A bundled clip of a real sequence (and its ground truth, if bundled) as layer data."""
    folder = CLIPS[dataset]
    seq = folder / "01"
    if not seq.is_dir():
        raise FileNotFoundError(f"{seq}: the bundled clip is missing from this installation")
    name = f"{dataset} clip"
    layers = [(ctc.read_movie(seq), {"name": name}, "image")]
    gt = folder / "01_GT"
    if (gt / "TRA" / "man_track.txt").is_file():
        truth = ctc.read_ground_truth(gt)
        data, graph, props = lineage_to_tracks(truth.tra, truth.lineage)
        layers.append((truth.tra, {"name": f"{name} ground truth", "visible": False}, "labels"))
        layers.append((data, {"name": f"{name} ground truth tracks", "graph": graph,
                              "properties": props, "visible": False}, "tracks"))  # fmt: skip
    return layers


def sim_clip() -> list[tuple]:
    """15 frames of Fluo-N2DH-SIM+ 01 (simulated nuclei with divisions), with ground truth."""
    return clip_layers("Fluo-N2DH-SIM+")


def gowt1_clip() -> list[tuple]:
    """5 frames of Fluo-N2DH-GOWT1 01 (mouse stem-cell nuclei), with ground truth."""
    return clip_layers("Fluo-N2DH-GOWT1")


def msc_clip() -> list[tuple]:
    """5 frames of Fluo-C2DL-MSC 01 (large, low-contrast stem cells), with ground truth."""
    return clip_layers("Fluo-C2DL-MSC")
