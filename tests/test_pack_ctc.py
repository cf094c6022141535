"""benchmarks/pack_ctc.py: CTC sequences packed for a GPU machine come back pixel for pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_embedtrack.io import ctc
from napari_embedtrack.synthetic import make_movie

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pack_ctc(benchmark_script):
    return benchmark_script("pack_ctc")


@pytest.mark.parametrize("times256", [False, True])
def test_pack_and_unpack_restore_every_pixel(tmp_path, pack_ctc, times256):
    movie = make_movie(n_frames=4, shape=(48, 40), n_cells=3, seed=2)
    raw = (movie.image * 200).astype(np.uint16)
    raw = raw * 256 if times256 else raw + 71  # MSC-like 8-bit-in-16 or SIM+-like
    seq = tmp_path / "orig" / "Fluo-Test" / "01"
    seq.mkdir(parents=True)
    for t, frame in enumerate(raw):
        tifffile.imwrite(seq / f"t{t:03d}.tif", frame)
    ctc.write_ground_truth(
        seq.parent / "01_GT", movie.labels, movie.lineage, seg={1: movie.labels[1]}
    )
    packed = tmp_path / "p.xz"
    pack_ctc.pack([seq], packed)
    pack_ctc.unpack(packed, tmp_path / "back", check=tmp_path / "orig")  # exits if any differs
    back = tmp_path / "back" / "Fluo-Test"
    for t in range(4):
        out = tifffile.imread(back / "01" / f"t{t:03d}.tif")
        assert out.dtype == np.uint16 and np.array_equal(out, raw[t])
    assert (back / "01_GT" / "TRA" / "man_track.txt").read_text() == (
        seq.parent / "01_GT" / "TRA" / "man_track.txt"
    ).read_text()
    assert np.array_equal(
        tifffile.imread(back / "01_GT" / "SEG" / "man_seg001.tif"), movie.labels[1]
    )
