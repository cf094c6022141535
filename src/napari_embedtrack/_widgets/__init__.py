"""napari dock widgets: tracking (with re-clustering), fine-tuning, review and evaluation."""

from ._finetune import FineTuneWidget
from ._review import ReviewWidget
from ._track import TrackWidget

__all__ = ["FineTuneWidget", "ReviewWidget", "TrackWidget"]
