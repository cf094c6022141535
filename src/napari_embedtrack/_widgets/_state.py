"""What the widgets remember between clicks: the loaded model and the last run (track
widget), and what the widgets of one viewer share (:class:`ViewerSession`).

Kept apart from the Qt code so that it is the one place holding cached network outputs (for
re-clustering and inspection layers) and the loaded network (not reloaded on every run).

Long movies (issue #16): a run's network outputs go to an on-disk zarr store (float16, 14
bytes per pixel and frame) in a temporary run folder, read back frame by frame for
re-clustering and lazily by the inspection layers; the tracked frames go to that folder too
while the run lasts, and the result labels stay in memory only up to
:attr:`TrackingState.lazy_bytes` (else they are a zarr array in the run folder, which napari
shows, and lets the user paint into, without loading it). Only the most recent run's outputs
are kept (removed when another run replaces it); lazy labels stay until exit (a layer the
user edits may hold them).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal

from ..engine.cellsize import fit_model
from ..engine.checkpoint import RunCheckpoint
from ..engine.cluster import ClusterParams
from ..engine.modelfile import WEIGHTS, LoadedModel, ModelCard, load_model
from ..engine.outputs import FrameOutput
from ..engine.pipeline import RawTracks, retrack_frames, track_frames
from ..engine.predict import resolve_device
from ..engine.progress import Progress, run
from ..io.movies import LazyMovie
from ..io.tracks import lineage_to_tracks
from ..io.zarr_store import OutputStore, _open_array

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """One tracking run of an input layer, with its cached network outputs.

    Attributes:
        source: name of the input Image layer.
        outputs: network outputs of the frames done, first one = ``first_frame``.
        card: card of the model that produced them.
        params: clustering settings of ``labels``.
        first_frame: index in the input layer of the first frame tracked.
        n_frames: frames in the input layer (1 for a 2D image).
        is_2d: the input was a single (Y, X) image.
        labels: (n_done, Y, X) uint32 tracked labels of the frames done.
        lineage: (N, 4) int64 ``[id, start, end, parent]``, frames relative to
            ``first_frame``.
        complete: False if the run was cancelled before its last frame.
        model_path: folder of the model that produced the outputs.
        last_frame: index in the input layer of the last frame asked for (a cancelled run
            stops before it); None: the last frame done.
        run_dir: the temporary folder holding the outputs store (and lazy labels).
        cell_diameter: the cells' diameter (px) the model was set to for this run, None when
            it ran as trained (:mod:`~..engine.cellsize`).
        model_cell_diameter: the diameter of the model's training cells (px; 0: unknown).
        labels_store: lazy labels aligned with the input layer (a zarr array, zeros outside
            the frames tracked), when the labels are not held in memory.
    """

    source: str
    outputs: Sequence[FrameOutput]
    card: ModelCard
    params: ClusterParams
    first_frame: int
    n_frames: int
    is_2d: bool
    labels: np.ndarray
    lineage: np.ndarray
    complete: bool = True
    model_path: Path | None = None
    last_frame: int | None = None
    run_dir: Path | None = None
    labels_store: Any = None
    cell_diameter: float | None = None
    model_cell_diameter: float = 0.0

    @property
    def n_done(self) -> int:
        return int(self.labels.shape[0])

    @property
    def frame_range(self) -> tuple[int, int]:
        """First and last frame asked for, in the input layer's frame indices."""
        last = self.first_frame + self.n_done - 1 if self.last_frame is None else self.last_frame
        return self.first_frame, last

    def full_labels(self) -> np.ndarray:
        """Labels aligned with the input layer: (T, Y, X) uint32 (zeros outside the frames
        tracked), or (Y, X) for a 2D input."""
        if self.is_2d:
            return np.asarray(self.labels[0])
        if self.labels_store is not None:
            return self.labels_store
        full = np.zeros((self.n_frames, *self.labels.shape[1:]), np.uint32)
        full[self.first_frame : self.first_frame + self.n_done] = self.labels
        return full

    def absolute_lineage(self) -> np.ndarray:
        """The lineage with frame indices of the input layer."""
        lin = self.lineage.copy()
        lin[:, 1:3] += self.first_frame
        return lin

    def tracks(self) -> tuple[np.ndarray, dict[int, list[int]], dict[str, np.ndarray]]:
        """napari Tracks data, graph and properties in the input layer's frame indices."""
        data, graph, props = lineage_to_tracks(self.labels, self.lineage)
        data[:, 1] += self.first_frame
        return data, graph, props

    @property
    def n_divisions(self) -> int:
        parents = self.lineage[:, 3]
        _, counts = np.unique(parents[parents > 0], return_counts=True)
        return int(np.count_nonzero(counts >= 2))

    def summary(self) -> str:
        frames = "1 image" if self.is_2d else f"{self.n_done} frame(s)"
        cells = len(self.lineage)
        text = f"{frames}: {cells} {'cells' if self.is_2d else 'tracks'}"
        if not self.is_2d:
            text += f", {self.n_divisions} division(s)"
        if self.cell_diameter is not None:
            text += (
                f"; cells ~{self.cell_diameter:.0f} px (model: {self.model_cell_diameter:.0f} px)"
            )
        if not self.complete:
            text += f" (cancelled: frames {self.first_frame}-"
            text += f"{self.first_frame + self.n_done - 1} only)"
        return text


class TrackingState:
    """The loaded model (one, reused while path and device stay the same) and the last run."""

    #: Result labels larger than this (bytes, uint32) live in a zarr array on disk.
    lazy_bytes = 1 << 30

    def __init__(self) -> None:
        self._model: LoadedModel | None = None
        self._model_key: tuple | None = None
        self._record: RunRecord | None = None

    @property
    def record(self) -> RunRecord | None:
        return self._record

    @record.setter
    def record(self, record: RunRecord | None) -> None:
        old = self._record
        self._record = record
        if old is None or old.run_dir is None or (record and record.run_dir == old.run_dir):
            return
        if old.labels_store is None:
            _remove_run_dir(old.run_dir)
        else:  # lazy labels may be the data of a layer the user edits: kept until exit
            shutil.rmtree(old.run_dir / "outputs.zarr", ignore_errors=True)

    def model(self, path: Path, device: str) -> LoadedModel:
        """Load a model folder on a device, or reuse the one loaded last time."""
        dev = resolve_device(device)
        weights = Path(path) / WEIGHTS
        mtime = weights.stat().st_mtime_ns if weights.is_file() else None
        key = (str(Path(path).resolve()), str(dev), mtime)
        if self._model is None or key != self._model_key:
            log.info("loading model %s on %s", path, dev)
            self._model = None  # free the old one first
            self._model = load_model(path, device=dev)
            self._model_key = key
        return self._model

    def track(
        self,
        movie: np.ndarray,
        *,
        source: str,
        first_frame: int,
        n_frames: int,
        model_path: Path,
        device: str,
        tta: bool,
        params: Callable[[ModelCard], ClusterParams],
        smooth_sigma: float | None = None,
        cell_diameter: float | str | None = None,
        should_stop: Callable[[], bool],
    ) -> Generator[Progress, None, RunRecord]:
        """Run the network on ``movie`` (a (T, Y, X) slice of the input, or (Y, X); numpy,
        dask or zarr: read one frame at a time).

        ``params`` maps the model's card to the clustering settings (so that the grid spacing
        always comes from the card). ``smooth_sigma`` replaces the card's Gaussian pre-filter
        for this run (None: the card's). ``cell_diameter``: the movie's cells' diameter
        (px), ``"auto"`` (estimated from a few frames) or None (the model as trained), see
        :func:`~..engine.cellsize.fit_model`; ``params`` then gets the card set to the
        cells. Runs in a worker thread; the caller stores the returned
        record in :attr:`record` on the main thread (which removes the previous run's
        folder).
        """
        yield Progress(0, 0, "loading model", {"frame": -1})
        trained = self.model(model_path, device).with_smooth_sigma(smooth_sigma)
        yield Progress(0, 0, "measuring the cells", {"frame": -1})
        model = yield from fit_model(
            movie, trained, cell_diameter, device=device, should_stop=should_stop
        )
        fitted = model is not trained
        cluster_params = params(model.card)
        t = 1 if movie.ndim == 2 else int(movie.shape[0])
        y, x = (int(n) for n in movie.shape[-2:])
        run_dir = _new_run_dir()
        try:
            store = OutputStore(run_dir / "outputs.zarr", (t, y, x))
            frames = RunCheckpoint(run_dir / "frames", {})
            raw = yield from track_frames(
                movie,
                model,
                tta=tta,
                device=device,
                params=cluster_params,
                outputs=store,
                should_stop=should_stop,
                checkpoint=frames,
                in_memory=False,
            )
            labels, lineage, lazy = self._finish(raw, run_dir, first_frame, n_frames, movie.ndim)
        except BaseException:
            _remove_run_dir(run_dir)
            raise
        frames.remove()  # the tracked frames before the clean-up
        return RunRecord(
            source=source,
            outputs=store,
            card=model.card,
            params=cluster_params,
            first_frame=first_frame,
            n_frames=n_frames,
            is_2d=movie.ndim == 2,
            labels=labels,
            lineage=lineage,
            complete=raw.complete,
            model_path=Path(model_path),
            last_frame=first_frame + t - 1,
            run_dir=run_dir,
            labels_store=lazy,
            cell_diameter=model.card.cell_diameter if fitted else None,
            model_cell_diameter=trained.card.cell_diameter,
        )

    def _finish(self, raw: RawTracks, run_dir: Path, first: int, n_frames: int, ndim: int):
        """The track clean-up of a run's frames: (labels, lineage, lazy full-length labels or
        None). Labels go to a zarr array in ``run_dir`` when they are larger than
        :attr:`lazy_bytes`."""
        finisher = raw.finisher()
        lineage = run(finisher.plan())
        n, (y, x) = raw.n_frames, raw.frame_shape
        if ndim == 2 or n_frames * y * x * 4 <= self.lazy_bytes:
            labels = np.zeros((n, y, x), np.uint32)
            for t, frame in enumerate(finisher.frames()):
                labels[t] = frame
            return labels, lineage, None
        name = f"labels-{uuid.uuid4().hex[:8]}.zarr"
        full = _open_array(run_dir / name, "w", shape=(n_frames, y, x), chunks=(1, y, x),
                           dtype="uint32", fill_value=0)  # fmt: skip
        for t, frame in enumerate(finisher.frames()):
            full[first + t] = frame
        view = LazyMovie(lambda t: full[t], n_frames, (y, x), np.uint32,
                         source=str(run_dir / name), frames=range(first, first + n))  # fmt: skip
        return view, lineage, full

    def recluster(self, record: RunRecord, **changes) -> Generator[Progress, None, RunRecord]:
        """Re-cluster and re-link a record's cached outputs (read from its store one frame at
        a time) with some settings changed (``seed_threshold``, ``score_threshold``,
        ``min_size``)."""
        params = dataclasses.replace(record.params, **changes)
        run_dir = record.run_dir
        frames = None
        if run_dir is not None:
            frames = RunCheckpoint(run_dir / f"frames-{uuid.uuid4().hex[:8]}", {})
            frames.start()
        try:
            raw = yield from retrack_frames(record.outputs, params, frames=frames)
            if run_dir is None:
                from ..engine.pipeline import finish_frames

                labels, lineage = finish_frames(raw)
                lazy = None
            else:
                ndim = 2 if record.is_2d else 3
                labels, lineage, lazy = self._finish(
                    raw, run_dir, record.first_frame, record.n_frames, ndim
                )
        finally:
            if frames is not None:
                frames.remove()
        return dataclasses.replace(
            record, params=params, labels=labels, lineage=lineage, labels_store=lazy
        )


_RUN_DIRS: set[Path] = set()


def _new_run_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="embedtrack-run-"))
    _RUN_DIRS.add(path)
    return path


def _remove_run_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    _RUN_DIRS.discard(path)


@atexit.register
def _remove_all_run_dirs() -> None:
    for path in list(_RUN_DIRS):
        _remove_run_dir(path)


class ViewerSession:
    """What the plugin's widgets in one viewer share: the model of the last tracking run
    (the fine-tune widget starts from it) and the track widget (to re-run a movie with a
    fine-tuned model). One per viewer: :func:`session_of`."""

    #: emitted with the model folder when a tracking run in this viewer finished
    tracked = Signal(object)

    def __init__(self) -> None:
        self.last_model: Path | None = None
        self._track: weakref.ref | None = None

    @property
    def track_widget(self) -> Any:
        """The viewer's track widget, or None if none was opened (or it was closed)."""
        return self._track() if self._track is not None else None

    @track_widget.setter
    def track_widget(self, widget: Any) -> None:
        self._track = weakref.ref(widget) if widget is not None else None

    def ran(self, model_path: Path | None) -> None:
        """A tracking run with ``model_path`` finished."""
        if model_path is not None:
            self.last_model = Path(model_path)
            self.tracked.emit(self.last_model)


_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_of(viewer: Any) -> ViewerSession:
    """The shared state of the plugin's widgets in ``viewer`` (created on first use)."""
    session = _sessions.get(viewer)
    if session is None:
        session = _sessions[viewer] = ViewerSession()
    return session
