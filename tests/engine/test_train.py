"""Tests of engine.train: tiny runs through the generator API, resume, stop, fine-tuning,
and (slow) overfitting one synthetic pair, the end-to-end check of losses and targets."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.segmentation import expand_labels

from napari_embedtrack.engine import data as D
from napari_embedtrack.engine.cluster import ClusterParams, cluster
from napari_embedtrack.engine.modelfile import load_model, read_card
from napari_embedtrack.engine.predict import iter_outputs
from napari_embedtrack.engine.progress import run
from napari_embedtrack.engine.train import CHECKPOINT, HISTORY, TrainConfig, _mask_sizes, train
from napari_embedtrack.synthetic import make_movie


@pytest.fixture(scope="module")
def sequence() -> D.TrainingSequence:
    """5 frames of 64x64 with full labels: training pairs t = 1..3, validation frame 4."""
    movie = make_movie(n_frames=5, shape=(64, 64), n_cells=3, seed=1, radius=(5.0, 7.0))
    return D.sequence_from_arrays("synthetic", movie.image, movie.labels, movie.lineage)


def _config(**kw) -> TrainConfig:
    base = {
        "steps": 3,
        "batch_size": 1,
        "crop_size": 64,
        "val_every": 2,
        "val_fraction": 0.2,
        "device": "cpu",
        "amp": False,
        "checkpoint_every": 1000,
    }
    return TrainConfig(**{**base, **kw})


def _run(gen) -> tuple[Path, list]:
    records = []
    result = run(gen, records.append)
    return result, records


def _steps(records) -> list[int]:
    return [r.done for r in records if "loss" in r.info]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, sequence) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("tiny") / "tiny"
    return _run(train([sequence], out, _config()))


# --------------------------------------------------------------------------- tiny runs
def test_validation_scores_tracking_on_a_window(sequence, tmp_path):
    """Two or more held-out frames: TRA and CT (official, py-ctcmetrics) on them, plain and
    re-styled, count in the checkpoint score."""
    _, records = _run(train([sequence], tmp_path / "m", _config(steps=1, val_fraction=0.4)))
    (val,) = [r.info["validation"] for r in records if "validation" in r.info]
    tracking = [f"{m}_{s}" for m in ("TRA", "CT") for s in ("plain", "hard", "uneven")]
    assert {"SEG_plain", "SEG_hard", "SEG_uneven", *tracking} <= set(val)
    assert all(0.0 <= val[k] <= 1.0 for k in tracking)
    parts = [v for k, v in val.items() if k != "score"]
    assert val["score"] == pytest.approx(sum(parts) / len(parts))


def test_window_tracking_oracle_and_a_broken_track():
    """The validation's tracking figures: the true tracks score TRA = CT = 1; cutting one
    track in two (a new track without parent halfway) lowers CT, which TRA barely sees."""
    from napari_embedtrack.engine.train import _window_tracking
    from napari_embedtrack.io.tracks import lineage_from_labels

    movie = make_movie(n_frames=8, shape=(96, 96), n_cells=4, seed=3, radius=(6.0, 8.0))
    s = D.sequence_from_arrays("synthetic", movie.image, movie.labels, movie.lineage)
    frames = list(range(8))
    truth = s.track[frames].astype(np.int32)
    lineage = np.asarray(movie.lineage, dtype=np.int64)
    assert _window_tracking(s, frames, truth, lineage) == {"TRA": 1.0, "CT": 1.0}

    cut = truth.copy()
    tid = next(int(r[0]) for r in lineage if r[2] - r[1] >= 5 and r[3] == 0)
    new = int(truth.max()) + 1
    cut[4:][cut[4:] == tid] = new
    broken = _window_tracking(s, frames, cut, lineage_from_labels(cut))
    assert broken["CT"] < 1.0
    assert 0.9 < broken["TRA"] < 1.0
    assert not _window_tracking(s, [0, 2, 3], truth[[0, 2, 3]], lineage)  # not consecutive

    # corrections spread over the movie: the frames between them are unknown, and the true
    # tracks score 1 on the longest run of known frames (they scored TRA 0 against nothing)
    spread = D.only_frames(s, [0, 1, 2, 4, 6, 7])
    assert _window_tracking(spread, frames, truth, lineage) == {"TRA": 1.0, "CT": 1.0}
    shifted = truth.copy()  # every cell wrong on frame 5 (unknown) only: nothing seen
    shifted[5] = np.roll(shifted[5], 30, axis=1)
    assert _window_tracking(spread, frames, shifted, lineage_from_labels(shifted)) == {
        "TRA": 1.0,
        "CT": 1.0,
    }
    assert _window_tracking(spread, [1, 2, 3], truth[1:4], lineage_from_labels(truth[1:4]))
    assert not _window_tracking(spread, [3, 4, 5], truth[3:6], lineage_from_labels(truth[3:6]))


def test_window_tracking_on_partly_corrected_frames():
    """Frames where a person corrected some cells and left the rest: the cells found beside
    them are neither right nor wrong (they scored as false: TRA 0.88, CT 0.4 for the true
    tracks);
    a wrong track among the corrected cells still counts."""
    from napari_embedtrack.engine.train import _window_tracking
    from napari_embedtrack.io.tracks import lineage_from_labels

    movie = make_movie(n_frames=8, shape=(96, 96), n_cells=4, seed=9, radius=(6.0, 8.0))
    truth = movie.labels.astype(np.int32)
    lineage = np.asarray(movie.lineage, dtype=np.int64)
    keep = [int(r[0]) for r in lineage if r[1] == 0 and r[2] == 7][:2]
    assert len(keep) == 2
    corrected = np.where(np.isin(truth, keep), truth, 0)
    frames = list(range(8))
    s = D.sequence_from_arrays(
        "partial", movie.image, corrected, lineage, annotated_frames=[], sparse_frames=frames
    )
    assert s.partial_frames().all()
    full = D.sequence_from_arrays("full", movie.image, corrected, lineage)
    assert not full.partial_frames().any()  # its background is known
    assert _window_tracking(s, frames, truth, lineage) == {"TRA": 1.0, "CT": 1.0}
    assert _window_tracking(full, frames, truth, lineage)["TRA"] < 1.0  # the others false
    cut = truth.copy()  # a corrected cell's track broken halfway: seen
    cut[4:][cut[4:] == keep[0]] = int(truth.max()) + 1
    broken = _window_tracking(s, frames, cut, lineage_from_labels(cut))
    assert broken["CT"] < 1.0


def test_unknown_frames_at_the_validation_windows_ends_are_left_out(tmp_path):
    """Corrections spread over a movie: the held-out tail (frames 8-9) holds one corrected
    frame, and only that frame is validated on."""
    movie = make_movie(n_frames=10, shape=(64, 64), n_cells=3, seed=1, radius=(5.0, 7.0))
    full = D.sequence_from_arrays("spread", movie.image, movie.labels, movie.lineage)
    spread = D.only_frames(full, [0, 1, 2, 3, 9])
    out, _ = _run(train([spread], tmp_path / "m", _config(steps=1, val_fraction=0.2)))
    assert read_card(out).validation["frames"] == {spread.name: "9-9"}


def test_freeze_norm_keeps_the_batchnorm_statistics(tmp_path, sequence, tiny_model):
    """``freeze_norm``: the weights train, the BatchNorm running statistics stay the
    starting model's; without it they move."""
    start_dir, _ = tiny_model
    start = load_model(start_dir).net.state_dict()

    def trained(freeze: bool) -> dict:
        cfg = TrainConfig.for_finetuning(
            steps=2, val_every=0, device="cpu", amp=False, batch_size=1, freeze_norm=freeze
        )
        cfg = dataclasses.replace(cfg, val_fraction=0.2, lr=1e-3)
        gen = train([sequence], tmp_path / str(freeze), cfg, init=start_dir)
        _run(_track(gen, []))
        ck = torch.load(tmp_path / str(freeze) / CHECKPOINT, weights_only=True)
        return ck["model"]

    assert TrainConfig.for_finetuning().freeze_norm  # the recipe's; from scratch not
    assert not TrainConfig().freeze_norm
    for freeze in (True, False):
        after = trained(freeze)
        stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
        weights = [k for k in start if k.endswith("weight") and "bn" not in k]
        assert stats and weights
        kept = all(torch.equal(after[k], start[k]) for k in stats)
        assert kept == freeze
        assert not all(torch.equal(after[k], start[k]) for k in weights)


def test_tiny_training_writes_model(tiny_model):
    out, records = tiny_model
    assert _steps(records) == [1, 2, 3]
    assert all(r.total == 3 for r in records)
    for r in records:
        if "loss" in r.info:
            assert math.isfinite(r.info["loss"])
            assert set(r.info) >= {"instance", "variance", "seed", "track", "lr", "eta"}
    vals = [r.info["validation"] for r in records if "validation" in r.info]
    assert len(vals) == 2  # steps 2 and 3 (the last)
    assert {"SEG_plain", "SEG_hard", "score"} <= set(vals[0])
    assert "TRA_plain" not in vals[0]  # one validation frame: no tracking to score
    for name in ("weights.safetensors", "card.json", CHECKPOINT, HISTORY):
        assert (out / name).is_file(), name
    card = read_card(out)
    assert card.name == "tiny"
    assert card.crop_size == 64 and card.grid_spacing == pytest.approx(1 / 63)
    assert card.min_size >= 4
    assert card.training["config"]["steps"] == 3
    assert card.training["data"] == ["synthetic"]
    assert card.training["total_steps"] == 3
    assert "SEG_plain" in card.validation and card.validation["step"] in (2, 3)
    history = json.loads((out / HISTORY).read_text())["history"]
    assert [h["step"] for h in history] == [2, 3]
    ck = torch.load(out / CHECKPOINT, weights_only=True)
    assert ck["step"] == 3 and ck["total"] == 3
    loaded = load_model(out)
    assert loaded.card == card
    with torch.no_grad():
        seg, _, track = loaded.net(torch.rand(1, 1, 40, 40), torch.rand(1, 1, 40, 40))
    assert seg.shape == (1, 5, 40, 40) and track.shape == (1, 2, 40, 40)


def test_stop_and_resume(tmp_path, sequence):
    out = tmp_path / "resume"
    cfg = _config(steps=4, val_every=2)
    seen: list[int] = []
    gen = train([sequence], out, cfg, should_stop=lambda: bool(seen) and seen[-1] >= 2)
    _, records = _run(_track(gen, seen))
    assert _steps(records) == [1, 2]
    ck = torch.load(out / CHECKPOINT, weights_only=True)
    assert ck["step"] == 2 and ck["total"] == 4
    _, records = _run(train([sequence], out, cfg, resume=True))
    assert _steps(records) == [3, 4]
    assert records[-1].done == 4 and records[-1].total == 4
    history = json.loads((out / HISTORY).read_text())["history"]
    assert [h["step"] for h in history] == [2, 4]
    assert torch.load(out / CHECKPOINT, weights_only=True)["step"] == 4
    # resuming with another length is refused with a clear message
    with pytest.raises(ValueError, match="checkpoint was made for 4 steps"):
        _run(train([sequence], out, _config(steps=6), resume=True))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _run(train([sequence], tmp_path / "none", cfg, resume=True))


def _track(gen, seen: list[int]):
    """Pass a generator's records through, noting the steps done."""
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if "loss" in p.info:
            seen.append(p.done)
        yield p


def test_should_stop_saves_checkpoint(tmp_path, sequence):
    out = tmp_path / "stop"
    seen: list[int] = []
    cfg = _config(steps=5, val_every=100)
    gen = train([sequence], out, cfg, should_stop=lambda: bool(seen))
    result, records = _run(_track(gen, seen))
    assert result == out
    assert _steps(records) == [1]
    ck = torch.load(out / CHECKPOINT, weights_only=True)
    assert ck["step"] == 1 and ck["total"] == 5
    assert (out / HISTORY).is_file()


def test_closing_the_generator_saves_checkpoint(tmp_path, sequence):
    out = tmp_path / "closed"
    gen = train([sequence], out, _config(steps=5, val_every=100))
    assert next(gen).done == 1
    gen.close()
    assert torch.load(out / CHECKPOINT, weights_only=True)["step"] == 1


def test_fine_tuning_keeps_card_geometry(tmp_path, sequence, tiny_model):
    base, _ = tiny_model
    out = tmp_path / "tuned"
    cfg = _config(steps=1, crop_size=32, val_every=1)  # crop_size is the base model's
    result, records = _run(train([sequence], out, cfg, init=base, name="tuned"))
    assert _steps(records) == [1]
    card = read_card(result)
    base_card = read_card(base)
    assert card.name == "tuned"
    assert card.crop_size == 64 and card.grid_spacing == base_card.grid_spacing
    assert card.min_size == base_card.min_size and card.dropout == base_card.dropout
    assert card.training["init"] == str(base)
    assert card.training["init_training"]["total_steps"] == 3
    load_model(result)


def test_validation_window_is_recorded(tmp_path, sequence):
    out = tmp_path / "window"
    _run(train([sequence], out, _config(steps=1, val_every=1, val_window=(1, 3))))
    card = read_card(out)
    assert card.validation["frames"] == {"synthetic": "1-2"}
    assert list(card.training["config"]["val_window"]) == [1, 3]


def test_without_validation_frames_the_last_model_is_kept(tmp_path, sequence, caplog):
    """No masks in the held-out frames: there is no score, the last model is written."""
    seq = D.TrainingSequence(
        sequence.name,
        sequence.image,
        sequence.seg,
        sequence.track,
        sequence.ignore,
        sequence.parents,
        sequence.starts,
        seg_frames=[],
    )
    out = tmp_path / "noval"
    with caplog.at_level(logging.WARNING):
        _run(train([seq], out, _config(steps=2, val_every=1)))
    assert "no validation frames" in caplog.text
    card = read_card(out)
    assert card.validation["step"] == 2
    assert "SEG_plain" not in card.validation


def test_time_budget_stops_and_saves(tmp_path, sequence):
    out = tmp_path / "budget"
    _, records = _run(train([sequence], out, _config(steps=50, max_seconds=1e-6)))
    assert _steps(records) == [1]
    card = read_card(out)
    assert card.training["steps"] == 1
    assert card.training["total_steps"] == 50
    assert (out / CHECKPOINT).is_file()


# --------------------------------------------------------------------------- overfitting
def _match_ious(ref: np.ndarray, pred: np.ndarray) -> list[float]:
    """Best IoU of every reference instance with any predicted instance."""
    out = []
    for lab in np.unique(ref)[1:]:
        m = ref == lab
        best = 0.0
        for p in np.unique(pred[m]):
            if p == 0:
                continue
            q = pred == p
            best = max(best, (m & q).sum() / (m | q).sum())
        out.append(best)
    return out


@pytest.mark.slow
def test_overfits_one_pair(tmp_path):
    """A tiny model overfits one synthetic 64x64 pair to instance IoU > 0.8 (CPU minute)."""
    movie = make_movie(n_frames=2, shape=(64, 64), n_cells=4, seed=7, radius=(6.0, 8.0))
    seq = D.sequence_from_arrays("pair", movie.image, movie.labels, movie.lineage)
    no_aug = D.AugmentConfig(
        flip_rot=False,
        p_scale=0.0,
        p_shift=0.0,
        p_contrast=0.0,
        p_gain_field=0.0,
        p_gamma=0.0,
        p_blur=0.0,
        p_clahe=0.0,
    )
    cfg = _config(steps=150, val_fraction=0.0, val_every=150, lr=2e-3, dropout=0.0, augment=no_aug)
    out, records = _run(train([seq], tmp_path / "overfit", cfg))
    losses = [r.info["loss"] for r in records if "loss" in r.info]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    model = load_model(out)
    params = ClusterParams(min_size=model.card.min_size, grid_spacing=model.card.grid_spacing)
    outputs = list(
        iter_outputs(
            model.net,
            movie.image,
            grid_spacing=model.card.grid_spacing,
            crop_size=model.card.crop_size,
            tta=False,
            device="cpu",
        )
    )
    ious = []
    for t, o in enumerate(outputs):
        pred = cluster(o.seediness, o.bandwidth, o.offsets, params)
        ious += _match_ious(movie.labels[t], pred)
    assert np.mean(ious) > 0.8, ious
    # tracking offsets: pixels at t land on their cell at t-1 (daughters: on their parent)
    assert seq.parents, "the pair holds a division"
    prev, cur = movie.labels[0], movie.labels[1]
    yy, xx = np.mgrid[0:64, 0:64]
    ty = np.clip(np.round(yy + outputs[1].track_offsets[0]), 0, 63).astype(int)
    tx = np.clip(np.round(xx + outputs[1].track_offsets[1]), 0, 63).astype(int)
    for lab in np.unique(cur)[1:]:
        target = seq.parents.get(int(lab), int(lab))
        m = cur == lab
        assert np.mean(prev[ty[m], tx[m]] == target) > 0.9, lab


def test_scale_is_stored_and_kept_when_fine_tuning(tmp_path, sequence):
    out = tmp_path / "half"
    _run(train([sequence], out, _config(steps=1, val_every=1, crop_size=32, scale=0.5)))
    card = read_card(out)
    assert card.scale == 0.5 and card.pixel_spacing == pytest.approx(0.5 / 31)
    assert card.validation["SEG_plain"] >= 0.0  # validation ran on the full-size frames
    tuned = tmp_path / "tuned"
    _run(train([sequence], tuned, _config(steps=1, val_every=1), init=out))
    assert read_card(tuned).scale == 0.5
    again = tmp_path / "again"
    _run(train([sequence], again, _config(steps=1, val_every=1, scale=1.0), init=out))
    assert read_card(again).scale == 1.0


@pytest.mark.parametrize("scale", [0.0, -1.0, 10.0, "half"])
def test_bad_scale_raises_before_any_file_is_written(tmp_path, sequence, scale):
    with pytest.raises(ValueError, match="scale must be"):
        next(train([sequence], tmp_path / "bad", _config(scale=scale)))
    assert not (tmp_path / "bad").exists()


def test_validation_windows_per_sequence(tmp_path, sequence):
    """A mapping gives each named sequence its window; the others keep the tail."""
    other = dataclasses.replace(sequence, name="other/01")
    out = tmp_path / "windows"
    cfg = _config(steps=1, val_every=1, val_window={"synthetic": (1, 3)})
    _run(train([sequence, other], out, cfg))
    assert read_card(out).validation["frames"] == {"synthetic": "1-2", "other/01": "4-4"}
    with pytest.raises(ValueError, match="typo"):
        _run(train([sequence], tmp_path / "bad", _config(val_window={"typo": (1, 3)})))
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- fine-tuning
def test_finetuning_recipe_defaults():
    cfg = TrainConfig.for_finetuning(steps=10)
    assert cfg.steps == 10 and cfg.lr == pytest.approx(1e-4)
    assert cfg.max_seconds == 600 and cfg.val_every == 50 and cfg.val_fraction == 0.2
    assert TrainConfig().lr == pytest.approx(5e-4)  # from scratch unchanged


def test_finetune_on_corrupted_labels_returns_the_starting_model(tmp_path):
    """The stop rule: corrections that are wrong (masks moved off the cells) and a step size
    that wrecks the network; validated on held-out frames, no fine-tuned checkpoint beats
    the starting model, so its weights come back, with the outcome in the card."""
    movie = make_movie(n_frames=6, shape=(96, 96), n_cells=3, seed=4, radius=(14.0, 18.0))
    labels = movie.labels.copy()
    labels[:4] = np.roll(labels[:4], (40, 40), axis=(1, 2))  # training frames: corrupted
    seq = D.sequence_from_arrays("corrupted", movie.image, labels, movie.lineage)
    cfg = TrainConfig.for_finetuning(
        steps=2, lr=0.05, val_every=1, val_window=(4, 6), device="cpu", amp=False, batch_size=1
    )
    out, records = _run(train([seq], tmp_path / "ft", cfg, init="Fluo-N2DH-SIM+"))
    start = [r.info["validation"] for r in records if r.info.get("start")]
    assert len(start) == 1 and start[0]["SEG_plain"] > 0.5  # the start model segments well
    later = [r.info["validation"] for r in records if "validation" in r.info][1:]
    assert later and all(v["score"] < start[0]["score"] for v in later)
    card = read_card(out)
    assert card.training["outcome"].startswith("no fine-tuned checkpoint beat")
    assert card.validation["start"]["score"] == pytest.approx(start[0]["score"], abs=1e-4)
    ref = load_model("Fluo-N2DH-SIM+").net.state_dict()
    got = load_model(out).net.state_dict()
    for k, v in ref.items():
        torch.testing.assert_close(got[k].float(), v.float(), rtol=0, atol=0, msg=k)


def test_finetune_without_held_out_frames_validates_on_restyled_training_frames(
    sequence, tiny_model, tmp_path
):
    """Too few corrections to hold any out: the stop rule still has a validation, on dim
    noisy copies of the corrected training frames."""
    start_dir, _ = tiny_model
    cfg = TrainConfig.for_finetuning(
        steps=1, val_fraction=0.0, val_every=1, device="cpu", amp=False, batch_size=1
    )
    _, records = _run(train([sequence], tmp_path / "ft", cfg, init=start_dir))
    vals = [r.info["validation"] for r in records if "validation" in r.info]
    assert records[0].info.get("start") and len(vals) == 2
    for v in vals:  # no plain figures: those frames are trained on
        assert "SEG_hard" in v and set(v) <= {"SEG_hard", "TRA_hard", "CT_hard", "score"}


def test_train_parts_decoders_keeps_the_encoder(sequence, tiny_model, tmp_path):
    start_dir, _ = tiny_model
    cfg = _config(steps=2, train_parts="decoders", val_fraction=0.0)
    out, _ = _run(train([sequence], tmp_path / "dec", cfg, init=start_dir))
    before = load_model(start_dir).net.state_dict()
    after = torch.load(out / CHECKPOINT, weights_only=True)["model"]  # the last step's
    enc = [k for k in before if k.startswith("encoder.")]
    dec = [k for k in before if k.startswith(("seg_decoder.", "seed_decoder.", "track_decoder."))]
    assert enc and dec
    for k in enc:  # weights and BatchNorm statistics alike
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(after[k], before[k]) for k in dec)
    with pytest.raises(ValueError, match="train_parts"):
        run(train([sequence], tmp_path / "bad", _config(train_parts="heads"), init=start_dir))


def test_anchor_keeps_finetuned_weights_near_the_start(sequence, tiny_model, tmp_path):
    """The drift penalty: with a large anchor the weights after the same steps stay closer
    to the starting model than without, and the penalty is reported as a loss part."""
    start_dir, _ = tiny_model
    start = load_model(start_dir).net.state_dict()

    def drift(anchor: float) -> float:
        cfg = _config(steps=2, anchor=anchor, lr=1e-2, val_fraction=0.0)
        out, records = _run(train([sequence], tmp_path / f"a{anchor}", cfg, init=start_dir))
        assert (anchor > 0) == any("drift" in r.info for r in records)
        last = torch.load(out / CHECKPOINT, weights_only=True)["model"]
        return sum(
            float(((last[k].float() - v.float()) ** 2).sum())
            for k, v in start.items()
            if v.is_floating_point()
        )

    assert drift(1e3) < drift(0.0)


# --------------------------------------------------------------------------- crop workers
def test_crop_workers_give_reproducible_distinct_streams(sequence):
    from napari_embedtrack.engine.train import _batches

    def first(n_batches: int, seed: int) -> list[np.ndarray]:
        sampler = D.PairSampler([sequence], [[1, 2, 3]], 32, D.AugmentConfig(), seed)
        gen = _batches(sampler, 2, 2, torch.device("cpu"), seed, 0)
        try:
            return [next(gen)["image"].numpy() for _ in range(n_batches)]
        finally:
            gen.close()

    a, b, c = first(4, 0), first(4, 0), first(4, 1)
    assert all(x.shape == (2, 2, 32, 32) for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # same seed
    assert not np.array_equal(a[0], a[1])  # the two workers draw different crops
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))  # other seed


def test_training_with_crop_workers_writes_model(tmp_path, sequence):
    out = tmp_path / "workers"
    _, records = _run(train([sequence], out, _config(workers=2)))
    assert _steps(records) == [1, 2, 3]
    assert read_card(out).training["config"]["workers"] == 2
    assert load_model(out).net is not None


# --------------------------------------------------------------------------- time schedule
@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler\.step\(\)`")
def test_timed_one_cycle_follows_torchs_one_cycle():
    from napari_embedtrack.engine.train import TimedOneCycle

    total = 1001
    ref_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-3, total_steps=total)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ours = TimedOneCycle(opt, 1e-3)
    for k in range(total):
        ours.step(k / (total - 1))
        a, b = ref.get_last_lr()[0], ours.get_last_lr()[0]
        assert b == pytest.approx(a, rel=0.02, abs=1e-6), k
        assert opt.param_groups[0]["betas"][0] == pytest.approx(
            ref_opt.param_groups[0]["betas"][0], abs=2e-3
        )
        if k < total - 1:
            ref.step()
    ours.step(0.3)
    assert ours.get_last_lr()[0] == pytest.approx(1e-3)
    ours.step(1.0)
    assert ours.get_last_lr()[0] == pytest.approx(1e-3 / 25 / 1e4)


def test_time_schedule_anneals_when_the_time_budget_runs_out(tmp_path, sequence):
    out = tmp_path / "timed"
    _, records = _run(
        train([sequence], out, _config(steps=10_000, max_seconds=1.5, schedule="time"))
    )
    steps = [r for r in records if "loss" in r.info]
    assert 1 <= len(steps) < 10_000
    assert steps[-1].info["lr"] == pytest.approx(5e-4 / 25 / 1e4)  # annealed, not cut off
    assert (out / CHECKPOINT).is_file()


def test_time_schedule_needs_a_time_budget(tmp_path, sequence):
    with pytest.raises(ValueError, match="time budget"):
        _run(train([sequence], tmp_path / "x", _config(schedule="time")))
    assert not (tmp_path / "x").exists()


def test_prefetched_batches_are_the_samplers_own_and_errors_reach_the_loop(sequence):
    import threading

    from napari_embedtrack.engine.train import _prefetch

    frames = [list(range(1, sequence.n_frames))]
    direct = D.PairSampler([sequence], frames, crop_size=32, seed=4)
    want = [D.collate([direct.sample() for _ in range(2)]) for _ in range(3)]
    gen = _prefetch(D.PairSampler([sequence], frames, crop_size=32, seed=4), 2)
    got = [next(gen) for _ in range(3)]
    for a, b in zip(want, got, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    gen.close()
    assert not any(t.name == "embedtrack-crops" for t in threading.enumerate())

    class Broken:
        def sample(self):
            raise RuntimeError("bad crop")

    with pytest.raises(RuntimeError, match="bad crop"):
        next(_prefetch(Broken(), 2))


def test_finetuning_on_smaller_cells_sets_the_scale_to_them(tmp_path):
    """A starting model fine-tuned on cells of another size sees them at the size it was
    trained on (as prediction's ``--cell-diameter`` sets it); the card keeps the new cells'
    size, so prediction's estimate finds the model's own size on such a movie."""
    movie = make_movie(n_frames=6, shape=(96, 96), n_cells=4, seed=4, radius=(9.0, 11.0))
    seq = D.sequence_from_arrays("small cells", movie.image, movie.labels, movie.lineage)
    cfg = TrainConfig.for_finetuning(
        steps=1, val_every=1, val_window=(4, 6), device="cpu", amp=False, batch_size=1
    )
    out, _ = _run(train([seq], tmp_path / "ft", cfg, init="Fluo-N2DH-SIM+"))
    card = read_card(out)
    sim = load_model("Fluo-N2DH-SIM+").card
    assert card.cell_diameter < sim.cell_diameter / 2  # the training masks' (~20 px)
    assert card.scale == pytest.approx(sim.cell_diameter / card.cell_diameter, rel=0.02)


def test_scale_for_cells():
    from napari_embedtrack.engine.modelfile import ModelCard
    from napari_embedtrack.engine.predict import SCALE_RANGE
    from napari_embedtrack.engine.train import _scale_for_cells

    card = ModelCard(cell_size=1000, scale=0.5)
    assert _scale_for_cells(card, np.array([1000, 1100, 950])) == 0.5  # within 10 %: kept
    assert _scale_for_cells(card, np.array([250, 250])) == pytest.approx(1.0)  # half across
    assert _scale_for_cells(card, np.array([4000])) == pytest.approx(0.25)
    assert _scale_for_cells(card, np.zeros(0)) == 0.5  # no masks
    assert _scale_for_cells(ModelCard(cell_size=0), np.array([250])) == 1.0  # size unknown
    assert _scale_for_cells(card, np.array([1])) == SCALE_RANGE[1]  # at most the largest


def test_replayed_results_are_trained_on_and_never_validated_on(tmp_path):
    """A starting model's own results (replay) beside corrections: the validation (the stop
    rule's figures) is on the corrections' held-out frames only, and the replayed frames are
    trained on where the start segments the corrections well; results alone, or without a
    starting model, are refused before a folder is written."""
    movie = make_movie(n_frames=8, shape=(96, 96), n_cells=3, seed=4, radius=(14.0, 18.0))
    corrections = D.sequence_from_arrays(
        "corrections", movie.image, movie.labels, movie.lineage, annotated_frames=[5, 6, 7]
    )
    frames = D.replay_frames(8, [5, 6, 7], every=1)
    assert frames == [0, 1, 2, 3]
    grown = expand_labels(movie.labels, 3)  # the start's masks: a little larger than the truth
    replay = D.replay_sequence("replay", corrections, grown, movie.lineage, frames)
    cfg = TrainConfig.for_finetuning(
        steps=2, val_every=1, val_window=(7, 8), device="cpu", amp=False, batch_size=1
    )
    start = "Fluo-N2DH-SIM+"
    out, records = _run(train([corrections, replay], tmp_path / "ft", cfg, init=start))
    card = read_card(out)
    assert card.validation["frames"] == {"corrections": "7-7"}
    assert records[0].info.get("start")
    assert records[0].info["validation"]["SEG_plain"] >= 0.6  # a start worth keeping
    assert card.training["replayed_frames"] == {"replay": [0, 1, 2, 3]}
    assert card.training["replay"].startswith("used")
    # the start's results are good, so their cells count for the size (the corrections may
    # be a movie's first frames only): larger replayed cells, a larger card size
    both = int(np.median(_mask_sizes([corrections, replay])))
    assert card.cell_size == both > int(np.median(_mask_sizes([corrections])))
    history = json.loads((out / HISTORY).read_text())["history"]
    assert history[0]["gate"]["SEG_plain"] >= 0.6  # what replay was decided on, kept
    assert history[0]["SEG_plain"] == pytest.approx(records[0].info["validation"]["SEG_plain"])
    for bad, init in (([replay], start), ([corrections, replay], None)):
        with pytest.raises(ValueError, match=r"corrections|starting model"):
            run(train(bad, tmp_path / "refused", cfg, init=init))
        assert not (tmp_path / "refused").exists()
    with pytest.raises(ValueError, match="replay_share must lie between 0 and 1"):
        shared = dataclasses.replace(cfg, replay_share=1.5)
        run(train([corrections, replay], tmp_path / "refused", shared, init=start))
    assert not (tmp_path / "refused").exists()


def test_a_poor_starting_models_results_are_not_replayed(sequence, tiny_model, tmp_path):
    """The tiny model segments the corrections badly: its results are left out of the
    training pairs, and the card says why; the cells' size is the corrections' own."""
    start_dir, _ = tiny_model
    merged = (sequence.seg > 0).astype(np.int32)  # results that merge every cell into one
    replay = D.replay_sequence("replay", sequence, merged, None, [0, 1, 2, 3])
    corrections = dataclasses.replace(sequence, name="corrections")
    cfg = TrainConfig.for_finetuning(
        steps=2, val_every=1, val_fraction=0.2, device="cpu", amp=False, batch_size=1
    )
    out, records = _run(train([corrections, replay], tmp_path / "ft", cfg, init=start_dir))
    assert records[0].info["validation"]["SEG_plain"] < 0.6
    card = read_card(out)
    said = card.training["replay"]
    assert said.startswith("not used") and "below 0.6" in said
    assert "replayed_frames" not in card.training
    alone = read_card(_run(train([corrections], tmp_path / "alone", cfg, init=start_dir))[0])
    assert card.cell_size == alone.cell_size and card.min_size == alone.min_size


def test_an_epoch_counts_the_pairs_trained_on(sequence, tiny_model, tmp_path):
    """An epoch-based fine-tune counts its steps once replay is decided, one crop for the
    later frame of each pair drawn from (frames of 64 px, crops of 64): replayed results
    left out (a poor start) add no steps; used ones add their pairs, not the movie's."""
    start_dir, _ = tiny_model
    cfg = TrainConfig.for_finetuning(
        steps=0, epochs=1, val_every=1, val_fraction=0.2, device="cpu", amp=False, batch_size=1
    )

    def steps(seqs, start, folder):
        _, records = _run(train(seqs, tmp_path / folder, cfg, init=start))
        assert len(_steps(records)) == records[-1].total  # the whole plan was run
        return records[-1].total, records[0].info["validation"]["SEG_plain"]

    corrections = dataclasses.replace(sequence, name="corrections")
    merged = (sequence.seg > 0).astype(np.int32)
    poor = D.replay_sequence("replay", sequence, merged, None, [0, 1, 2, 3])
    alone, _ = steps([corrections], start_dir, "alone")
    assert alone == 3  # pairs (0, 1) ... (2, 3); frame 4 held out
    total, seg = steps([corrections, poor], start_dir, "poor")
    assert seg < 0.6 and total == alone  # was 7: the replayed frames 1-4 counted

    movie = make_movie(n_frames=8, shape=(64, 64), n_cells=2, seed=4, radius=(12.0, 14.0))
    corrections = D.sequence_from_arrays(
        "corrections", movie.image, movie.labels, movie.lineage, annotated_frames=[5, 6, 7]
    )
    good = D.replay_sequence("replay", corrections, movie.labels, movie.lineage, [0, 1, 2])
    cfg = dataclasses.replace(cfg, val_window=(7, 8), val_fraction=0.0)
    alone, _ = steps([corrections], "Fluo-N2DH-SIM+", "sim-alone")
    total, seg = steps([corrections, good], "Fluo-N2DH-SIM+", "sim-good")
    assert seg >= 0.6 and total == alone + 3  # pairs ending at 1, 2, 3; was alone + 7
