"""Tests of engine.modelfile: round trips, clear errors for bad files, the model registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_embedtrack.engine import modelfile as M
from napari_embedtrack.engine.model import EmbedTrackNet, build_model


@pytest.fixture(scope="module")
def trained_like() -> EmbedTrackNet:
    """A model with non-trivial weights and batch-norm statistics (as after training)."""
    torch.manual_seed(0)
    net = build_model(dropout=0.1)
    with torch.no_grad():
        for dec in (net.seg_decoder, net.seed_decoder, net.track_decoder):
            dec.output_conv.reset_parameters()
        net.train()
        net(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))  # update running stats
    return net.eval()


@pytest.fixture
def model_dir(tmp_path, trained_like) -> Path:
    card = M.ModelCard(name="m", crop_size=64, grid_spacing=1 / 63, min_size=12, dropout=0.1)
    return M.save_model(tmp_path / "m", trained_like, card)


def _outputs(net: EmbedTrackNet):
    torch.manual_seed(1)
    a, b = torch.rand(1, 1, 24, 40), torch.rand(1, 1, 24, 40)
    with torch.no_grad():
        return net(a, b)


def _one_line_error(excinfo, path: Path) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# --------------------------------------------------------------------------- round trips
def test_round_trip_bit_identical(model_dir, trained_like):
    assert sorted(p.name for p in model_dir.iterdir()) == [M.CARD, M.WEIGHTS]  # no temp files
    loaded = M.load_model(model_dir)
    assert not loaded.net.training
    assert loaded.path == model_dir
    assert loaded.card.name == "m" and loaded.card.crop_size == 64
    assert loaded.card.grid_spacing == pytest.approx(1 / 63) and loaded.card.min_size == 12
    assert loaded.card.percentiles == (1.0, 99.8)
    for a, b in zip(_outputs(trained_like), _outputs(loaded.net), strict=True):
        assert torch.equal(a, b)
    # loading through the weights or card file path gives the same folder
    assert M.load_model(model_dir / M.WEIGHTS).path == model_dir
    assert M.load_model(str(model_dir / M.CARD)).path == model_dir


def test_half_round_trip_is_close(tmp_path, trained_like):
    d = M.save_model(tmp_path / "h", trained_like, M.ModelCard(name="h"), half=True)
    stored = load_file(str(d / M.WEIGHTS))
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert (d / M.WEIGHTS).stat().st_size < 0.6 * 4 * sum(
        p.numel() for p in trained_like.parameters()
    )
    loaded = M.load_model(d)
    assert all(p.dtype == torch.float32 for p in loaded.net.parameters())
    for a, b in zip(_outputs(trained_like), _outputs(loaded.net), strict=True):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=0)


def test_save_keeps_other_files(model_dir, trained_like):
    (model_dir / "checkpoint.pt").write_bytes(b"x")
    M.save_model(model_dir, trained_like, M.ModelCard(name="again"))
    assert (model_dir / "checkpoint.pt").read_bytes() == b"x"
    assert M.read_card(model_dir).name == "again"


def test_card_dict_round_trip():
    card = M.ModelCard(name="c", training={"steps": 3}, validation={"SEG": 0.5})
    d = json.loads(json.dumps(card.to_dict()))
    assert M.ModelCard.from_dict(d) == card
    d["future_field"] = 1  # unknown keys from newer versions are ignored
    assert M.ModelCard.from_dict(d) == card


def test_card_scale_defaults_to_one_and_is_checked(model_dir):
    d = M.ModelCard(name="c", grid_spacing=0.01).to_dict()
    del d["scale"]  # cards written before the field existed
    card = M.ModelCard.from_dict(d)
    assert card.scale == 1.0 and card.pixel_spacing == 0.01
    assert M.ModelCard.from_dict({**d, "scale": 0.5}).pixel_spacing == pytest.approx(0.005)
    path = model_dir / M.CARD
    path.write_text(json.dumps({**json.loads(path.read_text()), "scale": "big"}))
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(model_dir)
    assert "scale" in _one_line_error(exc, path)


def test_card_smoothing_defaults_to_off_and_is_checked(model_dir):
    d = M.ModelCard(name="c").to_dict()
    del d["smooth_sigma"]  # cards written before the field existed
    card = M.ModelCard.from_dict(d)
    assert card.smooth_sigma == 0.0 and card.input_kwargs["smooth_sigma"] == 0.0
    card = M.ModelCard.from_dict({**d, "smooth_sigma": 0.5, "scale": 0.5})
    assert card.input_kwargs == {
        "grid_spacing": card.grid_spacing,
        "crop_size": card.crop_size,
        "scale": 0.5,
        "percentiles": (1.0, 99.8),
        "smooth_sigma": 0.5,
    }
    path = model_dir / M.CARD
    for bad in (-0.5, 100, "wide"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "smooth_sigma": bad}))
        with pytest.raises(M.ModelFileError) as exc:
            M.load_model(model_dir)
        assert "smooth_sigma" in _one_line_error(exc, path)


def test_card_thresholds_are_the_clustering_defaults(model_dir):
    from napari_embedtrack.engine.pipeline import default_cluster_params

    card = M.ModelCard(seed_threshold=0.4, score_threshold=0.6, min_size=30)
    params = default_cluster_params(card)
    assert (params.seed_threshold, params.score_threshold, params.min_size) == (0.4, 0.6, 30)
    assert default_cluster_params(card, seed_threshold=0.7).seed_threshold == 0.7
    d = card.to_dict()
    del d["seed_threshold"], d["score_threshold"]  # older cards: the paper's 0.5
    old = M.ModelCard.from_dict(d)
    assert (old.seed_threshold, old.score_threshold) == (0.5, 0.5)
    path = model_dir / M.CARD
    path.write_text(json.dumps({**json.loads(path.read_text()), "seed_threshold": 1.5}))
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(model_dir)
    assert "seed_threshold" in _one_line_error(exc, path)


# --------------------------------------------------------------------------- bad files
@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x01garbage bytes" * 20, "truncate"],
    ids=["empty", "garbage", "truncated"],
)
def test_corrupt_weights(model_dir, content):
    w = model_dir / M.WEIGHTS
    if content == "truncate":
        content = w.read_bytes()[: w.stat().st_size // 2]
    w.write_bytes(content)
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(model_dir)
    assert "corrupt" in _one_line_error(exc, w)


def test_missing_files(model_dir, tmp_path):
    (model_dir / M.WEIGHTS).unlink()
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(model_dir)
    assert "missing" in _one_line_error(exc, model_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(empty)
    assert "no card.json" in _one_line_error(exc, empty)


@pytest.mark.parametrize("key", ["architecture", "crop_size", "grid_spacing"])
def test_missing_card_keys(model_dir, key):
    path = model_dir / M.CARD
    d = json.loads(path.read_text())
    del d[key]
    path.write_text(json.dumps(d))
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(model_dir)
    assert key in _one_line_error(exc, path)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff\xfe"])
def test_bad_card_json(model_dir, text):
    path = model_dir / M.CARD
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(model_dir)
    _one_line_error(exc, path)


def test_wrong_architecture(model_dir):
    path = model_dir / M.CARD
    d = json.loads(path.read_text())
    d["architecture"] = "unet-v9"
    path.write_text(json.dumps(d))
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(model_dir)
    assert "unet-v9" in _one_line_error(exc, model_dir)


def test_missing_and_unexpected_tensors(model_dir):
    w = model_dir / M.WEIGHTS
    state = load_file(str(w))
    key = "track_decoder.output_conv.bias"
    missing = {k: v for k, v in state.items() if k != key}
    save_file(missing, str(w))
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(model_dir)
    msg = _one_line_error(exc, w)
    assert "1 missing" in msg and key in msg
    save_file({**state, "extra.weight": torch.zeros(3)}, str(w))
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(model_dir)
    msg = _one_line_error(exc, w)
    assert "1 unexpected" in msg and "extra.weight" in msg


def test_wrong_tensor_shape(model_dir):
    w = model_dir / M.WEIGHTS
    state = load_file(str(w))
    key = "seg_decoder.output_conv.weight"
    state[key] = torch.zeros(16, 3, 2, 2)
    save_file(state, str(w))
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model(model_dir)
    msg = _one_line_error(exc, w)
    assert key in msg and "(16, 3, 2, 2)" in msg


# --------------------------------------------------------------------------- registry
def test_user_models_by_name(tmp_path, monkeypatch, trained_like):
    root = tmp_path / "user_models"
    monkeypatch.setenv("EMBEDTRACK_MODELS", str(root))
    assert M.user_model_dir() == root
    assert [m for m in M.list_models() if not m.shipped] == []  # folder does not exist yet
    M.save_model(root / "mine", trained_like, M.ModelCard(name="mine", crop_size=64))
    (root / "broken").mkdir()
    (root / "broken" / M.CARD).write_text("{")  # skipped with a warning
    (root / "not_a_model").mkdir()
    user = [m for m in M.list_models() if not m.shipped]
    assert [m.name for m in user] == ["mine"]
    assert user[0].path == root / "mine" and user[0].card.crop_size == 64
    loaded = M.load_model("mine")
    assert loaded.path == root / "mine"
    with pytest.raises(M.ModelFileError) as exc:
        M.load_model("no-such-model")
    msg = str(exc.value)
    assert "\n" not in msg and "'no-such-model'" in msg and "mine" in msg


def test_user_model_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("EMBEDTRACK_MODELS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert M.user_model_dir() == tmp_path / "napari-embedtrack" / "models"
