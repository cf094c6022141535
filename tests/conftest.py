"""Shared fixtures: the CTC data folder (skipped when absent) and small synthetic movies.

The CTC data is looked up in ``$EMBEDTRACK_DATA`` (either the ``data`` folder holding ``ctc/``
or the ``ctc`` folder itself), else in ``../shared/data/ctc`` next to the repository.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_embedtrack.synthetic import SyntheticMovie, make_movie, write_ctc

#: The CTC datasets of ``shared/data/ctc`` (sequence 01 of each).
CTC_DATASETS = ("Fluo-N2DH-SIM+", "Fluo-N2DH-GOWT1", "Fluo-C2DL-MSC")


def find_ctc_root() -> Path | None:
    """The folder holding the CTC datasets, or None if it is not available."""
    env = os.environ.get("EMBEDTRACK_DATA")
    candidates = []
    if env:
        candidates += [Path(env) / "ctc", Path(env)]
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "ctc")
    for path in candidates:
        if path.is_dir() and any((path / name).is_dir() for name in CTC_DATASETS):
            return path
    return None


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def benchmark_script():
    """``load(name)``: the script ``benchmarks/<name>.py`` as a module (the folder on
    ``sys.path`` for its ``_common`` imports while the session lasts)."""
    sys.path.insert(0, str(BENCHMARKS))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod

    yield load
    sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="session")
def ctc_root() -> Path:
    """Path to ``shared/data/ctc``; skips the test when the data is absent."""
    root = find_ctc_root()
    if root is None:
        pytest.skip("CTC data not found (set EMBEDTRACK_DATA or provide ../shared/data/ctc)")
    return root


@pytest.fixture(scope="session")
def synthetic_movie() -> SyntheticMovie:
    """The default synthetic movie (10 frames of 128x128, >= 1 division); read-only arrays."""
    movie = make_movie()
    for arr in (movie.image, movie.labels, movie.lineage):
        arr.flags.writeable = False
    return movie


@pytest.fixture(scope="session")
def synthetic_ctc(tmp_path_factory, synthetic_movie) -> Path:
    """The default synthetic movie written as a CTC dataset: ``root/01`` and ``root/01_GT``.

    Shared by the session: do not write into it (copy it first).
    """
    root = tmp_path_factory.mktemp("synthetic_ctc")
    write_ctc(synthetic_movie, root, seq="01")
    return root


@pytest.fixture
def small_movie() -> SyntheticMovie:
    """A tiny fresh movie (6 frames of 64x64, 3 cells, one forced division); writable."""
    movie = make_movie(n_frames=6, shape=(64, 64), n_cells=3, seed=1, radius=(5.0, 7.0))
    assert np.any(movie.lineage[:, 3] > 0)
    return movie


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised model (crop 64) saved as a model folder, with a card.

    The offset and bandwidth heads are perturbed so that outputs are not trivially zero.
    """
    import torch

    from napari_embedtrack.engine.model import build_model
    from napari_embedtrack.engine.modelfile import ModelCard, save_model

    torch.manual_seed(0)
    net = build_model().eval()
    with torch.no_grad():
        for head in (net.seg_decoder.output_conv, net.track_decoder.output_conv):
            head.weight.normal_(0, 0.01)
    card = ModelCard(name="tiny", crop_size=64, grid_spacing=1 / 63, min_size=10)
    return save_model(tmp_path_factory.mktemp("models") / "tiny", net, card)
