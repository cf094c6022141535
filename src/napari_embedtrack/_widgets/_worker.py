"""Run an engine generator in a napari ``thread_worker`` with progress in the widget and in
napari's activity dock.

Engine calls yield :class:`~napari_embedtrack.engine.progress.Progress` and return a result.
Bad input (any ``ValueError``, e.g. a corrupt model file or a movie with NaNs, and missing
files) is turned into a one-line error notification instead of a traceback. So are
``RuntimeError``s (PyTorch reports running out of memory that way; the worker class would
otherwise swallow them as "RuntimeError in aborted thread"), with the traceback logged.
Anything else is a bug and reaches napari's error handler with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from magicgui.widgets import Label, ProgressBar
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal

from ..engine.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class Failed:
    """What a guarded generator returns when the engine rejected its input."""

    message: str


def guarded(gen: Generator[Progress, None, Any]) -> Generator[Progress, None, Any]:
    """Drive ``gen``; return :class:`Failed` for bad input and PyTorch runtime errors."""
    try:
        return (yield from gen)
    except (ValueError, OSError) as err:
        log.info("engine call failed: %s", err)
        return Failed(str(err))
    except RuntimeError as err:
        log.exception("engine call failed")
        return Failed(f"{type(err).__name__}: {err}")


class TaskRunner(QObject):
    """One engine generator at a time; ``done(result)`` fires on the main thread after the
    result callback ran (``result`` is None when the worker was aborted or crashed)."""

    done = Signal(object)

    def __init__(self, bar: ProgressBar, status: Label, parent: QObject | None = None):
        super().__init__(parent)
        self._bar = bar
        self._status = status
        self.worker: GeneratorWorker | None = None
        self._pbar: progress | None = None
        self._result: Any = None
        self._returned = False

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(
        self,
        gen: Generator[Progress, None, Any],
        desc: str,
        on_result: Callable[[Any], None],
        on_progress: Callable[[Progress], None] | None = None,
    ) -> GeneratorWorker:
        """Start ``gen`` in a worker thread. ``on_result`` gets its return value on the main
        thread (not called on failure or abort)."""
        if self.worker is not None:
            raise RuntimeError("a task is already running")
        self._result = None
        self._returned = False
        self._desc = desc
        self._pbar = progress(total=0, desc=desc)
        self._bar.min, self._bar.max, self._bar.value = 0, 0, 0
        self._status.value = f"{desc}..."
        worker = create_worker(guarded, gen)
        worker.yielded.connect(lambda p: self._on_yield(p, on_progress))
        worker.returned.connect(lambda r: self._on_return(r, on_result))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    def quit(self) -> None:
        """Abort at the next yield (the result is dropped)."""
        if self.worker is not None:
            self.worker.quit()

    def _on_yield(self, p: Progress, on_progress: Callable | None) -> None:
        # a progress record delivered after the result must not overwrite the final status
        if not isinstance(p, Progress) or self._returned:
            return
        if p.total:
            if self._bar.max != p.total:
                self._bar.max = p.total
            self._bar.value = min(p.done, p.total)
        if p.message:
            self._status.value = p.message
        if on_progress is not None:
            on_progress(p)
        # napari's progress bar last: updating it can process pending events, among them
        # this task's result, whose final status must not be overwritten by this record
        if self._pbar is not None:
            if p.total:
                if self._pbar.total != p.total:
                    self._pbar.total = p.total
                self._pbar.update(p.done - self._pbar.n)
            # checked again: update() may have run this task's end, which drops the bar
            if p.message and self._pbar is not None:
                self._pbar.set_description(f"{self._desc}: {p.message}")

    def _on_return(self, result: Any, on_result: Callable[[Any], None]) -> None:
        self._returned = True
        if isinstance(result, Failed):
            self._status.value = f"failed: {result.message}"
            show_error(f"EmbedTrack: {result.message}")
            return
        self._result = result
        on_result(result)

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._bar.max == 0:  # never got a total: leave the busy state
            self._bar.max = 1
        self.worker = None
        result, self._result = self._result, None
        self.done.emit(result)
