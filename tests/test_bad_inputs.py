"""Bad input (issue #16, part 6): each ends with a one-line message naming what was wrong and
what was expected, before the work where it can be checked, or has a documented behaviour
(docs/user-guide.md, "Bad input"). Real engine, tiny random network, small synthetic movies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_embedtrack.cli import main
from napari_embedtrack.engine.link import MAX_TRACKS, Linker, TooManyTracksError
from napari_embedtrack.engine.pipeline import track_movie
from napari_embedtrack.engine.progress import run
from napari_embedtrack.io import ctc


@pytest.fixture
def movie16(small_movie) -> np.ndarray:
    """3 frames of 64x64 uint16 with cells."""
    return (small_movie.image[:3] * 1000).astype(np.uint16)


def _predict(tmp_path, inp, model, *extra) -> int:
    return main(
        ["predict", str(inp), "--model", str(model), "--out", str(tmp_path / "res"), *extra]
    )


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("embedtrack predict: error: ")
    return lines[0]


# ------------------------------------------------------------------------- NaN / inf pixels
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_pixels_refused_before_work(bad, movie16, tiny_model_dir, tmp_path, capsys):
    movie = movie16.astype(np.float32)
    movie[2, 10, 10] = bad
    tifffile.imwrite(tmp_path / "m.tif", movie, photometric="minisblack")
    assert _predict(tmp_path, tmp_path / "m.tif", tiny_model_dir, "--no-tta") == 2
    assert "frame 2 contains NaN or infinite pixels" in _one_line_error(capsys)
    assert not (tmp_path / "res").exists()
    # in memory, the engine finds it before loading a model (a missing one here)
    with pytest.raises(ValueError, match="frame 2 contains NaN"):
        run(track_movie(movie, "no-such-model"))


# ------------------------------------------------------------------------- constant, empty, 1 frame
def test_constant_movie_is_refused(tiny_model_dir, tmp_path, capsys):
    for value in (0, 7):  # all black, or a blank channel
        path = tmp_path / f"c{value}.tif"
        tifffile.imwrite(path, np.full((3, 48, 40), value, np.uint16), photometric="minisblack")
        assert _predict(tmp_path, path, tiny_model_dir, "--no-tta") == 2
        assert f"every pixel of the 3 frame(s) is {value}; expected" in _one_line_error(capsys)
        assert not (tmp_path / "res").exists()


def test_empty_movies_are_one_line_errors(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "seq").mkdir()
    assert _predict(tmp_path, tmp_path / "seq", tiny_model_dir) == 2
    assert "no tNNN.tif files found" in _one_line_error(capsys)
    for shape, message in [((0, 40, 40), "no frame"), ((3, 1, 40), "at least 2x2")]:
        with pytest.raises(ValueError, match=message):
            run(track_movie(np.zeros(shape, np.uint16), str(tiny_model_dir)))
    assert not (tmp_path / "res").exists()


def test_one_frame_movie_is_segmentation_only(movie16, tiny_model_dir, tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", movie16[0])
    assert _predict(tmp_path, tmp_path / "one.tif", tiny_model_dir, "--no-tta") == 0
    labels, lineage = ctc.read_results(tmp_path / "res")
    assert labels.shape == (1, 64, 64)
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["mask000.tif", "res_track.txt"]
    assert np.all(lineage[:, 1:3] == 0) and np.all(lineage[:, 3] == 0)


# ------------------------------------------------------------------------- too large for memory
def test_movie_too_large_for_memory_refused_before_reading(tiny_model_dir, tmp_path, capsys):
    # a sparse 20 GB TIFF (two 100000x100000 frames): only its header is read
    tifffile.imwrite(tmp_path / "huge.tif", shape=(2, 100_000, 100_000), dtype=np.uint8)
    assert _predict(tmp_path, tmp_path / "huge.tif", tiny_model_dir) == 2
    line = _one_line_error(capsys)
    assert "of memory to track" in line and "available" in line and "100000x100000" in line
    assert not (tmp_path / "res").exists()
    # in memory (a broadcast array takes no room): refused before the model is loaded
    big = np.broadcast_to(np.zeros((), np.float32), (2, 200_000, 200_000))
    with pytest.raises(ValueError, match="crop or bin the frames"):
        run(track_movie(big, "no-such-model"))


# ------------------------------------------------------------------------- stack axes
def _write_axes(path: Path, kind: str) -> np.ndarray:
    data = np.zeros((4, 32, 32), np.uint16)
    if kind == "ZYX":
        tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
    elif kind == "CYX":
        tifffile.imwrite(path, data, ome=True, metadata={"axes": "CYX"})
    elif kind == "YXS":
        data = np.zeros((32, 32, 3), np.uint8)
        tifffile.imwrite(path, data, photometric="rgb")
    elif kind == "TCYX":
        data = np.zeros((4, 2, 32, 32), np.uint16)
        tifffile.imwrite(path, data, ome=True, metadata={"axes": "TCYX"})
    return data


@pytest.mark.parametrize("kind", ["ZYX", "CYX", "YXS", "TCYX"])
def test_stack_that_is_not_tyx_asks_for_the_axes(kind, tiny_model_dir, tmp_path, capsys):
    _write_axes(tmp_path / "s.tif", kind)
    assert _predict(tmp_path, tmp_path / "s.tif", tiny_model_dir) == 2
    line = _one_line_error(capsys)
    assert f"axes {kind}" in line and "s.tif" in line
    assert "--axes" in line or "(T, Y, X)" in line
    assert not (tmp_path / "res").exists()


def test_axes_option_says_which_axis_is_time(movie16, tiny_model_dir, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "z.tif", movie16, imagej=True, metadata={"axes": "ZYX"})
    assert _predict(tmp_path, tmp_path / "z.tif", tiny_model_dir, "--no-tta", "--axes", "TYX") == 0
    assert ctc.read_results(tmp_path / "res")[0].shape == (3, 64, 64)
    # time last: YXT
    yxt = np.ascontiguousarray(movie16[:, :40].transpose(1, 2, 0))  # (40, 64, 3)
    tifffile.imwrite(tmp_path / "yxt.tif", yxt, metadata=None)
    np.testing.assert_array_equal(ctc.read_movie(tmp_path / "yxt.tif", axes="yxt"), movie16[:, :40])
    assert ctc.movie_info(tmp_path / "yxt.tif", axes="YXT") == ((3, 40, 64), np.dtype(np.uint16))
    # a bad --axes value or --axes other than TYX with a CTC folder
    with pytest.raises(SystemExit) as exc:
        main(["predict", "x", "--model", "m", "--out", "o", "--axes", "TZX"])
    assert exc.value.code == 2
    assert "T (time), Y and X each once" in capsys.readouterr().err
    ctc_seq = tmp_path / "seq"
    ctc_seq.mkdir()
    tifffile.imwrite(ctc_seq / "t000.tif", movie16[0])
    shutil.rmtree(tmp_path / "res")
    assert _predict(tmp_path, ctc_seq, tiny_model_dir, "--axes", "YXT") == 2
    assert "TIFF stacks only" in _one_line_error(capsys)


def test_plain_stack_without_axes_metadata_is_read_as_tyx(small_movie, tmp_path):
    movie = (small_movie.image[:5] * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "plain.tif", movie, metadata=None)
    tifffile.imwrite(tmp_path / "shaped.tif", movie, photometric="minisblack")
    tifffile.imwrite(tmp_path / "ij.tif", movie, imagej=True, metadata={"axes": "TYX"})
    for name, axes in (("plain.tif", "IYX"), ("shaped.tif", "QYX"), ("ij.tif", "TYX")):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.series[0].axes == axes
        np.testing.assert_array_equal(ctc.read_movie(tmp_path / name), movie)


# ------------------------------------------------------------------------- memory layout
def test_fortran_strided_and_byteswapped_movies_give_the_same_result(movie16, tiny_model_dir):
    def labels(m):
        return run(track_movie(m, str(tiny_model_dir), tta=False, keep_outputs=False)).labels

    flipped = movie16[:, ::-1, :]
    reference = labels(np.ascontiguousarray(flipped))
    np.testing.assert_array_equal(labels(flipped), reference)  # negative strides
    np.testing.assert_array_equal(labels(np.asfortranarray(flipped)), reference)
    np.testing.assert_array_equal(labels(flipped.astype(">u2")), reference)  # big-endian
    wide = np.zeros((3, 64, 128), np.uint16)
    wide[:, :, ::2] = flipped
    np.testing.assert_array_equal(labels(wide[:, :, ::2]), reference)  # every other column


# ------------------------------------------------------------------------- too many tracks
def test_more_than_65535_tracks_fail_in_the_frame_that_makes_them():
    frame = np.arange(1, 200 * 200 + 1, dtype=np.int64).reshape(200, 200)  # 40,000 cells
    linker = Linker()
    linker.add(frame)
    with pytest.raises(TooManyTracksError, match=r"frame 1: more than 65,535 tracks"):
        linker.add(frame, None)  # no tracking information: 40,000 new tracks
    exact = Linker()
    exact.add(np.arange(1, MAX_TRACKS + 1, dtype=np.int64).reshape(255, 257))
    assert len(exact.lineage) == MAX_TRACKS
    assert issubclass(TooManyTracksError, ValueError)  # the CLI's one-line message


# ------------------------------------------------------------------------- output folder and disk
def test_unwritable_output_refused_before_work(movie16, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "m.tif", movie16, photometric="minisblack")
    (tmp_path / "file").write_text("mine")
    for out, message in [
        (tmp_path / "file" / "res", "is a file; expected a folder"),
        (Path("/proc/embedtrack-test/res"), "cannot write in /proc"),
    ]:
        # checked before the model is looked up (a missing one here)
        rc = main(["predict", str(tmp_path / "m.tif"), "--model", "nope", "--out", str(out)])
        assert rc == 2
        assert message in _one_line_error(capsys)
    assert (tmp_path / "file").read_text() == "mine"


def test_full_disk_refused_before_work_and_tight_disk_warned(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(ctc.OutputError, match=r"free on the disk .* needs at least"):
        ctc.check_results_target(tmp_path / "res", (100_000, 200_000, 200_000))
    # enough for empty masks, not for masks that do not compress: a warning
    t = free // (2 * 2000 * 2000) + 1
    least, most = ctc.result_size((t, 2000, 2000))
    assert least < free < most
    warning = ctc.check_results_target(tmp_path / "res", (t, 2000, 2000))
    assert warning is not None and "may need up to" in warning
    assert ctc.check_results_target(tmp_path / "res", (3, 64, 64)) is None
    assert list(tmp_path.iterdir()) == []  # the checks leave nothing behind


def test_failed_write_leaves_no_folder_and_keeps_the_old_result(tmp_path):
    old = tmp_path / "res"
    ctc.write_results(old, np.ones((2, 8, 8), np.uint16))
    with pytest.raises(ValueError):  # fails after the first mask is written
        ctc.write_results(old, np.full((2, 8, 8), 70_000, np.uint32), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    assert ctc.read_results(old)[0].max() == 1


# ------------------------------------------------------------------------- models
def test_missing_or_mismatched_model_is_one_line_error(movie16, tiny_model_dir, tmp_path, capsys):
    from safetensors.numpy import save_file

    tifffile.imwrite(tmp_path / "m.tif", movie16, photometric="minisblack")
    no_card = tmp_path / "no_card"
    no_card.mkdir()
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(tiny_model_dir / "card.json", no_weights)
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_model_dir, wrong)
    save_file({"encoder.weight": np.zeros((3, 3), np.float32)}, str(wrong / "weights.safetensors"))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, corrupt)
    (corrupt / "weights.safetensors").write_bytes(b"not weights")
    cases = [
        ("no-such-model", "not found: give a model folder or one of"),
        (no_card, "not a model folder (no card.json)"),
        (no_weights, "weights.safetensors is missing"),
        (wrong, "weights do not fit"),
        (corrupt, "corrupt or unreadable weights"),
    ]
    for model, message in cases:
        assert _predict(tmp_path, tmp_path / "m.tif", model) == 2
        assert message in _one_line_error(capsys)
        assert not (tmp_path / "res").exists()
