"""napari dock widgets: tracking (with re-clustering) and fine-tuning."""

from ._finetune import FineTuneWidget
from ._track import TrackWidget

__all__ = ["FineTuneWidget", "TrackWidget"]
