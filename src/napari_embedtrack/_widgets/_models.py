"""The models the widgets can choose from, shared by all widgets of the process.

Shipped and user models come from :func:`engine.modelfile.list_models`; folders the user
picked with "Load model folder..." are remembered here too. Widgets call :meth:`choices`
and re-read them when :attr:`ModelRegistry.changed` fires (e.g. after fine-tuning saved a
new model).
"""

from __future__ import annotations

import logging
from pathlib import Path

from psygnal import Signal

from ..engine.modelfile import ModelCard, list_models, read_card

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
#: Listed first, so model pickers start on it: the model of the demo and of the sample clip
#: opened first (alphabetical order would start on the weakest one, Fluo-C2DL-MSC).
DEFAULT_MODEL = "Fluo-N2DH-SIM+"


class ModelRegistry:
    """Model choices for combo boxes, ``[(label, folder path), ...]``, and a change signal."""

    changed = Signal()

    def __init__(self) -> None:
        self._extra: list[Path] = []

    def add_folder(self, folder: str | Path) -> Path:
        """Remember a model folder picked by the user (its card is checked first).

        Raises:
            ModelFileError: the folder holds no readable model card.
        """
        folder = Path(folder).resolve()
        read_card(folder)
        if folder not in self._extra:
            self._extra.append(folder)
        self.changed.emit()
        return folder

    def refresh(self) -> None:
        """Tell the widgets to re-read the model lists (a model was added or removed)."""
        self.changed.emit()

    def choices(self) -> list[tuple[str, Path]]:
        """Shipped models (:data:`DEFAULT_MODEL` first), then the user's models, then folders
        loaded this session."""
        out: list[tuple[str, Path]] = []
        models = sorted(list_models(), key=lambda m: not (m.shipped and m.name == DEFAULT_MODEL))
        for m in models:
            out.append((m.name if m.shipped else f"{m.name} (user)", m.path.resolve()))
        known = {p for _, p in out}
        for p in self._extra:
            if p not in known and (p / "card.json").is_file():
                out.append((f"{p.name} ({p.parent})", p))
        return out

    @staticmethod
    def card(folder: Path) -> ModelCard | None:
        """The card of a model folder, or None (logged) if it became unreadable."""
        try:
            return read_card(folder)
        except ValueError as err:
            log.warning("cannot read model card of %s: %s", folder, err)
            return None


#: The registry every widget of this process uses.
registry = ModelRegistry()
