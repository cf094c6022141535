"""How large are a movie's cells? An estimate of their diameter from a model's own masks.

A network trained on one movie segments cells of about its training size (+-33 % by scale
augmentation); a movie filmed at another magnification has cells of another size in
pixels, and there the masks fall apart (issue #13: GOWT1 01 frames 30-47 shrunk to 0.7 /
0.5 / 0.35 of its size, SEG 0.75 / 0.68 / 0.33 with the GOWT1 model as shipped, 0.91 when
it is set to the truth's cell size, 0.90-0.91 set to this estimate; docs/models.md,
"Movies at another magnification").
:meth:`~.modelfile.LoadedModel.with_cell_diameter` rescales a model to a movie's cells;
:func:`estimate_cell_diameter` finds their size when the user does not know it.

The estimate runs the network and the clustering (no linking, no clean-up) on a few frames
spread over the movie and takes the median area of the masks as a disc's. A model at the
wrong scale merges small cells and breaks large ones, so the first figure is biased towards
the model's own size; the model is then set to that figure and the frames are segmented
again, until the masks are of the size the model was set to, within :data:`TOLERANCE`
(usually two or three rounds).
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np

from .cluster import cluster
from .modelfile import LoadedModel, check_cell_diameter, disc_diameter
from .progress import Progress

#: Frames the estimate looks at (spread evenly over the movie).
FRAMES = 3
#: Rounds stop when the masks' size is within this range of the size the model was set to
#: (ratio, smaller and larger). On the training movies and their dim copies the first
#: round lies in 0.98-1.08 of the model's own size (MSC's dimmed copy 1.08), so a movie of
#: the model's size is left alone. Narrower below: cells 10 % smaller than the model's cost
#: GOWT1 0.017 SEG, cells 12 % larger nothing (docs/models.md, "Movies at another
#: magnification").
TOLERANCE = (0.95, 1.1)
MAX_ROUNDS = 4
#: Fewer masks than this in the frames looked at say too little about the cells' size: the
#: estimate stays at the size the model was set to (its own in the first round).
MIN_CELLS = 5
#: The model is set to another size only where it segments the movie at least about as
#: confidently as at its own: the mean seediness inside its masks there may be at most this
#: much lower. A model that breaks a movie's cells into pieces (the GOWT1 model on MSC
#: 01's large, dim cells) finds masks ~0.8 of any size it is set to, so the rounds run
#: away towards small sizes (60 -> 20 px, SEG 0.0 and 530 tracks for 13) while its
#: confidence falls (0.86 -> 0.80); on cells of another size it rises as the rounds
#: approach them (GOWT1 01 at 0.35 of its size: 0.87 -> 0.94; docs/models.md, "Movies at
#: another magnification").
CONFIDENCE_MARGIN = 0.01


def within_tolerance(found: float, diameter: float) -> bool:
    """Whether masks of diameter ``found`` are of the size ``diameter`` the model was set
    to, within :data:`TOLERANCE`."""
    lo, hi = TOLERANCE
    return lo <= found / diameter < hi


def mask_diameters(labels: np.ndarray) -> np.ndarray:
    """Each mask's diameter as a disc of its area (pixels), cells cut by the frame's edge
    left out unless every cell is."""
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel())
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    inner = np.ones(areas.size, bool)
    inner[0] = False
    inner[edge] = False
    present = areas > 0
    present[0] = False
    keep = present & inner
    if not keep.any():
        keep = present
    return disc_diameter(areas[keep])


def estimate_cell_diameter(
    movie,
    model: LoadedModel,
    *,
    frames: int = FRAMES,
    device: str = "auto",
    should_stop: Callable[[], bool] | None = None,
) -> Generator[Progress, None, float | None]:
    """The median cell diameter (pixels) of ``movie`` ((T, Y, X) or (Y, X), any array read
    one frame at a time) as ``model`` segments it, refined until the model is set to it.

    Yields :class:`Progress` per frame segmented; returns the diameter the model, set to it
    (:meth:`~.modelfile.LoadedModel.with_cell_diameter`), finds again within
    :data:`TOLERANCE` (the model's own ``card.cell_diameter`` when the movie's cells are of
    its size; also when fewer than :data:`MIN_CELLS` masks are found), or ``None`` if no
    cell is found in the frames looked at, or when stopped (``should_stop``). The card's
    pre-filter, thresholds and minimum size are used; no TTA. ValueError if the card does
    not know its cells' size.

    The model's own size is returned as well where the rounds do not settle on a size at
    which the model segments at least about as confidently as at its own
    (:data:`CONFIDENCE_MARGIN`): the size it settled on, or else the most confident size
    tried.
    """
    from .pipeline import default_cluster_params
    from .predict import iter_outputs

    if model.card.cell_diameter <= 0:
        raise ValueError(
            f"model {model.card.name!r} does not know the size of its training cells "
            "(its card has no cell_size), so it cannot estimate the movie's"
        )
    movie = movie if np.ndim(movie) == 3 else np.asarray(movie)[None]
    n = int(movie.shape[0])
    picks = sorted({round(i) for i in np.linspace(0, n - 1, min(frames, n))})
    sample = np.stack([np.asarray(movie[t], dtype=np.float32) for t in picks])
    total = len(picks) * MAX_ROUNDS
    own = diameter = model.card.cell_diameter  # the model as it is
    done = 0
    tried: dict[float, float] = {}  # size set -> mean seediness inside the masks

    def chosen(settled: float | None) -> float:
        best = settled if settled is not None else max(tried, key=tried.get)
        return best if tried[best] >= tried[own] - CONFIDENCE_MARGIN else own

    for round_ in range(MAX_ROUNDS):
        m = model.with_cell_diameter(diameter)
        params = default_cluster_params(m.card)
        sizes, seeds = [], []
        # the frames as one short movie: the masks of a frame do not depend on the frame
        # before it (only the tracking offsets do, which are not used here)
        outputs = iter_outputs(m.net, sample, **m.card.input_kwargs, tta=False, device=device)
        for t, out in zip(picks, outputs, strict=True):
            if should_stop is not None and should_stop():
                outputs.close()
                return None
            labels = cluster(out.seediness, out.bandwidth, out.offsets, params)
            sizes.append(mask_diameters(labels))
            seeds.append(np.asarray(out.seediness)[labels > 0])
            done += 1
            yield Progress(done, total, f"cell size: round {round_ + 1}, frame {t}")
        found = np.concatenate(sizes)
        if found.size == 0 and round_ == 0:
            return None
        if found.size < MIN_CELLS:
            return diameter if round_ == 0 else chosen(None)
        tried[diameter] = float(np.concatenate(seeds).mean())
        if tried[diameter] < tried[own] - CONFIDENCE_MARGIN:
            return chosen(None)  # less confident than as trained: running away, not closer
        new = float(np.median(found))
        if within_tolerance(new, diameter):
            return chosen(diameter)  # the model set to this size finds cells of this size
        try:
            model.with_cell_diameter(new)
        except ValueError:  # beyond the scales the model can be set to
            return chosen(None)
        diameter = new
    return chosen(None)


#: ``cell_diameter`` settings besides a number of pixels: estimate it from the movie
#: (:func:`estimate_cell_diameter`), or use the model as trained.
AUTO = "auto"
MODEL = "model"
#: The default of ``embedtrack predict`` and of the track widget: on a movie whose cells
#: are of the model's size (every training movie and its dim copies) the estimate is the
#: model's own size in one round, so nothing changes; elsewhere the model is set to the
#: movie's cells.
DEFAULT = AUTO


def parse_cell_diameter(value) -> float | str:
    """A ``cell_diameter`` setting: :data:`AUTO`, :data:`MODEL` or a positive number of
    pixels (numbers may come as text, as from the command line); ValueError otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in (AUTO, MODEL):
            return text
        try:
            value = float(text)
        except ValueError:
            value = None
    try:
        return check_cell_diameter(value)
    except ValueError:
        raise ValueError(
            f"cell diameter must be a positive number of pixels, {AUTO!r} or {MODEL!r}, "
            f"got {value!r}"
        ) from None


def fit_model(
    movie,
    model: LoadedModel,
    cell_diameter: float | str | None = DEFAULT,
    *,
    device: str = "auto",
    should_stop: Callable[[], bool] | None = None,
) -> Generator[Progress, None, LoadedModel]:
    """``model`` set to ``movie``'s cells: ``cell_diameter`` pixels across, or
    :data:`AUTO` (estimated; the model as it is when its card does not know its cells' size
    or no cell is found), or :data:`MODEL` / ``None`` (the model as it is). The model
    itself when the diameter is its own; else a copy whose ``card.cell_diameter`` is the
    diameter used."""
    setting = MODEL if cell_diameter is None else parse_cell_diameter(cell_diameter)
    if setting == MODEL:
        return model
    if setting == AUTO:
        if model.card.cell_diameter <= 0:
            return model
        found = yield from estimate_cell_diameter(
            movie, model, device=device, should_stop=should_stop
        )
        if found is None:
            return model
        setting = found
    if setting == model.card.cell_diameter:
        return model
    return model.with_cell_diameter(setting)
