"""Model files: safetensors weights + a JSON model card, and the registry of shipped models.

A model is a folder holding ``weights.safetensors`` and ``card.json``. Weights are loaded with
safetensors (no pickle). The card is the single source of truth for everything inference and
fine-tuning need: architecture, crop size, grid spacing, normalisation percentiles, minimum
instance size, clustering defaults, and the provenance of the weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .model import ARCHITECTURE, EmbedTrackNet, build_model
from .predict import SCALE_RANGE, check_scale, check_smooth_sigma

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
CARD = "card.json"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "models"


def disc_diameter(area):
    """Diameter of a disc of ``area`` (a number or an array of them): how cell sizes
    (areas in pixels) are turned into diameters throughout."""
    return 2.0 * np.sqrt(np.asarray(area, dtype=float) / math.pi)


def check_cell_diameter(diameter) -> float:
    """A cell diameter as a float; ValueError unless a positive, finite number of pixels."""
    ok = (
        isinstance(diameter, (int, float, np.number))
        and not isinstance(diameter, bool)
        and math.isfinite(diameter)
        and diameter > 0
    )
    if not ok:
        raise ValueError(f"cell diameter must be a positive number of pixels, got {diameter!r}")
    return float(diameter)


class ModelFileError(ValueError):
    """A model file or folder that cannot be used (missing, corrupt, wrong architecture)."""


@dataclass
class ModelCard:
    """Everything needed to use and to trust a model.

    Attributes:
        name: short name (shipped models are named after their dataset).
        architecture: network architecture id.
        crop_size: training crop edge (px); also the inference tile size.
        grid_spacing: pixel size on the normalised coordinate grid (1 / (crop_size - 1)).
        scale: image scale the network works at: frames are resized by this factor before
            the network and its outputs resized back (0.5 for large cells, e.g. MSC).
        percentiles: per-frame normalisation percentiles (low, high).
        smooth_sigma: Gaussian pre-filter of every frame before normalisation, SD in the
            network's pixels (0: off). Decided per model on the validation proxies: on the
            dim, noisy copies it lifts what the network finds (docs/models.md, session 12).
        min_size: minimum instance size (px): half the 1% percentile of training mask sizes.
        cell_size: median area (px, movie pixels) of the training masks; the track clean-up
            rules (fragments, divisions, gaps) scale with it. 0: unknown (rules off).
        drop_single: track clean-up option: remove one-frame tracks without parent or
            children (on where it measured better, e.g. MSC's large slow cells).
        tta: whether test-time augmentation is on by default (CLI and widget alike), decided
            per model from measurements (docs/models.md); ``--tta`` / ``--no-tta`` override.
        seed_threshold: default seediness threshold for clustering (paper: 0.5).
        score_threshold: default clustering score threshold (paper: 0.5).
        dropout: encoder dropout used in training.
        training: provenance: data, steps, epochs, device, seconds, augmentation, labels.
        validation: validation metrics (e.g. ``{"SEG": 0.8}``) and where they were measured.
        description: free text for people.
    """

    name: str = "untrained"
    architecture: str = ARCHITECTURE
    crop_size: int = 256
    grid_spacing: float = 1.0 / 255.0
    scale: float = 1.0
    percentiles: tuple[float, float] = (1.0, 99.8)
    smooth_sigma: float = 0.0
    min_size: int = 20
    cell_size: int = 0
    tta: bool = False
    drop_single: bool = False
    seed_threshold: float = 0.5
    score_threshold: float = 0.5
    dropout: float = 0.3
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def cell_diameter(self) -> float:
        """Diameter (movie pixels) of a disc of the median training cell's area
        (``cell_size``); 0 when the card does not know it."""
        return float(disc_diameter(self.cell_size)) if self.cell_size > 0 else 0.0

    @property
    def pixel_spacing(self) -> float:
        """Size of one frame pixel on the network's grid (what clustering needs)."""
        return self.grid_spacing * self.scale

    @property
    def input_kwargs(self) -> dict[str, Any]:
        """What :func:`~napari_embedtrack.engine.predict.iter_outputs` needs from the card."""
        return {
            "grid_spacing": self.grid_spacing,
            "crop_size": self.crop_size,
            "scale": self.scale,
            "percentiles": tuple(self.percentiles),
            "smooth_sigma": self.smooth_sigma,
        }

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "card") -> ModelCard:
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("architecture", "crop_size", "grid_spacing") if k not in d]
        if missing:
            raise ModelFileError(f"{source}: model card lacks {', '.join(missing)}")
        kw = {k: v for k, v in d.items() if k in known}
        if "percentiles" in kw:
            kw["percentiles"] = tuple(kw["percentiles"])
        try:
            check_scale(kw.get("scale", 1.0))
            check_smooth_sigma(kw.get("smooth_sigma", 0.0))
        except ValueError as err:
            raise ModelFileError(f"{source}: {err}") from None
        for key in ("seed_threshold", "score_threshold"):
            v = kw.get(key, 0.5)
            if not isinstance(v, (int, float)) or not 0.0 < v < 1.0:
                raise ModelFileError(f"{source}: {key} must be a number in (0, 1), got {v!r}")
        return cls(**kw)


@dataclass
class LoadedModel:
    """A network in eval mode with its card and where it came from."""

    net: EmbedTrackNet
    card: ModelCard
    path: Path | None = None

    def with_smooth_sigma(self, sigma: float | None) -> LoadedModel:
        """This model with its card's pre-filter replaced for a run (checked; the same
        network, the card on disk untouched); ``None``: this model as it is."""
        if sigma is None:
            return self
        card = dataclasses.replace(self.card, smooth_sigma=check_smooth_sigma(sigma))
        return dataclasses.replace(self, card=card)

    def with_cell_diameter(self, diameter: float | None) -> LoadedModel:
        """This model for a movie whose cells are ``diameter`` pixels across (``None``: this
        model as it is).

        A movie filmed at another magnification than the training movie has cells of
        another size in pixels, which the network (trained on one size, +-33 % by
        augmentation) segments badly. The card's image ``scale`` is multiplied by
        ``card.cell_diameter / diameter`` so that the network sees cells of its training
        size, and the sizes the clustering and the clean-up use (``cell_size``,
        ``min_size``, in movie pixels) are scaled to the movie's cells. The network is the
        same and the card on disk untouched. ValueError when the card does not know its
        cells' size or the scale would leave :data:`~.predict.SCALE_RANGE`.
        """
        if diameter is None:
            return self
        card = self.card
        diameter = check_cell_diameter(diameter)
        if card.cell_diameter <= 0:
            raise ValueError(
                f"model {card.name!r} does not know the size of its training cells "
                "(its card has no cell_size), so it cannot be set to a cell diameter"
            )
        factor = card.cell_diameter / diameter
        lo, hi = SCALE_RANGE
        if not lo <= card.scale * factor <= hi:
            raise ValueError(
                f"cell diameter {diameter:g} px is too far from the {card.cell_diameter:.0f}-px "
                f"cells of model {card.name!r}: the image scale would be "
                f"{card.scale * factor:.3g}, outside [{lo:g}, {hi:g}]"
            )
        card = dataclasses.replace(
            card,
            scale=card.scale * factor,
            cell_size=max(1, round(card.cell_size / factor**2)),
            min_size=max(1, round(card.min_size / factor**2)),
        )
        return dataclasses.replace(self, card=card)


def save_model(
    out_dir: str | Path, net: EmbedTrackNet, card: ModelCard, half: bool = False
) -> Path:
    """Write ``weights.safetensors`` + ``card.json`` into ``out_dir``.

    Each file is written to a temporary name and moved into place, weights first and the
    card last, so a folder with a card always has complete weights. Other files in
    ``out_dir`` (checkpoints, history) are left alone.

    Args:
        half: store float tensors as float16 (they are loaded back as float32).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().half() if half and v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in net.state_dict().items()
    }
    _write_atomic(
        out_dir / WEIGHTS,
        lambda p: save_file(state, str(p), metadata={"architecture": card.architecture}),
    )
    _write_atomic(out_dir / CARD, lambda p: p.write_text(_card_json(card)))
    return out_dir


def save_card(model_dir: str | Path, card: ModelCard) -> Path:
    """Replace the card of an existing model folder (the weights are left alone)."""
    path = Path(model_dir) / CARD
    if not path.is_file():
        raise ModelFileError(f"{model_dir}: not a model folder (no {CARD})")
    _write_atomic(path, lambda p: p.write_text(_card_json(card)))
    return path


def _card_json(card: ModelCard) -> str:
    return json.dumps(card.to_dict(), indent=2) + "\n"


def _write_atomic(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then move it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; models are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_card(model_dir: str | Path) -> ModelCard:
    """Read a model folder's card, with clear errors."""
    path = Path(model_dir) / CARD
    if not path.is_file():
        raise ModelFileError(f"{model_dir}: not a model folder (no {CARD})")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path}: model card is not valid JSON ({err})") from None
    if not isinstance(d, dict):
        raise ModelFileError(f"{path}: model card must be a JSON object")
    return ModelCard.from_dict(d, str(path))


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a shipped model by name, or a model folder (or its weights file) by path.

    Raises:
        ModelFileError: unknown name, missing files, corrupt weights, another architecture,
            missing or unexpected tensors.
    """
    model_dir = resolve_model(name_or_path)
    card = read_card(model_dir)
    if card.architecture != ARCHITECTURE:
        raise ModelFileError(
            f"{model_dir}: architecture {card.architecture!r} is not supported "
            f"(this version reads {ARCHITECTURE!r})"
        )
    wpath = model_dir / WEIGHTS
    if not wpath.is_file():
        raise ModelFileError(f"{model_dir}: weights file {WEIGHTS} is missing")
    try:
        state = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{wpath}: corrupt or unreadable weights ({err})") from None
    net = build_model(card.architecture, dropout=card.dropout)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{wpath}: weights do not fit {card.architecture} "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. "
            f"{(missing or unexpected)[0]})"
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise ModelFileError(
                f"{wpath}: tensor {k} has shape {tuple(v.shape)}, expected "
                f"{tuple(expected[k].shape)}"
            )
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    net.eval().to(device)
    return LoadedModel(net, card, model_dir)


def resolve_model(name_or_path: str | Path) -> Path:
    """Folder of a shipped model name, a user model name, or a path (folder or weights file)."""
    p = Path(name_or_path)
    if p.is_file() and p.name in (WEIGHTS, CARD):
        return p.parent
    if p.is_dir():
        return p
    for root in (SHIPPED_DIR, user_model_dir()):
        cand = root / str(name_or_path)
        if (cand / CARD).is_file():
            return cand
    names = ", ".join(m.name for m in list_models()) or "none"
    raise ModelFileError(
        f"model {str(name_or_path)!r} not found: give a model folder or one of: {names}"
    )


def user_model_dir() -> Path:
    """Folder for the user's fine-tuned models (``$EMBEDTRACK_MODELS`` or the user data dir)."""
    env = os.environ.get("EMBEDTRACK_MODELS")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "napari-embedtrack" / "models"


@dataclass
class ModelInfo:
    """A model that can be chosen by name."""

    name: str
    path: Path
    card: ModelCard
    shipped: bool


def list_models() -> list[ModelInfo]:
    """Shipped models first, then the user's models; unreadable folders are skipped."""
    out = []
    for root, shipped in ((SHIPPED_DIR, True), (user_model_dir(), False)):
        if not root.is_dir():
            continue
        for d in sorted(root.iterdir()):
            if not d.name.startswith(".") and (d / CARD).is_file():
                try:
                    out.append(ModelInfo(d.name, d, read_card(d), shipped))
                except ModelFileError as err:
                    log.warning("skipping model %s: %s", d, err)
    return out
