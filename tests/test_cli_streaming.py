"""``embedtrack predict`` on long movies (issue #16, part 1): movies read frame by frame from
every input kind, results written frame by frame, identical to the in-memory pipeline;
network outputs in a zarr store, also across an interrupted run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_embedtrack.cli import main, partial_folder
from napari_embedtrack.engine.checkpoint import RunCheckpoint
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.pipeline import default_cluster_params, track_frames
from napari_embedtrack.engine.postprocess import finish_tracks
from napari_embedtrack.engine.predict import load_outputs
from napari_embedtrack.engine.progress import run
from napari_embedtrack.io import ctc
from napari_embedtrack.io.movies import open_movie
from napari_embedtrack.io.zarr_store import OutputStore, open_outputs
from napari_embedtrack.synthetic import make_movie


@pytest.fixture(scope="module")
def movie16() -> np.ndarray:
    movie = make_movie(n_frames=8, shape=(72, 80), n_cells=5, seed=2, radius=(5.0, 8.0))
    return (movie.image * 3000).astype(np.uint16)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _predict(inp, model, out, *extra) -> int:
    return main(["predict", str(inp), "--model", str(model), "--out", str(out), "--no-tta",
                 "--device", "cpu", *extra])  # fmt: skip


def test_streamed_result_equals_the_in_memory_pipeline(movie16, tiny_model_dir, tmp_path):
    """The CLI's files equal those of today's in-memory path: every tracked frame stacked,
    finish_tracks on the whole movie, write_results."""
    tifffile.imwrite(tmp_path / "m.tif", movie16, photometric="minisblack")
    assert _predict(tmp_path / "m.tif", tiny_model_dir, tmp_path / "res") == 0
    model = load_model(tiny_model_dir)
    params = default_cluster_params(model.card)
    raw = run(track_frames(movie16, model, tta=False, device="cpu", params=params))
    stacked = np.stack([raw.read_frame(t) for t in range(raw.n_frames)])
    labels, lineage = finish_tracks(stacked, raw.lineage, params)
    ctc.write_results(tmp_path / "want", labels, lineage)
    assert _files(tmp_path / "res") == _files(tmp_path / "want")
    assert not partial_folder(tmp_path / "res").exists()


def _inputs(movie16: np.ndarray, root: Path) -> dict[str, Path]:
    import zarr

    paths = {
        "stack": root / "stack.tif",  # uncompressed: memory-mapped frame by frame
        "compressed": root / "zlib.tif",  # page by page
        "folder": root / "seq",  # file by file
        "zarr": root / "plain.zarr",
        "ome-zarr": root / "image.ome.zarr",
    }
    tifffile.imwrite(paths["stack"], movie16, photometric="minisblack")
    tifffile.imwrite(paths["compressed"], movie16, photometric="minisblack", compression="zlib")
    paths["folder"].mkdir()
    for t, frame in enumerate(movie16):
        tifffile.imwrite(paths["folder"] / f"t{t:03d}.tif", frame)
    z = zarr.open_array(str(paths["zarr"]), mode="w", shape=movie16.shape,
                        chunks=(1, *movie16.shape[1:]), dtype="uint16")  # fmt: skip
    z[:] = movie16
    ome = paths["ome-zarr"]
    t, y, x = movie16.shape
    level = zarr.open_array(str(ome / "0"), mode="w", shape=(t, 1, 1, y, x),
                            chunks=(1, 1, 1, y, x), dtype="uint16")  # fmt: skip
    level[:] = movie16[:, None, None]
    axes = [
        {"name": n, "type": k}
        for n, k in zip("tczyx", ["time", "channel", "space", "space", "space"], strict=True)
    ]
    attrs = {"multiscales": [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}]}]}
    (ome / ".zattrs").write_text(json.dumps(attrs))
    (ome / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    return paths


def test_every_input_kind_is_read_frame_by_frame_to_the_same_result(
    movie16, tiny_model_dir, tmp_path
):
    paths = _inputs(movie16, tmp_path)
    modes = {"stack": "memmap", "compressed": "pages"}
    results = {}
    for kind, path in paths.items():
        lazy = open_movie(path)
        assert lazy.shape == movie16.shape and not isinstance(lazy, np.ndarray)
        if kind in modes:
            assert lazy._read.mode == modes[kind]
        np.testing.assert_array_equal(lazy[3], movie16[3])
        assert _predict(path, tiny_model_dir, tmp_path / f"res_{kind}", "--frames", "1:7") == 0
        results[kind] = _files(tmp_path / f"res_{kind}")
    first = results.pop("stack")
    assert len(first) == 7  # 6 masks + res_track.txt
    for kind, files in results.items():
        assert files == first, kind


def test_embeddings_go_to_a_zarr_store_or_an_npz(movie16, tiny_model_dir, tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", movie16, photometric="minisblack")
    store, npz = tmp_path / "emb.zarr", tmp_path / "emb.npz"
    assert _predict(tmp_path / "m.tif", tiny_model_dir, tmp_path / "a", "--save-embeddings",
                    str(store)) == 0  # fmt: skip
    assert _predict(tmp_path / "m.tif", tiny_model_dir, tmp_path / "b", "--save-embeddings",
                    str(npz)) == 0  # fmt: skip
    lazy, whole = open_outputs(store), load_outputs(npz)
    assert isinstance(lazy, OutputStore) and len(lazy) == len(whole) == 8
    assert lazy.array("offsets").dtype == np.float16
    for a, b in zip(lazy, whole, strict=True):
        np.testing.assert_array_equal(a.stack(), b.stack())
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_interrupted_run_with_an_outputs_store_resumes(movie16, tiny_model_dir, tmp_path):
    """The outputs store lives in the checkpoint folder: a resumed run keeps the finished
    frames' outputs and ends with the uninterrupted run's outputs and tracks."""
    model = load_model(tiny_model_dir)

    def track(folder, **kw):
        ckpt = RunCheckpoint(folder, {"movie": "m"})
        store = OutputStore(folder / "outputs.zarr", movie16.shape)
        raw = run(track_frames(movie16, model, tta=False, device="cpu", outputs=store,
                               checkpoint=ckpt, **kw))  # fmt: skip
        finisher = raw.finisher()
        lineage = run(finisher.plan())
        return raw, np.stack(list(finisher.frames())), lineage, store

    _, want, want_lineage, want_store = track(tmp_path / "whole")
    calls = iter(range(100))
    part, *_ = track(tmp_path / "run", should_stop=lambda: next(calls) >= 2)
    assert not part.complete and part.n_frames == 3
    raw, got, got_lineage, store = track(tmp_path / "run", resume=True)
    assert raw.complete and len(store) == 8
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_lineage, want_lineage)
    for a, b in zip(store, want_store, strict=True):
        np.testing.assert_array_equal(a.stack(), b.stack())
    # a checkpoint without stored outputs cannot be resumed with outputs kept
    track(tmp_path / "plain")
    shutil.rmtree(tmp_path / "plain" / "outputs.zarr")
    with pytest.raises(ValueError, match="outputs were not stored"):
        track(tmp_path / "plain", resume=True)
