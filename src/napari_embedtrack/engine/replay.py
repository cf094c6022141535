"""A starting model's own results on a training sequence, for fine-tuning with replay.

The fine-tune widget replays the plugin's result already in the viewer; a fine-tune from
CTC folders (``embedtrack train --init M --replay``) has no result yet, so the starting
model tracks the sequence here as ``embedtrack predict`` would (the cells' size measured,
the card's TTA and smoothing) and its labels on the frames :func:`.data.replay_frames`
picks, away from the annotated ones, become a replayed sequence (docs/models.md,
"Fine-tuning with replay").
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from .cellsize import AUTO, fit_model
from .data import (
    REPLAY_EVERY,
    TrainingSequence,
    pairs_with_cells,
    replay_frames,
    replay_sequence,
)
from .modelfile import LoadedModel, load_model
from .pipeline import track_movie
from .progress import Progress


def model_replay(
    seq: TrainingSequence,
    model: LoadedModel | str,
    *,
    device: str = "auto",
    cell_diameter: float | str | None = AUTO,
    every: int = REPLAY_EVERY,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[Progress, None, TrainingSequence | None]:
    """The starting ``model``'s results on ``seq`` as a replayed sequence named
    ``<seq.name>-replay`` beside it (:func:`.data.replay_sequence`), the frames annotated
    in ``seq`` (its SEG frames) being the corrections. Pairs in which the model found no
    cell in a frame are left out (:func:`.data.pairs_with_cells`), as the fine-tune widget
    leaves them out. None when no frame is left to replay (the annotations cover the movie,
    or the model found cells on none of the frames) or ``should_stop`` stopped the run.

    Yields the cell-size estimate's and the tracking's progress (per frame)."""
    frames = replay_frames(seq.n_frames, seq.seg_frames, every)
    if not frames:
        return None
    if not isinstance(model, LoadedModel):
        model = load_model(model, device="cpu")
    movie = seq.image  # normalised frames: prediction's own normalisation leaves them so
    fitted = yield from fit_model(
        movie, model, cell_diameter, device=device, should_stop=should_stop
    )
    result = yield from track_movie(
        movie, fitted, device=device, keep_outputs=False, should_stop=should_stop
    )
    if not result.complete:
        return None
    frames = pairs_with_cells(frames, result.labels)  # a frame without cells: not known empty
    if not frames:
        return None
    return replay_sequence(f"{seq.name}-replay", seq, result.labels, result.lineage, frames)
