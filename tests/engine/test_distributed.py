"""Distributed runs (issue #16 part 4): the network and clustering as tasks on a dask
LocalCluster, linking here; the result equals the single-process path's exactly."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_embedtrack.engine.distributed import (
    connect,
    track_frames_distributed,
    track_movie_distributed,
    vote_shift,
)
from napari_embedtrack.engine.link import vote
from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.pipeline import finish_frames, track_frames
from napari_embedtrack.engine.progress import run
from napari_embedtrack.io.zarr_store import FIELDS, OutputStore
from napari_embedtrack.synthetic import make_movie

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def movie_file(tmp_path_factory):
    movie = make_movie(n_frames=8, shape=(72, 80), n_cells=5, seed=2, radius=(5.0, 8.0))
    path = tmp_path_factory.mktemp("movie") / "m.tif"
    tifffile.imwrite(path, (movie.image * 3000).astype(np.uint16), photometric="minisblack")
    return path


def _frames(raw) -> np.ndarray:
    return np.stack([raw.read_frame(t) for t in range(raw.n_frames)])


def test_vote_shift_votes_like_the_float_offsets():
    """The linker given the integer shifts votes exactly as with the float32 offsets: halves
    (rounded to even), NaN, infinities, shifts far outside the frame."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(3, 40, size=2)
        labels = rng.integers(0, 6, size=(h, w)).astype(np.int32)
        prev = rng.integers(0, 5, size=(h, w)).astype(np.uint32)
        off = (rng.normal(0, 4, size=(2, h, w)) * 2).round() / 2  # many x.5 values
        off += rng.choice([0, 0, 0, 0.25, -0.5], size=off.shape)
        off[rng.random(off.shape) < 0.05] = np.nan
        off[rng.random(off.shape) < 0.03] = np.inf
        off[rng.random(off.shape) < 0.03] = -1e6
        off = off.astype(np.float32)
        shift = vote_shift(labels, off)
        assert shift.dtype == np.int16
        for a, b in zip(vote(labels, off, prev), vote(labels, shift, prev), strict=True):
            np.testing.assert_array_equal(a, b)


def test_local_cluster_equals_the_single_process_path(client, movie_file, tiny_model_dir, tmp_path):
    """Chunks of 3 frames (boundaries at 3 and 6) on 2 workers: the same tracked frames,
    lineage, finished masks and network outputs (float16 store) as one process."""
    model = load_model(tiny_model_dir)
    movie = tifffile.imread(movie_file)
    want_out = OutputStore(tmp_path / "want.zarr", movie.shape)
    want = run(track_frames(movie, model, tta=False, device="cpu", outputs=want_out))
    got_out = OutputStore(tmp_path / "got.zarr", movie.shape)
    progress = []
    got = run(
        track_frames_distributed(
            movie_file,
            tiny_model_dir,
            client,
            tmp_path / "shared",
            tta=False,
            device="cpu",
            outputs=got_out,
            chunk_frames=3,
        ),
        progress.append,
    )
    assert got.complete and got.n_frames == want.n_frames == 8
    np.testing.assert_array_equal(_frames(got), _frames(want))
    np.testing.assert_array_equal(got.lineage, want.lineage)
    assert (want.lineage[:, 2] > want.lineage[:, 1]).sum() > 5  # tracks across frames
    for a, b in zip(finish_frames(got), finish_frames(want), strict=True):
        np.testing.assert_array_equal(a, b)
    assert want.params.grow_dim > 0  # the seediness kept for the dim-cell rims, the same
    for t in range(8):
        assert got.read_seediness(t) is not None
        np.testing.assert_array_equal(got.read_seediness(t), want.read_seediness(t))
    assert len(OutputStore(got_out.path)) == 8
    for k in FIELDS:
        np.testing.assert_array_equal(got_out.array(k)[:], want_out.array(k)[:])
    assert [p.done for p in progress] == list(range(9))


def test_track_movie_distributed_and_frames(client, movie_file, tiny_model_dir, tmp_path):
    """Frames 2..7 of the movie (the workers open it and take the frames), in chunks of 4:
    as one process on those frames; the labels in memory as track_movie gives them."""
    movie = tifffile.imread(movie_file)[2:]
    want = run(track_frames(movie, tiny_model_dir, tta=False, device="cpu"))
    got = run(
        track_movie_distributed(
            str(movie_file),
            load_model(tiny_model_dir),
            client.scheduler.address,
            tmp_path / "shared",
            frames=slice(2, None),
            tta=False,
            device="cpu",
            chunk_frames=4,
        )
    )
    labels, lineage = finish_frames(want)
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.lineage, lineage)
    assert got.complete and got.outputs == []


def test_errors_are_one_line(client, movie_file, tiny_model_dir, tmp_path):
    with pytest.raises(
        ValueError, match=r"cannot reach the dask scheduler at tcp://127\.0\.0\.1:9"
    ):
        connect("tcp://127.0.0.1:9", timeout=1)
    with pytest.raises(ValueError, match="expected a path"):
        run(track_frames_distributed(np.zeros((2, 8, 8)), tiny_model_dir, client, tmp_path))
    model = load_model(tiny_model_dir)
    model.path = None
    with pytest.raises(ValueError, match="not a model held only in memory"):
        run(track_frames_distributed(movie_file, model, client, tmp_path / "s"))
    # a NaN pixel in frame 4 (the second chunk's second frame) is named as frame 4
    movie = tifffile.imread(movie_file).astype(np.float32)
    movie[4, 10, 10] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", movie, photometric="minisblack")
    with pytest.raises(ValueError, match=r"^frame 4 contains NaN"):
        gen = track_frames_distributed(
            tmp_path / "nan.tif", tiny_model_dir, client, tmp_path / "n", tta=False, chunk_frames=3
        )
        run(gen)


def test_a_stopped_distributed_run_resumes_in_one_process(
    client, movie_file, tiny_model_dir, tmp_path
):
    """Stopped after the first chunk: the frames linked so far, into the run's checkpoint;
    track_frames resumes it (no scheduler) to the uninterrupted single-process result."""
    from napari_embedtrack.engine.checkpoint import RunCheckpoint

    movie = tifffile.imread(movie_file)
    want = run(track_frames(movie, tiny_model_dir, tta=False, device="cpu"))
    checkpoint = RunCheckpoint(tmp_path / "partial", {"movie": "m"})
    done = []
    gen = track_frames_distributed(
        movie_file, tiny_model_dir, client, checkpoint.folder / "distributed.zarr", tta=False,
        device="cpu", chunk_frames=3, should_stop=lambda: bool(done), checkpoint=checkpoint,
    )  # fmt: skip
    stopped = run(gen, lambda p: done.append(p.done) if p.done >= 3 else None)
    assert not stopped.complete and stopped.n_frames == 3 and checkpoint.frames_done() == 3
    np.testing.assert_array_equal(_frames(stopped), _frames(want)[:3])
    got = run(
        track_frames(
            movie, tiny_model_dir, tta=False, device="cpu", checkpoint=checkpoint, resume=True
        )
    )
    np.testing.assert_array_equal(_frames(got), _frames(want))
    np.testing.assert_array_equal(got.lineage, want.lineage)
