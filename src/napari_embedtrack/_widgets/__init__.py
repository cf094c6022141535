"""napari dock widgets: tracking (with re-clustering), fine-tuning, review and evaluation,
track editing and the lineage tree."""

from ._edit import EditWidget
from ._finetune import FineTuneWidget
from ._lineage import LineageWidget
from ._review import ReviewWidget
from ._track import TrackWidget

__all__ = ["EditWidget", "FineTuneWidget", "LineageWidget", "ReviewWidget", "TrackWidget"]
