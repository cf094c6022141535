"""``embedtrack predict --scheduler`` (issue #16 part 4): the network and clustering on a dask
cluster given by address; the result folder and the embeddings equal a single-process run's,
byte for byte; bad combinations and an unreachable scheduler are one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_embedtrack.cli import main, partial_folder
from napari_embedtrack.engine import distributed as dist_engine
from napari_embedtrack.synthetic import make_movie

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def address():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def movie_file(tmp_path_factory) -> Path:
    movie = make_movie(n_frames=8, shape=(72, 80), n_cells=5, seed=2, radius=(5.0, 8.0))
    path = tmp_path_factory.mktemp("movie") / "m.tif"
    tifffile.imwrite(path, (movie.image * 3000).astype(np.uint16), photometric="minisblack")
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _predict(inp, model, out, *extra) -> int:
    return main(["predict", str(inp), "--model", str(model), "--out", str(out), "--no-tta",
                 "--device", "cpu", *map(str, extra)])  # fmt: skip


def test_scheduler_run_equals_the_single_process_run(address, movie_file, tiny_model_dir, tmp_path):
    """Chunks of 3 frames on 2 workers: the masks, res_track.txt and the embeddings store's
    chunks are the bytes of a run without --scheduler."""
    want, got = tmp_path / "want.zarr", tmp_path / "got.zarr"
    assert _predict(movie_file, tiny_model_dir, tmp_path / "want", "--save-embeddings", want) == 0
    extra = ("--save-embeddings", got, "--scheduler", address, "--chunk-frames", "3")
    assert _predict(movie_file, tiny_model_dir, tmp_path / "got", *extra) == 0
    assert _files(tmp_path / "got") == _files(tmp_path / "want")
    assert len(_files(tmp_path / "got")) == 9  # 8 masks + res_track.txt
    chunks = sorted(p.relative_to(got) for p in got.rglob("*") if p.is_file())
    assert len([c for c in chunks if c.parts[0] == "seediness"]) >= 8
    for rel in chunks:
        if rel.name not in ("zarr.json", ".zattrs"):
            assert (got / rel).read_bytes() == (want / rel).read_bytes(), rel
    assert not partial_folder(tmp_path / "got").exists()


def _chunks(store: Path) -> dict:
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name not in ("zarr.json", ".zattrs")
    }


def test_smoothing_of_the_run_reaches_the_workers(address, movie_file, tiny_model_dir, tmp_path):
    """``--smooth`` changes the card of this run only; the workers load the model folder
    themselves and must still see the frames smoothed: their outputs are the bytes of a
    single-process run with ``--smooth``, not those of the card's (unsmoothed) frames."""
    stores = {k: tmp_path / f"{k}.zarr" for k in ("want", "got", "off")}
    smooth = ("--smooth", 2)
    assert _predict(movie_file, tiny_model_dir, tmp_path / "want", *smooth,
                    "--save-embeddings", stores["want"]) == 0  # fmt: skip
    extra = ("--save-embeddings", stores["got"], "--scheduler", address, "--chunk-frames", "4")
    assert _predict(movie_file, tiny_model_dir, tmp_path / "got", *smooth, *extra) == 0
    assert _predict(movie_file, tiny_model_dir, tmp_path / "off",
                    "--save-embeddings", stores["off"]) == 0  # fmt: skip
    want, got, off = (_chunks(stores[k]) for k in ("want", "got", "off"))
    assert got == want
    offsets = [k for k in want if k.startswith("offsets")]
    assert offsets and any(want[k] != off[k] for k in offsets)


def test_bad_combinations_are_one_line_errors(
    address, movie_file, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "res"
    assert _predict(movie_file, tiny_model_dir, out, "--scheduler", address, "--resume") == 2
    err = capsys.readouterr().err
    assert "--resume does not combine with --scheduler" in err and err.count("\n") == 1
    assert _predict(movie_file, tiny_model_dir, out, "--chunk-frames", "4") == 2
    assert "--chunk-frames needs --scheduler" in capsys.readouterr().err
    monkeypatch.setattr(dist_engine, "CONNECT_TIMEOUT", 1.0)
    assert _predict(movie_file, tiny_model_dir, out, "--scheduler", "tcp://127.0.0.1:9") == 2
    err = capsys.readouterr().err
    assert err.startswith("embedtrack predict: error: cannot reach the dask scheduler at ")
    assert err.count("\n") == 1
    assert not out.exists()
