"""Movies filmed at another magnification: a model set to the movie's cells (engine.cellsize)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.transform import resize

from napari_embedtrack.cli import run_predict
from napari_embedtrack.engine.cellsize import (
    AUTO,
    MODEL,
    estimate_cell_diameter,
    fit_model,
    mask_diameters,
    parse_cell_diameter,
)
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.predict import SCALE_RANGE
from napari_embedtrack.engine.progress import run
from napari_embedtrack.io import ctc

CLIP = Path(__file__).resolve().parents[2] / "src/napari_embedtrack/data/gowt1_clip"


@pytest.fixture(scope="module")
def gowt1():
    return load_model("Fluo-N2DH-GOWT1", device="cpu")


@pytest.fixture(scope="module")
def half_clip(tmp_path_factory):
    """The bundled GOWT1 clip at half its size (a lower magnification: cells ~28 px across
    instead of the model's ~60), as a TIFF stack with its ground truth shrunk alike."""
    gt = ctc.read_ground_truth(CLIP / "01_GT")
    movie = ctc.read_movie(CLIP / "01").astype(np.float32)
    shape = tuple(n // 2 for n in movie.shape[1:])
    small = np.stack([resize(f, shape, order=1, anti_aliasing=True, preserve_range=True)
                      for f in movie]).astype(np.float32)  # fmt: skip

    def nearest(a):
        return resize(a, shape, order=0, anti_aliasing=False, preserve_range=True).astype(a.dtype)

    tra = np.stack([nearest(f) for f in gt.tra])
    seg = {t: nearest(m) for t, m in gt.seg.items()}
    rows = []
    for r in gt.lineage:  # every track keeps its frames at this size (checked by the writer)
        rows.append([int(r[0]), int(r[1]), int(r[2]), int(r[3])])
    folder = tmp_path_factory.mktemp("half")
    ctc.write_ground_truth(folder / "GT", tra, np.array(rows, np.int64), seg)
    tifffile.imwrite(folder / "movie.tif", small)
    return folder, small, seg


def test_the_cards_own_diameter_changes_nothing(gowt1):
    same = gowt1.with_cell_diameter(gowt1.card.cell_diameter)
    assert same.card == gowt1.card and same.net is gowt1.net
    assert gowt1.with_cell_diameter(None) is gowt1


def test_smaller_cells_scale_the_model_and_its_sizes(gowt1):
    card = gowt1.card
    half = gowt1.with_cell_diameter(card.cell_diameter / 2).card
    assert half.scale == pytest.approx(2 * card.scale)
    assert half.cell_size == round(card.cell_size / 4)
    assert half.min_size == max(1, round(card.min_size / 4))
    assert half.cell_diameter == pytest.approx(card.cell_diameter / 2, rel=0.01)
    assert half.pixel_spacing == pytest.approx(2 * card.pixel_spacing)
    assert gowt1.card == card  # the loaded model is untouched


@pytest.mark.parametrize("bad", [0, -3.0, math.nan, math.inf, "30", True])
def test_bad_diameters_are_refused(gowt1, bad):
    with pytest.raises(ValueError, match="cell diameter must be"):
        gowt1.with_cell_diameter(bad)


def test_a_diameter_too_far_from_the_models_is_refused(gowt1):
    too_small = gowt1.card.cell_diameter * gowt1.card.scale / SCALE_RANGE[1] / 2
    with pytest.raises(
        ValueError, match=r"too far from the .*-px cells of model .* image scale would be"
    ):
        gowt1.with_cell_diameter(too_small)


def test_a_card_without_cell_size_cannot_be_set(gowt1):
    unknown = dataclasses.replace(gowt1, card=dataclasses.replace(gowt1.card, cell_size=0))
    with pytest.raises(ValueError, match="does not know the size"):
        unknown.with_cell_diameter(30)
    # auto leaves such a model as it is; a number cannot be honoured
    assert run(fit_model(np.zeros((2, 64, 64), np.float32), unknown, AUTO)) is unknown
    with pytest.raises(ValueError, match="does not know the size"):
        run(estimate_cell_diameter(np.zeros((2, 64, 64), np.float32), unknown))


@pytest.mark.parametrize(
    ("text", "value"), [("auto", AUTO), (" Model ", MODEL), ("30", 30.0), (12.5, 12.5)]
)
def test_settings_parse(text, value):
    assert parse_cell_diameter(text) == value


@pytest.mark.parametrize("bad", ["-1", "0", "big", "nan", None, False])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="positive number of pixels, 'auto' or 'model'"):
        parse_cell_diameter(bad)


def test_mask_diameters_are_discs_and_leave_out_cells_cut_by_the_edge():
    yy, xx = np.mgrid[:100, :100]
    labels = np.zeros((100, 100), np.uint32)
    labels[(yy - 50) ** 2 + (xx - 50) ** 2 <= 15**2] = 1  # inside: ~30 px across
    labels[(yy - 5) ** 2 + (xx - 90) ** 2 <= 10**2] = 2  # cut by the top edge
    d = mask_diameters(labels)
    assert d.shape == (1,) and d[0] == pytest.approx(30, abs=0.5)
    only_edge = np.where(labels == 2, 2, 0).astype(np.uint32)
    assert mask_diameters(only_edge).shape == (1,)  # when every cell is cut, they count
    assert mask_diameters(np.zeros((10, 10), np.uint32)).size == 0


def test_the_estimate_on_a_movie_of_the_models_size_is_its_own():
    # the bundled SIM+ clip (frames of SIM+ 01): its cells are the SIM+ model's size
    sim = load_model("Fluo-N2DH-SIM+", device="cpu")
    movie = ctc.read_movie(CLIP.parent / "sim_clip/01")
    steps = []
    d = run(estimate_cell_diameter(movie, sim), steps.append)
    assert d == sim.card.cell_diameter
    assert len(steps) == 3  # one round of three frames
    assert run(fit_model(movie, sim, AUTO)) is sim


def test_the_estimate_finds_smaller_cells(gowt1, half_clip):
    _, small, seg = half_clip
    areas = np.concatenate([np.bincount(m.ravel())[1:] for m in seg.values()])
    truth = 2 * math.sqrt(float(np.median(areas[areas > 0])) / math.pi)  # ~28 px
    d = run(estimate_cell_diameter(small, gowt1))
    assert truth * 0.9 < d < truth * 1.25 < gowt1.card.cell_diameter / 1.6


def test_tracking_a_smaller_movie_set_to_its_cells_is_better(half_clip, tmp_path):
    # measured: SEG 0.73 as trained, 0.86 set to the cells' size from the truth
    folder, _, _ = half_clip
    scores = {}
    for setting in (MODEL, AUTO):
        out = tmp_path / f"{setting}_RES"
        warnings = []
        run_predict(folder / "movie.tif", "Fluo-N2DH-GOWT1", out, device="cpu",
                    progress=False, cell_diameter=setting, warn=warnings.append)  # fmt: skip
        scores[setting] = ctc.score_results(folder / "GT", out)
        if setting == AUTO:
            assert len(warnings) == 1 and "cells are about" in warnings[0]
    assert scores[MODEL]["SEG"] < 0.76
    assert scores[AUTO]["SEG"] > scores[MODEL]["SEG"] + 0.08
    assert scores[AUTO]["TRA"] > 0.95


def test_too_few_cells_leave_the_model_as_it_is(monkeypatch):
    """One synthetic cell (and its daughters) of ~20 px in three frames: fewer masks than
    MIN_CELLS, which say too little (without the guard: ~31 px); the model's own size."""
    from napari_embedtrack.engine import cellsize
    from napari_embedtrack.synthetic import make_movie

    sim = load_model("Fluo-N2DH-SIM+", device="cpu")
    movie = make_movie(n_frames=3, shape=(160, 160), n_cells=1, seed=5, radius=(9.0, 11.0))
    assert run(estimate_cell_diameter(movie.image, sim)) == sim.card.cell_diameter
    assert run(fit_model(movie.image, sim, AUTO)) is sim
    monkeypatch.setattr(cellsize, "MIN_CELLS", 0)
    assert run(estimate_cell_diameter(movie.image, sim)) < sim.card.cell_diameter * 0.7


@pytest.mark.slow
def test_a_model_that_breaks_the_cells_keeps_its_own_size():
    """The GOWT1 model on MSC 01 (large, dim cells it breaks into pieces ~0.8 of any size
    it is set to): without the confidence check the rounds ran away to ~20 px (SEG 0.0,
    530 tracks for 13 on frames 20-47); its confidence falls on the way, so its own size."""
    data = Path(__file__).resolve().parents[3] / "shared/data/ctc/Fluo-C2DL-MSC/01"
    if not data.is_dir():
        pytest.skip(f"CTC data not found at {data}")
    from napari_embedtrack.io import ctc

    movie = ctc.read_movie(data)[20:48]
    model = load_model("Fluo-N2DH-GOWT1", device="cpu")
    assert run(estimate_cell_diameter(movie, model)) == model.card.cell_diameter
