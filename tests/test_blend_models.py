"""benchmarks/blend_models.py: weight interpolation between two models of one architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_embedtrack.engine.model import EmbedTrackNet
from napari_embedtrack.engine.modelfile import ModelCard, load_model, save_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def blend(benchmark_script):
    return benchmark_script("blend_models")


def _model(folder: Path, seed: int, **card) -> Path:
    torch.manual_seed(seed)
    net = EmbedTrackNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, blended like the weights
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return save_model(folder, net, ModelCard(name=folder.name, seed_threshold=0.4, **card))


def test_blend_interpolates_every_float_tensor(tmp_path, blend):
    a = _model(tmp_path / "a", 0)
    b = _model(tmp_path / "b", 1, cell_size=500)
    for alpha in (0.0, 0.25, 1.0):
        out = tmp_path / f"mix{alpha}"
        assert blend.main([str(a), str(b), "--alpha", str(alpha), "--out", str(out)]) == 0
        sa, sb = (load_model(p).net.state_dict() for p in (a, b))
        mixed = load_model(out)
        sm = mixed.net.state_dict()
        for k, v in sm.items():
            if v.is_floating_point():
                torch.testing.assert_close(v, (1 - alpha) * sa[k] + alpha * sb[k])
            else:
                assert torch.equal(v, sb[k])
        # B's settings, no validation figures of its own, the blend recorded
        assert mixed.card.cell_size == 500 and mixed.card.seed_threshold == 0.4
        assert mixed.card.validation == {}
        assert mixed.card.training["blend"]["alpha"] == alpha


def test_blend_refuses_models_of_different_scale(tmp_path, blend, capsys):
    a = _model(tmp_path / "a", 0)
    b = _model(tmp_path / "b", 1, scale=0.5)
    assert blend.main([str(a), str(b), "--alpha", "0.5", "--out", str(tmp_path / "m")]) == 2
    assert "scale" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    assert blend.main([str(a), str(a), "--alpha", "1.5", "--out", str(tmp_path / "m")]) == 2
