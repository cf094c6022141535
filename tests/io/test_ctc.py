"""Tests for napari_embedtrack.io.ctc: CTC folders read and written, and evaluation.

Lineage <-> napari Tracks and consistent_tracks on their own: test_tracks.py."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_embedtrack.io import ctc
from napari_embedtrack.io.ctc import (
    CTCFormatError,
    GroundTruth,
    evaluate,
    frame_digits,
    read_ground_truth,
    read_movie,
    read_results,
    write_ground_truth,
    write_results,
)
from napari_embedtrack.io.tracks import consistent_tracks, lineage_to_tracks, tracks_to_lineage

CTC_DATASETS = ("Fluo-N2DH-SIM+", "Fluo-N2DH-GOWT1", "Fluo-C2DL-MSC")
# windows of frames (with SEG annotations and, on SIM+, divisions) for the fast variants
SMALL_WINDOWS = {"Fluo-N2DH-SIM+": (8, 14), "Fluo-N2DH-GOWT1": (0, 8), "Fluo-C2DL-MSC": (4, 10)}
SMALL_CROP = 256


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _dataset_gt_dir(root: Path, name: str) -> Path:
    gt_dir = root / name / "01_GT"
    if not gt_dir.is_dir():
        pytest.skip(f"{gt_dir} not available")
    return gt_dir


@functools.cache
def _small_gt(root: Path, name: str) -> GroundTruth:
    """A few frames of a shared dataset, cropped to SMALL_CROP around a division or a SEG cell."""
    gt = read_ground_truth(root / name / "01_GT").select_frames(*SMALL_WINDOWS[name])
    lin = gt.lineage
    children = lin[(lin[:, 3] > 0) & (lin[:, 1] > 0)]
    if len(children):
        tid, t = children[0, 0], children[0, 1]
        centre = np.argwhere(gt.tra[t] == tid).mean(axis=0)
    else:
        t = min(gt.seg)
        ids, counts = np.unique(gt.seg[t][gt.seg[t] > 0], return_counts=True)
        centre = np.argwhere(gt.seg[t] == ids[np.argmax(counts)]).mean(axis=0)
    y0, x0 = (
        int(np.clip(c - SMALL_CROP // 2, 0, s - SMALL_CROP))
        for c, s in zip(centre, gt.tra.shape[1:], strict=True)
    )
    return gt.crop(slice(y0, y0 + SMALL_CROP), slice(x0, x0 + SMALL_CROP))


def _roundtrip_and_score(gt_dir: Path, res_dir: Path) -> tuple[dict[str, float], np.ndarray]:
    """GT read -> napari Tracks -> lineage -> write_results -> evaluate."""
    gt = read_ground_truth(gt_dir)
    data, graph, _ = lineage_to_tracks(gt.tra, gt.lineage)
    lineage = tracks_to_lineage(data, graph)
    _, written = write_results(res_dir, gt.tra, lineage, ndigits=frame_digits(gt_dir / "TRA"))
    expected = gt.lineage[np.argsort(gt.lineage[:, 0])]
    np.testing.assert_array_equal(written, expected)
    return evaluate(gt_dir, res_dir), gt


def _assert_scores(name: str, scores: dict[str, float]) -> None:
    assert scores["DET"] == pytest.approx(1.0)
    assert scores["TRA"] == pytest.approx(1.0)
    if name == "Fluo-N2DH-SIM+":
        assert scores["SEG"] == pytest.approx(1.0)
    else:  # markers are smaller than the SEG masks
        assert 0.0 < scores["SEG"] < 1.0


def _write_frames(folder: Path, frames, prefix="t", digits=3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, frame in enumerate(frames):
        path = folder / f"{prefix}{t:0{digits}d}.tif"
        tifffile.imwrite(path, np.asarray(frame))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# shared data: GT -> tracks -> results -> evaluate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CTC_DATASETS)
def test_ground_truth_roundtrip_small(ctc_root, tmp_path, name):
    _dataset_gt_dir(ctc_root, name)
    small = _small_gt(ctc_root, name)
    assert sum(int(np.count_nonzero(np.unique(m))) - 1 for m in small.seg.values()) > 0
    gt_dir = tmp_path / "01_GT"
    write_ground_truth(gt_dir, small.tra, small.lineage, seg=small.seg)
    scores, gt = _roundtrip_and_score(gt_dir, tmp_path / "01_RES")
    assert gt.tra.shape == (SMALL_WINDOWS[name][1] - SMALL_WINDOWS[name][0], 256, 256)
    _assert_scores(name, scores)


@pytest.mark.slow
@pytest.mark.parametrize("name", CTC_DATASETS)
def test_ground_truth_roundtrip_full(ctc_root, tmp_path, name):
    gt_dir = _dataset_gt_dir(ctc_root, name)
    scores, gt = _roundtrip_and_score(gt_dir, tmp_path / "01_RES")
    n_frames = len(list((ctc_root / name / "01").glob("t*.tif")))
    assert gt.tra.shape[0] == n_frames
    _assert_scores(name, scores)


def test_read_ground_truth_shared(ctc_root):
    _dataset_gt_dir(ctc_root, "Fluo-N2DH-SIM+")
    gt = read_ground_truth(ctc_root / "Fluo-N2DH-SIM+" / "01_GT")
    assert gt.tra.shape == (65, 690, 628)
    assert gt.tra.dtype == np.uint16
    assert sorted(gt.seg) == list(range(65))
    assert gt.lineage.dtype == np.int64
    text = (ctc_root / "Fluo-N2DH-SIM+" / "01_GT" / "TRA" / "man_track.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line.strip()]
    np.testing.assert_array_equal(gt.lineage, np.array(rows, dtype=np.int64))


def test_read_movie_shared_frames(ctc_root, tmp_path):
    src = ctc_root / "Fluo-N2DH-GOWT1" / "01"
    if not src.is_dir():
        pytest.skip(f"{src} not available")
    for t in range(3):  # a short copy keeps the test light
        (tmp_path / f"t{t:03d}.tif").write_bytes((src / f"t{t:03d}.tif").read_bytes())
    movie = read_movie(tmp_path)
    assert movie.shape == (3, 1024, 1024)
    assert movie.dtype == np.uint8
    assert frame_digits(tmp_path) == 3


@pytest.mark.parametrize("source", ["synthetic", "Fluo-N2DH-SIM+"])
def test_perturbed_results_score_below_one(request, tmp_path, source):
    if source == "synthetic":
        gt_dir = request.getfixturevalue("synthetic_ctc") / "01_GT"
    else:
        root = request.getfixturevalue("ctc_root")
        _dataset_gt_dir(root, source)
        small = _small_gt(root, source)
        gt_dir = tmp_path / "01_GT"
        write_ground_truth(gt_dir, small.tra, small.lineage, seg=small.seg)
    gt = read_ground_truth(gt_dir)

    # one mask dropped in the middle of a track
    row = gt.lineage[np.argmax(gt.lineage[:, 2] - gt.lineage[:, 1])]
    t = (row[1] + row[2]) // 2
    labels = gt.tra.copy()
    labels[t][labels[t] == row[0]] = 0
    write_results(tmp_path / "drop", labels, gt.lineage)
    scores = evaluate(gt_dir, tmp_path / "drop", metrics=("DET", "TRA"))
    assert scores["DET"] < 1.0
    assert scores["TRA"] < 1.0

    # one parent link broken
    lineage = gt.lineage.copy()
    lineage[np.flatnonzero(lineage[:, 3] > 0)[0], 3] = 0
    write_results(tmp_path / "link", gt.tra, lineage)
    scores = evaluate(gt_dir, tmp_path / "link", metrics=("DET", "TRA"))
    assert scores["DET"] == pytest.approx(1.0)
    assert scores["TRA"] < 1.0


# --------------------------------------------------------------------------------------------
# results: write / read / gaps / atomicity
# --------------------------------------------------------------------------------------------


def test_write_read_results_roundtrip(tmp_path, synthetic_movie):
    labels, lineage = write_results(
        tmp_path / "res", synthetic_movie.labels, synthetic_movie.lineage
    )
    np.testing.assert_array_equal(labels, synthetic_movie.labels)
    np.testing.assert_array_equal(lineage, synthetic_movie.lineage)
    names = sorted(p.name for p in (tmp_path / "res").iterdir())
    assert names == [f"mask{t:03d}.tif" for t in range(10)] + ["res_track.txt"]
    read_labels, read_lineage = read_results(tmp_path / "res")
    assert read_labels.dtype == np.uint16
    np.testing.assert_array_equal(read_labels, synthetic_movie.labels)
    np.testing.assert_array_equal(read_lineage, synthetic_movie.lineage)


def test_write_results_ndigits_and_2d(tmp_path):
    frame = np.zeros((8, 8), np.uint16)
    frame[2:4, 2:4] = 7
    write_results(tmp_path / "a", frame, ndigits=4)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["mask0000.tif", "res_track.txt"]
    assert (tmp_path / "a" / "res_track.txt").read_text() == "7 0 0 0\n"
    with pytest.raises(ValueError, match="ndigits"):
        write_results(tmp_path / "b", np.zeros((11, 4, 4), np.uint8), ndigits=1)


def test_time_gap_split_keeps_parent_links(tmp_path, gap_labels):
    labels, lineage = gap_labels
    written_labels, written = write_results(tmp_path / "res", labels, lineage)
    # piece after the gap gets a fresh id (max id seen + 1 = 11) linked to the first piece;
    # the daughters hang from the last piece; tracks 9 and 10 (absent from masks) are dropped
    expected = np.array([[1, 0, 1, 0], [2, 5, 6, 11], [3, 5, 6, 11], [5, 0, 6, 0], [11, 3, 4, 1]])
    np.testing.assert_array_equal(written, expected)
    assert np.all(written_labels[3:5, 2:6, 2:6] == 11)
    assert np.all(written_labels[0:2, 2:6, 2:6] == 1)
    read_labels, read_lineage = read_results(tmp_path / "res")
    np.testing.assert_array_equal(read_labels, written_labels)
    np.testing.assert_array_equal(read_lineage, expected)


def test_time_gap_split_scores_perfect_against_split_gt(tmp_path, gap_labels):
    labels, lineage = gap_labels
    gt_labels, gt_lineage = consistent_tracks(labels, lineage)
    write_ground_truth(tmp_path / "GT", gt_labels, gt_lineage, seg={0: gt_labels[0]})
    write_results(tmp_path / "RES", labels, lineage)  # splits the gap itself
    scores = evaluate(tmp_path / "GT", tmp_path / "RES")
    assert scores == pytest.approx({**scores, "SEG": 1.0, "DET": 1.0, "TRA": 1.0})


def test_write_results_refuses_overwrite(tmp_path, synthetic_movie):
    res = tmp_path / "res"
    res.mkdir()
    (res / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_results(res, synthetic_movie.labels, synthetic_movie.lineage)
    assert sorted(p.name for p in res.iterdir()) == ["keep.txt"]
    write_results(res, synthetic_movie.labels, synthetic_movie.lineage, overwrite=True)
    assert not (res / "keep.txt").exists()
    assert (res / "res_track.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # no temp folders left
    empty = tmp_path / "empty"
    empty.mkdir()
    write_results(empty, synthetic_movie.labels, synthetic_movie.lineage)  # empty is fine
    assert (empty / "mask000.tif").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        write_results(tmp_path / "file", synthetic_movie.labels)


@pytest.mark.parametrize("existing", [False, True])
def test_write_results_is_atomic(tmp_path, monkeypatch, synthetic_movie, existing):
    res = tmp_path / "res"
    if existing:
        res.mkdir()
        (res / "old.txt").write_text("old")
    calls = []
    real = ctc._write_mask

    def failing(path, frame):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real(path, frame)

    monkeypatch.setattr(ctc, "_write_mask", failing)
    with pytest.raises(OSError, match="disk full"):
        write_results(res, synthetic_movie.labels, synthetic_movie.lineage, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["res"] if existing else [])
    if existing:
        assert sorted(p.name for p in res.iterdir()) == ["old.txt"]


def test_write_results_rejects_bad_labels(tmp_path):
    with pytest.raises(ValueError, match="integer"):
        write_results(tmp_path / "a", np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="16-bit"):
        write_results(tmp_path / "b", np.full((1, 4, 4), 70000, np.int64))
    with pytest.raises(ValueError, match=r"\(T, Y, X\)"):
        write_results(tmp_path / "c", np.zeros((1, 1, 4, 4), np.uint16))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        write_results(tmp_path / "d", np.zeros((1, 4, 4), np.uint16), np.zeros((2, 3)))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# reading: movies and bad input
# --------------------------------------------------------------------------------------------


def test_read_movie_folder_stack_and_single(tmp_path):
    frames = np.arange(3 * 5 * 6, dtype=np.uint16).reshape(3, 5, 6)
    _write_frames(tmp_path / "seq", frames)
    np.testing.assert_array_equal(read_movie(tmp_path / "seq"), frames)
    tifffile.imwrite(tmp_path / "stack.tif", frames, photometric="minisblack")
    np.testing.assert_array_equal(read_movie(tmp_path / "stack.tif"), frames)
    # tifffile's (and napari's) default for a (3, Y, X) array: planar RGB; read as 3 frames
    tifffile.imwrite(tmp_path / "planar.tif", frames, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_movie(tmp_path / "planar.tif"), frames)
    tifffile.imwrite(tmp_path / "single.tif", frames[0])
    assert read_movie(tmp_path / "single.tif").shape == (1, 5, 6)
    # numbering is sorted numerically, not by name width
    _write_frames(tmp_path / "wide", frames, digits=4)
    np.testing.assert_array_equal(read_movie(str(tmp_path / "wide")), frames)


def test_frame_digits(tmp_path):
    assert frame_digits(1) == 3
    assert frame_digits(999) == 3
    assert frame_digits(1000) == 4
    assert frame_digits(12345) == 5
    _write_frames(tmp_path / "seq", np.zeros((2, 4, 4), np.uint8), digits=4)
    assert frame_digits(tmp_path / "seq") == 4
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 4, 4), np.uint8))
    assert frame_digits(tmp_path / "stack.tif") == 3
    with pytest.raises(CTCFormatError, match="nothing"):
        frame_digits(tmp_path / "nothing")


def _bad_movie_cases(tmp_path: Path):
    """(path to read, file name expected in the message, message fragment)."""
    cases = []
    cases.append((tmp_path / "missing", "missing", "no such"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    cases.append((tmp_path / "empty", "empty", "no tNNN.tif"))
    gap = tmp_path / "gap"
    _write_frames(gap, np.zeros((2, 4, 4), np.uint8))
    (gap / "t001.tif").rename(gap / "t002.tif")
    cases.append((gap, "t001.tif", "missing"))
    mixed = tmp_path / "mixed"
    _write_frames(mixed, [np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8)])
    cases.append((mixed, "t001.tif", "shape"))
    rgb = tmp_path / "rgb"
    _write_frames(rgb, [np.zeros((8, 8), np.uint8)])
    tifffile.imwrite(rgb / "t001.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    cases.append((rgb, "t001.tif", "RGB"))
    vol = tmp_path / "vol"
    vol.mkdir()
    tifffile.imwrite(vol / "t000.tif", np.zeros((5, 8, 8), np.uint8))
    cases.append((vol, "t000.tif", "2D frame"))
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    cases.append((tmp_path / "rgb.tif", "rgb.tif", "RGB"))
    tifffile.imwrite(tmp_path / "4d.tif", np.zeros((2, 5, 8, 8), np.uint8))
    cases.append((tmp_path / "4d.tif", "4d.tif", "(T, Y, X)"))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "t000.tif").write_bytes(b"not a tiff")
    cases.append((junk, "t000.tif", "cannot read"))
    return cases


def test_read_movie_bad_input(tmp_path):
    for path, name, fragment in _bad_movie_cases(tmp_path):
        with pytest.raises(CTCFormatError) as info:
            read_movie(path)
        msg = str(info.value)
        assert name in msg, (path, msg)
        assert fragment in msg, (path, msg)
        assert "\n" not in msg


def _write_gt(root: Path, tra, lineage_text: str) -> Path:
    _write_frames(root / "TRA", tra, prefix="man_track")
    (root / "TRA" / "man_track.txt").write_text(lineage_text)
    return root


def _tiny_tra() -> np.ndarray:
    tra = np.zeros((3, 6, 6), np.uint16)
    tra[:, 0:2, 0:2] = 1
    tra[2, 4:6, 4:6] = 2
    return tra


def test_read_ground_truth_tiny_ok(tmp_path):
    gt_dir = _write_gt(tmp_path / "GT", _tiny_tra(), "1 0 2 0\n2 2 2 0\n")
    _write_frames(tmp_path / "GT" / "SEG", [_tiny_tra()[0]], prefix="man_seg")
    gt = read_ground_truth(gt_dir)
    np.testing.assert_array_equal(gt.tra, _tiny_tra())
    np.testing.assert_array_equal(gt.lineage, [[1, 0, 2, 0], [2, 2, 2, 0]])
    assert list(gt.seg) == [0]


@pytest.mark.parametrize(
    ("text", "name", "fragment"),
    [
        (None, "man_track.txt", "missing"),
        ("1 0 2 0\n", "man_track002.tif", "not listed"),
        ("1 0 1 0\n2 2 2 0\n", "man_track002.tif", "outside its range"),
        ("1 0 2 0\n2 2 2 7\n", "man_track.txt", "unknown parent"),
        ("1 0 2 0\n2 2 2 1\n", "man_track.txt", "parent to end before"),
        ("1 0 2\n2 2 2 0\n", "man_track.txt:1", "four integers"),
        ("1 0 2 0\n1 2 2 0\n", "man_track.txt", "twice"),
    ],
)
def test_read_ground_truth_bad_track_file(tmp_path, text, name, fragment):
    gt_dir = _write_gt(tmp_path / "GT", _tiny_tra(), text or "")
    if text is None:
        (gt_dir / "TRA" / "man_track.txt").unlink()
    with pytest.raises(CTCFormatError) as info:
        read_ground_truth(gt_dir)
    assert name in str(info.value)
    assert fragment in str(info.value)


def test_read_ground_truth_bad_layout(tmp_path):
    with pytest.raises(CTCFormatError, match="nowhere"):
        read_ground_truth(tmp_path / "nowhere")
    (tmp_path / "noTRA").mkdir()
    with pytest.raises(CTCFormatError, match="TRA"):
        read_ground_truth(tmp_path / "noTRA")
    gt_dir = _write_gt(tmp_path / "GT", _tiny_tra(), "1 0 2 0\n2 2 2 0\n")
    (gt_dir / "TRA" / "man_track001.tif").unlink()
    with pytest.raises(CTCFormatError, match=r"man_track001\.tif"):
        read_ground_truth(gt_dir)
    gt_dir = _write_gt(tmp_path / "GT2", _tiny_tra(), "1 0 2 0\n2 2 2 0\n")
    _write_frames(gt_dir / "SEG", [np.zeros((5, 5), np.uint16)], prefix="man_seg")
    with pytest.raises(CTCFormatError, match=r"man_seg000.tif.*shape"):
        read_ground_truth(gt_dir)
    gt_dir = _write_gt(tmp_path / "GT3", _tiny_tra(), "1 0 2 0\n2 2 2 0\n")
    tifffile.imwrite(gt_dir / "TRA" / "man_track001.tif", np.zeros((6, 6), np.float32))
    with pytest.raises(CTCFormatError, match=r"man_track001.tif.*integer"):
        read_ground_truth(gt_dir)


def test_read_ground_truth_missing_marker_is_lenient(tmp_path, caplog):
    tra = _tiny_tra()
    tra[1] = 0  # track 1 lacks its marker in frame 1
    gt = read_ground_truth(_write_gt(tmp_path / "GT", tra, "1 0 2 0\n2 2 2 0\n"))
    assert gt.lineage.shape == (2, 4)
    assert "only 2 of its 3 frames" in caplog.text


def test_read_results_bad_input(tmp_path):
    res = tmp_path / "res"
    _write_frames(res, _tiny_tra(), prefix="mask")
    with pytest.raises(CTCFormatError, match=r"res_track\.txt"):
        read_results(res)
    (res / "res_track.txt").write_text("1 0 2 0\n2 1 2 0\n")  # 2 missing in frame 1
    with pytest.raises(CTCFormatError, match=r"res_track.txt: track 2 .* only 1 of its 2"):
        read_results(res)
    (res / "res_track.txt").write_text("1 0 2 0\n")
    with pytest.raises(CTCFormatError, match=r"mask002.tif: label 2 is not listed"):
        read_results(res)
    with pytest.raises(CTCFormatError, match="no such folder"):
        read_results(tmp_path / "none")


def test_write_ground_truth_validates_and_roundtrips(tmp_path):
    tra = _tiny_tra()
    with pytest.raises(ValueError, match=r"tra\[2\]: label 2 is not listed"):
        write_ground_truth(tmp_path / "a", tra, np.array([[1, 0, 2, 0]]))
    with pytest.raises(ValueError, match="unknown parent"):
        write_ground_truth(tmp_path / "a", tra, np.array([[1, 0, 2, 0], [2, 2, 2, 5]]))
    with pytest.raises(ValueError, match=r"seg\[5\]"):
        write_ground_truth(
            tmp_path / "a", tra, np.array([[1, 0, 2, 0], [2, 2, 2, 0]]), seg={5: tra[0]}
        )
    assert not (tmp_path / "a").exists()
    write_ground_truth(tmp_path / "a", tra, np.array([[2, 2, 2, 0], [1, 0, 2, 0]]), seg={1: tra[1]})
    gt = read_ground_truth(tmp_path / "a")
    np.testing.assert_array_equal(gt.tra, tra)
    np.testing.assert_array_equal(gt.lineage, [[1, 0, 2, 0], [2, 2, 2, 0]])
    np.testing.assert_array_equal(gt.seg[1], tra[1])


def test_ground_truth_select_frames_and_crop(tmp_path, synthetic_movie):
    gt = GroundTruth(
        tra=synthetic_movie.labels,
        seg={t: synthetic_movie.labels[t] for t in (2, 5, 8)},
        lineage=synthetic_movie.lineage,
    )
    sub = gt.select_frames(4, 9)
    assert sub.tra.shape[0] == 5 and sorted(sub.seg) == [1, 4]
    write_ground_truth(tmp_path / "sub", sub.tra, sub.lineage, seg=sub.seg)  # consistent
    assert set(sub.lineage[:, 0]) == set(np.unique(sub.tra)) - {0}
    crop = gt.crop(slice(0, 50), slice(30, 100))
    assert crop.tra.shape == (10, 50, 70)
    write_ground_truth(tmp_path / "crop", crop.tra, crop.lineage, seg=crop.seg)


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def test_evaluate_errors(tmp_path, synthetic_ctc, synthetic_movie):
    gt_dir = synthetic_ctc / "01_GT"
    write_results(tmp_path / "short", synthetic_movie.labels[:5], synthetic_movie.lineage)
    with pytest.raises(CTCFormatError, match=r"short: 5 maskNNN.tif files; expected 10"):
        evaluate(gt_dir, tmp_path / "short")
    with pytest.raises(CTCFormatError, match=r"res_track\.txt"):
        evaluate(gt_dir, tmp_path / "nothing")
    with pytest.raises(ValueError, match="unknown"):
        evaluate(gt_dir, tmp_path / "short", metrics=("XYZ",))
    # results contradicting their own track file are rejected by the evaluator
    bad = tmp_path / "bad"
    write_results(bad, synthetic_movie.labels, synthetic_movie.lineage)
    (bad / "res_track.txt").write_text("1 0 9 0\n")
    with pytest.raises(CTCFormatError, match="rejected"):
        evaluate(gt_dir, bad, metrics=("DET",))


def test_evaluate_without_py_ctcmetrics(tmp_path, monkeypatch):
    for mod in ("ctc_metrics", "ctc_metrics.metrics", "ctc_metrics.scripts.evaluate"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match="py-ctcmetrics"):
        evaluate(tmp_path, tmp_path)


def test_score_results_oracle_gives_one_everywhere(synthetic_ctc, synthetic_movie, tmp_path):
    """The truth written as a result scores 1.0 on SEG/DET/TRA and on the lineage measures
    CT, TF, BC(1), CCA, with as many tracks as the truth and no false division."""
    res = tmp_path / "RES"
    ctc.write_results(res, synthetic_movie.labels, synthetic_movie.lineage)
    scores = ctc.score_results(synthetic_ctc / "01_GT", res)
    for key in (*ctc.TECHNICAL_METRICS, *ctc.LINEAGE_METRICS):
        assert scores[key] == pytest.approx(1.0), key
    assert scores["tracks"] == scores["gt_tracks"] == len(synthetic_movie.lineage)
    assert scores["divisions_false"] == 0 and scores["divisions_right"] >= 1


def test_score_results_sees_a_broken_track(synthetic_ctc, synthetic_movie, tmp_path):
    """Splitting a track in two (the second piece naming the first as parent): TRA barely
    moves, the complete-track and track-fraction measures do."""
    labels = synthetic_movie.labels.copy()
    lineage = synthetic_movie.lineage.copy()
    long = lineage[np.argmax(lineage[:, 2] - lineage[:, 1])]
    tid, start, end = (int(v) for v in long[:3])
    mid = (start + end) // 2 + 1
    new_id = int(lineage[:, 0].max()) + 1
    labels[mid:][labels[mid:] == tid] = new_id
    lineage[lineage[:, 0] == tid, 2] = mid - 1
    children = lineage[:, 3] == tid
    lineage[children, 3] = new_id
    lineage = np.vstack([lineage, [new_id, mid, end, tid]])
    res = tmp_path / "RES"
    ctc.write_results(res, labels, lineage)
    scores = ctc.score_results(synthetic_ctc / "01_GT", res)
    assert scores["TRA"] > 0.95
    assert scores["CT"] < 1.0 and scores["TF"] < 1.0
    assert scores["tracks"] == scores["gt_tracks"] + 1


def test_score_results_lineage_measures_undefined_without_divisions(small_movie, tmp_path):
    labels = small_movie.labels.copy()
    lineage = small_movie.lineage.copy()
    lineage[:, 3] = 0  # no parents: the truth has no division
    ctc.write_ground_truth(tmp_path / "GT", labels, lineage, dict(enumerate(labels)))
    ctc.write_results(tmp_path / "RES", labels, lineage)
    scores = ctc.score_results(tmp_path / "GT", tmp_path / "RES")
    assert scores["BC(1)"] is None and scores["CCA"] is None
    assert scores["TRA"] == pytest.approx(1.0) and scores["CT"] == pytest.approx(1.0)
