"""The `embedtrack` command line, end to end on small synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_embedtrack.cli import main
from napari_embedtrack.engine.predict import load_outputs
from napari_embedtrack.io import ctc
from napari_embedtrack.io.zarr_store import open_outputs


def test_predict_writes_ctc_results_that_evaluate_scores(
    synthetic_ctc, tiny_model_dir, tmp_path, capsys
):
    res = tmp_path / "01_RES"
    rc = main(
        [
            "predict",
            str(synthetic_ctc / "01"),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(res),
            "--no-tta",
            "--gt",
            str(synthetic_ctc / "01_GT"),
        ]
    )
    assert rc == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(scores) >= {"SEG", "DET", "TRA"}
    assert all(0.0 <= scores[k] <= 1.0 for k in ("SEG", "DET", "TRA"))
    labels, _lineage = ctc.read_results(res)
    assert labels.shape == ctc.read_movie(synthetic_ctc / "01").shape
    assert sorted(p.name for p in res.iterdir())[0] == "mask000.tif"
    # evaluate subcommand prints the same JSON
    assert main(["evaluate", "--gt", str(synthetic_ctc / "01_GT"), "--res", str(res)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["SEG"] == pytest.approx(scores["SEG"])
    # the lineage measures and the track counts beside SEG/DET/TRA
    assert {"CT", "TF", "BC(1)", "CCA", "tracks", "gt_tracks"} <= set(again)
    assert again["gt_tracks"] == len(ctc.read_lineage(synthetic_ctc / "01_GT/TRA/man_track.txt"))


def test_predict_refuses_to_overwrite(synthetic_ctc, tiny_model_dir, tmp_path, capsys):
    res = tmp_path / "res"
    res.mkdir()
    (res / "keep.txt").write_text("mine")
    rc = main(
        [
            "predict",
            str(synthetic_ctc / "01"),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(res),
            "--no-tta",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "Traceback" not in err
    assert (res / "keep.txt").read_text() == "mine"


def test_predict_tiff_stack_odd_size_frames_and_embeddings(tiny_model_dir, tmp_path, small_movie):
    stack = tmp_path / "movie.tif"
    movie = (small_movie.image[:, :61, :59] * 1000).astype(np.uint16)
    tifffile.imwrite(stack, movie)
    emb = tmp_path / "emb.npz"
    rc = main(
        [
            "predict",
            str(stack),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(tmp_path / "res"),
            "--no-tta",
            "--frames",
            "1:4",
            "--save-embeddings",
            str(emb),
        ]
    )
    assert rc == 0
    labels, _ = ctc.read_results(tmp_path / "res")
    assert labels.shape == (3, 61, 59)
    outputs = load_outputs(emb)
    assert len(outputs) == 3
    assert outputs[0].offsets.shape == (2, 61, 59)


PREDICT = ["predict", "{movie}", "--model", "{model}", "--out", "{out}"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "{missing}", "--model", "{model}", "--out", "{out}"], "missing"),
        (["predict", "{movie}", "--model", "no-such-model", "--out", "{out}"], "not found"),
        (
            ["predict", "{movie}", "--model", "{model}", "--out", "{out}", "--frames", "9:12"],
            "selects no frame",
        ),
        (
            ["train", "{movie}", "--out", "{out}", "--val-frames", "1:2", "--val-frames", "a=1:2"],
            "do not mix",
        ),
        (["train", "{movie}", "--out", "{out}", "--val-frames", "x=1-2"], "START:STOP"),
        (
            ["predict", "{movie}", "--model", "{model}", "--out", "{out}", "--smooth", "-1"],
            "smooth_sigma must be a number in [0, 8]",
        ),
        (
            [*PREDICT, "--cell-diameter", "-3"],
            "cell diameter must be a positive number of pixels, 'auto' or 'model'",
        ),
        (
            [*PREDICT, "--cell-diameter", "30"],
            "does not know the size of its training cells",
        ),
        (
            [
                "predict",
                "{movie}",
                "--model",
                "Fluo-N2DH-GOWT1",
                "--out",
                "{out}",
                "--cell-diameter",
                "2",
            ],
            "cell diameter 2 px is too far from the 60-px cells of model 'Fluo-N2DH-GOWT1'",
        ),
    ],
)
def test_bad_input_is_one_line_error(args, message, tiny_model_dir, tmp_path, capsys, small_movie):
    movie = tmp_path / "m.tif"
    tifffile.imwrite(movie, (small_movie.image * 100).astype(np.uint16))
    fill = {
        "missing": str(tmp_path / "missing"),
        "model": str(tiny_model_dir),
        "out": str(tmp_path / "out"),
        "movie": str(movie),
    }
    rc = main([a.format(**fill) for a in args])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_smooth_option_smooths_the_frames_the_network_sees(tiny_model_dir, tmp_path, small_movie):
    """``--smooth SIGMA`` gives the masks of the movie smoothed by hand (the tiny model's
    scale is 1, so SIGMA network pixels are SIGMA frame pixels) and not those of the movie
    as it is."""
    from scipy import ndimage

    image = (small_movie.image * 1000).astype(np.float32)
    smoothed = np.stack([ndimage.gaussian_filter(f, 1.5) for f in image])
    paths = {"raw": tmp_path / "raw.tif", "by_hand": tmp_path / "by_hand.tif"}
    tifffile.imwrite(paths["raw"], image)
    tifffile.imwrite(paths["by_hand"], smoothed)

    def masks(movie, *extra):
        out = tmp_path / f"res{len(list(tmp_path.iterdir()))}"
        args = ["predict", str(movie), "--model", str(tiny_model_dir), "--out", str(out)]
        assert main([*args, "--no-tta", *extra]) == 0
        return ctc.read_results(out)[0]

    with_option = masks(paths["raw"], "--smooth", "1.5")
    np.testing.assert_array_equal(with_option, masks(paths["by_hand"]))
    assert not np.array_equal(with_option, masks(paths["raw"]))


def test_models_lists_user_models(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("EMBEDTRACK_MODELS", str(tiny_model_dir.parent))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "user" in out
    assert "defaults: TTA off, smoothing 0 px" in out


def test_train_then_predict_with_the_result(synthetic_ctc, tmp_path, capsys):
    out = tmp_path / "model"
    rc = main(
        [
            "train",
            str(synthetic_ctc),
            "--steps",
            "2",
            "--out",
            str(out),
            "--batch-size",
            "1",
            "--crop-size",
            "64",
            "--val-fraction",
            "0.2",
        ]
    )
    assert rc == 0
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["steps"] == 2
    assert card["crop_size"] == 64
    assert "SEG_plain" in card["validation"]
    rc = main(
        [
            "predict",
            str(synthetic_ctc / "01"),
            "--model",
            str(out),
            "--out",
            str(tmp_path / "res"),
            "--no-tta",
            "--frames",
            "0:3",
        ]
    )
    assert rc == 0


def test_finetune_with_replay(synthetic_ctc, tmp_path, capsys):
    """``train --init M --replay``: the starting model's own results on the frames away from
    the annotated ones are trained on beside them; without ``--init`` a one-line refusal
    and no model folder."""
    import shutil

    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    from napari_embedtrack.engine.data import replay_frames

    data = tmp_path / "data"
    shutil.copytree(synthetic_ctc, data)
    for t in range(10):  # markers inside the cells (as in the CTC's data), not their masks
        path = data / "01_GT" / "TRA" / f"man_track{t:03d}.tif"
        lab = tifffile.imread(path)
        core = np.where(ndimage.binary_dilation(find_boundaries(lab), iterations=2), 0, lab)
        assert set(np.unique(core)) == set(np.unique(lab))
        tifffile.imwrite(path, core.astype(lab.dtype))
        if t < 6:  # annotations (SEG masks) on frames 6-9 only
            (data / "01_GT" / "SEG" / f"man_seg{t:03d}.tif").unlink()
    out = tmp_path / "model"
    args = [
        "train",
        str(data),
        "--out",
        str(out),
        "--replay",
        "--steps",
        "1",
        "--val-frames",
        "8:10",
    ]
    assert main([*args, "--init", "Fluo-N2DH-SIM+", "--batch-size", "1"]) == 0
    frames = replay_frames(10, [6, 7, 8, 9])
    assert frames  # the frames away from the annotations
    err = capsys.readouterr().err
    assert f"the starting model's results on {len(frames)} frames replayed" in err
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["data"] == ["data/01", "data/01-replay"]
    assert card["training"]["replay"].startswith(("used", "not used"))
    assert card["validation"]["frames"] == {"data/01": "8-9"}  # never the replay
    assert main([*args[:3], str(tmp_path / "refused"), *args[4:]]) == 2
    assert "give it with --init" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_finetune_with_replay_interrupted(synthetic_ctc, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the starting model tracks the movie: one line, exit 130, no folder."""
    import napari_embedtrack.engine.replay as replay

    def interrupted(*_args, **_kw):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(replay, "model_replay", interrupted)
    out = tmp_path / "model"
    with pytest.raises(SystemExit) as stop:
        main(
            ["train", str(synthetic_ctc), "--init", "Fluo-N2DH-SIM+", "--replay", "--out", str(out)]
        )
    assert stop.value.code == 130
    assert "interrupted while the starting model tracked the movies" in capsys.readouterr().err
    assert not out.exists()


def test_val_frames_per_dataset():
    from napari_embedtrack.cli import _val_window

    assert _val_window(None) is None
    assert _val_window(["3:5"]) == (3, 5)
    assert _val_window(["Fluo-N2DH-GOWT1=33:34", "Fluo-C2DL-MSC/=43:"]) == {
        "Fluo-N2DH-GOWT1": (33, 34),
        "Fluo-C2DL-MSC": (43, 10**9),
    }


def test_train_with_init_uses_the_finetuning_recipe():
    from napari_embedtrack.cli import build_parser, train_config
    from napari_embedtrack.engine.train import TrainConfig

    parse = build_parser().parse_args
    cfg = train_config(parse(["train", "data", "--init", "Fluo-N2DH-SIM+", "--out", "m"]))
    recipe = TrainConfig.for_finetuning()
    for key in ("steps", "lr", "max_seconds", "val_every", "val_fraction"):
        assert getattr(cfg, key) == getattr(recipe, key), key
    scratch = train_config(parse(["train", "data", "--out", "m"]))
    assert scratch.lr == TrainConfig().lr and scratch.epochs == 15 and scratch.steps == 0
    assert scratch.max_seconds == 0
    # options given on the command line win over either recipe
    given = train_config(
        parse(["train", "d", "--init", "M", "--out", "m", "--lr", "3e-4", "--max-minutes", "2"])
    )
    assert given.lr == pytest.approx(3e-4) and given.max_seconds == 120 and given.steps == 300
    epochs = train_config(parse(["train", "d", "--init", "M", "--out", "m", "--epochs", "2"]))
    assert epochs.epochs == 2 and epochs.steps == 0
    assert cfg.freeze_norm and not scratch.freeze_norm
    tuned = train_config(
        parse(["train", "d", "--init", "M", "--out", "m", "--contrast-range", "0.05:0.6",
               "--no-freeze-norm"])
    )  # fmt: skip
    assert tuned.augment.contrast_range == (0.05, 0.6) and not tuned.freeze_norm
    assert cfg.augment.contrast_range == (0.08, 1.0)  # the default
    for bad in ("0:0.5", "0.6:0.05", "0.1", "a:b", "0.5:2"):
        with pytest.raises(ValueError, match="--contrast-range must be LO:HI"):
            train_config(parse(["train", "d", "--out", "m", "--contrast-range", bad]))


# --------------------------------------------------------------------------- batch (issue #16)
def _write_batch(tmp_path, small_movie):
    """Three movies: a/01 (CTC folder), b/01 (CTC folder), c.tif; and bad.tif with NaN."""
    movie = (small_movie.image[:3] * 1000).astype(np.float32)
    for name in ("a", "b"):
        seq = tmp_path / "data" / name / "01"
        seq.mkdir(parents=True)
        for t, frame in enumerate(movie.astype(np.uint16)):
            tifffile.imwrite(seq / f"t{t:03d}.tif", frame)
    tifffile.imwrite(tmp_path / "data" / "c.tif", movie, photometric="minisblack")
    bad = movie.copy()
    bad[1, 5, 5] = np.nan
    tifffile.imwrite(tmp_path / "data" / "bad.tif", bad, photometric="minisblack")
    return movie


def test_batch_glob_reports_a_failed_movie_and_runs_the_others(
    tiny_model_dir, tmp_path, small_movie, capsys
):
    _write_batch(tmp_path, small_movie)
    out = tmp_path / "results"
    data = tmp_path / "data"
    pattern = str(data / "*" / "01")
    rc = main(
        [
            *("predict", pattern, str(data / "*.tif"), "--model", str(tiny_model_dir)),
            *("--out", str(out), "--no-tta"),
        ]
    )
    assert rc == 1  # one movie failed
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    table = captured.out.strip().splitlines()
    assert table[0].split()[:7] == ["movie", "status", "frames", "tracks", "cells", "px",
                                    "seconds"]  # fmt: skip
    rows = {line.split()[0]: line for line in table[1:-1]}
    assert len(rows) == 4
    assert rows[str(data / "bad.tif")].split()[1] == "failed"
    assert "frame 1 contains NaN" in rows[str(data / "bad.tif")]
    for movie in ("a/01", "b/01", "c.tif"):  # the tiny model does not know its cells' size
        row = rows[str(data / movie)].split()
        assert row[1:3] == ["ok", "3"] and row[4] == "model"
    assert table[-1] == "3 of 4 movie(s) tracked, 1 failed"
    assert sorted(p.name for p in out.iterdir()) == ["a_01_RES", "b_01_RES", "c_RES"]
    for name in ("a_01_RES", "b_01_RES", "c_RES"):
        assert ctc.read_results(out / name)[0].shape == (3, 64, 64)
    # the failure was also reported when it happened, as one line
    assert f"embedtrack predict: error: {data / 'bad.tif'}: frame 1 contains NaN" in captured.err

    # running again: existing results are not overwritten; each movie says so
    assert main(["predict", pattern, "--model", str(tiny_model_dir), "--out", str(out)]) == 1
    assert capsys.readouterr().out.count("pass --overwrite") == 2


def test_batch_list_file(tiny_model_dir, tmp_path, small_movie, capsys):
    _write_batch(tmp_path, small_movie)
    listing = tmp_path / "data" / "movies.txt"
    listing.write_text("# my movies\n\nc.tif\na/01\nmissing/01\nc.tif\n")
    out = tmp_path / "results"
    emb = tmp_path / "emb"
    rc = main(
        [
            *("predict", f"@{listing}", "--model", str(tiny_model_dir), "--out", str(out)),
            *("--no-tta", "--frames", "0:2", "--save-embeddings", str(emb)),
        ]
    )
    assert rc == 1
    table = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[1] for line in table[1:-1]] == ["ok", "ok", "failed"]  # c.tif once
    assert "no such file or folder" in table[3]
    assert sorted(p.name for p in out.iterdir()) == ["a_01_RES", "c_RES"]  # vs missing/01
    assert ctc.read_results(out / "a_01_RES")[0].shape == (2, 64, 64)
    assert sorted(p.name for p in emb.iterdir()) == ["a_01.zarr", "c.zarr"]
    outputs = open_outputs(emb / "c.zarr")  # read lazily, frame by frame
    assert len(outputs) == 2 and outputs[1].offsets.shape == (2, 64, 64)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["{data}/*.nothing"], "no movie matches this pattern"),
        (["@{data}/no-list.txt"], "cannot read the list of movies"),
        (["{data}/c.tif", "{data}/a/01", "--gt", "{data}/a/01_GT"], "--gt scores one movie"),
        (["{data}/c.tif", "{data}/a/01", "--model", "no-such-model"], "not found"),
    ],
)
def test_batch_errors_before_any_movie(
    inputs, message, tiny_model_dir, tmp_path, small_movie, capsys
):
    _write_batch(tmp_path, small_movie)
    args = [a.format(data=tmp_path / "data") for a in inputs]
    model = [] if "--model" in args else ["--model", str(tiny_model_dir)]
    rc = main(["predict", *args, *model, "--out", str(tmp_path / "results")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_result_names_are_distinct():
    from pathlib import Path

    from napari_embedtrack.cli import result_names

    movies = [Path("/d/SIM/01"), Path("/d/GOWT1/01"), Path("/e/x.tif"), Path("/e/y.TIFF")]
    assert result_names(movies) == ["SIM_01", "GOWT1_01", "x", "y"]
    assert result_names([Path("/d/x/01")]) == ["01"]


def test_train_min_cell_to_noise_option_reaches_the_augmentation():
    from napari_embedtrack.cli import build_parser, train_config

    args = build_parser().parse_args(["train", "d", "--out", "m", "--min-cell-to-noise", "1"])
    assert train_config(args).augment.min_cell_to_noise == 1.0
    args = build_parser().parse_args(["train", "d", "--out", "m"])
    assert train_config(args).augment.min_cell_to_noise == 0.0  # off unless asked


def test_train_workers_and_schedule_options_reach_the_config():
    from napari_embedtrack.cli import build_parser, train_config

    parse = build_parser().parse_args
    cfg = train_config(parse(["train", "d", "--out", "m", "--workers", "3", "--schedule", "time"]))
    assert (cfg.workers, cfg.schedule) == (3, "time")
    cfg = train_config(parse(["train", "d", "--out", "m"]))
    assert (cfg.workers, cfg.schedule) == (None, "steps")  # defaults: the device decides


def test_batch_summary_gives_the_cells_size_the_model_was_set_to(tmp_path):
    from napari_embedtrack.cli import BatchRow, format_summary

    rows = [
        BatchRow(tmp_path / "a", tmp_path / "a_RES", "ok", 5, 7, 1.0, "", 33.4),
        BatchRow(tmp_path / "b", tmp_path / "b_RES", "ok", 5, 6, 1.0),
        BatchRow(tmp_path / "c", tmp_path / "c_RES", "failed", message="bad"),
    ]
    lines = format_summary(rows).splitlines()
    assert [line.split()[4] for line in lines[1:4]] == ["33", "model", "-"]
