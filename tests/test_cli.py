"""The `embedtrack` command line, end to end on small synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_embedtrack import ctc
from napari_embedtrack.cli import main
from napari_embedtrack.engine.predict import load_outputs


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


def test_models_lists_user_models(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("EMBEDTRACK_MODELS", str(tiny_model_dir.parent))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "user" in out


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
