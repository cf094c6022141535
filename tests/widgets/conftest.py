"""Fixtures for the widget tests: a tiny random model, a small movie, the oracle outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from napari_embedtrack.engine.model import build_model
from napari_embedtrack.engine.modelfile import ModelCard, save_model
from napari_embedtrack.synthetic import SyntheticMovie, make_movie

_ORACLE = Path(__file__).resolve().parents[1] / "engine" / "oracle.py"


@pytest.fixture(scope="session")
def oracle():
    """``tests/engine/oracle.py`` (ideal network outputs from ground truth)."""
    spec = importlib.util.spec_from_file_location("embedtrack_test_oracle", _ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def user_models(tmp_path, monkeypatch) -> Path:
    """An empty user model folder (``$EMBEDTRACK_MODELS``)."""
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("EMBEDTRACK_MODELS", str(root))
    return root


@pytest.fixture
def tiny_model(user_models) -> Path:
    """A random-weight model ``tiny`` (crop 64) saved as a user model."""
    torch.manual_seed(0)  # this seed gives some instances on the movie below
    card = ModelCard(name="tiny", crop_size=64, grid_spacing=1 / 63, min_size=10)
    return save_model(user_models / "tiny", build_model(), card).resolve()


@pytest.fixture
def movie() -> SyntheticMovie:
    """6 frames of 96 x 96 with one division."""
    return make_movie(n_frames=6, shape=(96, 96))


@pytest.fixture
def errors():
    """Messages of the error notifications emitted during the test."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    start = len(notification_manager.records)

    def messages() -> list[str]:
        return [
            str(n.message)
            for n in notification_manager.records[start:]
            if n.severity == NotificationSeverity.ERROR
        ]

    return messages
