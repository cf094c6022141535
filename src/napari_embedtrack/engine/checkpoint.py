"""Finished frames of a tracking run on disk, so that an interrupted run can continue.

While :func:`~napari_embedtrack.engine.pipeline.track_movie` runs with a
:class:`RunCheckpoint`, every frame's tracked labels (before the whole-movie track clean-up)
and the linker's state are written to the checkpoint folder as soon as the frame is done. A
run started again with ``resume=True`` reads them back, re-runs the network on the last
finished frame only to get its encoder features, and continues with the next frame: the
result equals that of an uninterrupted run (same movie, model, settings and machine).

Folder layout (one folder per run; ``embedtrack predict`` keeps it beside the result as
``.<result name>.partial`` and removes it once the result is in place)::

    run.json             format, the run's fingerprint (movie, model, settings)
    state.json           frames finished + linker state (replaced atomically per frame)
    frame_NNNNNN.npz     tracked labels of frame NNNNNN (compressed)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

FORMAT = "napari-embedtrack-run-v1"


class CheckpointMismatch(ValueError):
    """The checkpoint folder holds a run of another movie, model or settings."""


def model_digest(net) -> str:
    """Short SHA-256 of a network's weights (tells two models apart in a fingerprint)."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def movie_digest(movie) -> str:
    """Short SHA-256 of a movie's shape, dtype and a sample of its pixels (first, middle and
    last frame): enough to tell two movies apart without reading every pixel again."""
    h = hashlib.sha256(f"{tuple(movie.shape)} {movie.dtype}".encode())
    n = movie.shape[0]
    for t in sorted({0, n // 2, n - 1}):
        h.update(np.ascontiguousarray(movie[t]).tobytes())
    return h.hexdigest()[:16]


class RunCheckpoint:
    """A checkpoint folder for one tracking run.

    Parameters
    ----------
    folder : where the run's finished frames go.
    fingerprint : JSON-able description of the run (movie, model, settings); a resumed run
        must match it exactly.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: dict):
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it will read back

    def __repr__(self) -> str:
        return f"RunCheckpoint({str(self.folder)!r})"

    # ----------------------------------------------------------------- reading
    def exists(self) -> bool:
        return (self.folder / "run.json").is_file()

    def frames_done(self) -> int:
        """Frames finished in the folder (0 if there is no checkpoint)."""
        try:
            return int(json.loads((self.folder / "state.json").read_text())["frames_done"])
        except (OSError, ValueError, KeyError):
            return 0

    def check(self) -> None:
        """Raise :class:`CheckpointMismatch` unless the folder holds this run."""
        try:
            run = json.loads((self.folder / "run.json").read_text())
        except (OSError, ValueError) as e:
            raise CheckpointMismatch(f"{self.folder}: not a readable checkpoint ({e})") from None
        if run.get("format") != FORMAT:
            raise CheckpointMismatch(f"{self.folder}: not a {FORMAT} checkpoint")
        theirs = run.get("fingerprint", {})
        diff = sorted(k for k in set(theirs) | set(self.fingerprint)
                      if theirs.get(k) != self.fingerprint.get(k))  # fmt: skip
        if diff:
            raise CheckpointMismatch(
                f"{self.folder} holds a run with other {', '.join(diff)}; expected the same "
                "movie, model and settings as the interrupted run (or start again without "
                "resuming)"
            )

    def load(self) -> tuple[int, np.ndarray | None, dict | None]:
        """Frames finished, the last one's tracked labels (None if none) and the linker state
        after it; the other frames stay on disk (:meth:`read_frame`).

        Raises
        ------
        CheckpointMismatch
            if the folder holds another run; ValueError if the last frame is unreadable.
        """
        self.check()
        try:
            state = json.loads((self.folder / "state.json").read_text())
        except (OSError, ValueError):
            return 0, None, None
        done = int(state["frames_done"])
        last = self.read_frame(done - 1) if done else None
        return done, last, state["linker"]

    def read_frame(self, t: int) -> np.ndarray:
        """Tracked labels of finished frame ``t`` (before the track clean-up)."""
        return self._read(t, "labels")

    def read_seediness(self, t: int) -> np.ndarray | None:
        """Seediness (uint8) kept with finished frame ``t`` for the dim-cell rims
        (:func:`~.postprocess.dim_rim`), or None."""
        return self._read(t, "seediness")

    def _read(self, t: int, key: str) -> np.ndarray | None:
        path = self.folder / f"frame_{t:06d}.npz"
        try:
            with np.load(path) as data:
                if key == "seediness" and key not in data.files:
                    return None
                return data[key]
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: unreadable finished frame ({e})") from None

    # ----------------------------------------------------------------- writing
    def start(self) -> None:
        """Begin a fresh run: an empty folder with the run's fingerprint."""
        self.remove()
        self.folder.mkdir(parents=True)
        run = {"format": FORMAT, "fingerprint": self.fingerprint}
        _write_atomic(self.folder / "run.json", json.dumps(run, indent=1))

    def save_frame(
        self, t: int, tracked: np.ndarray, linker_state: dict, seediness: np.ndarray | None = None
    ) -> None:
        """Record frame ``t`` as finished (its labels, and the seediness kept for the dim-cell
        rims, first; then the state that counts it)."""
        path = self.folder / f"frame_{t:06d}.npz"
        tmp = path.with_suffix(".tmp.npz")
        arrays = {"labels": tracked}
        if seediness is not None:
            arrays["seediness"] = seediness
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        state = {"frames_done": t + 1, "linker": linker_state}
        _write_atomic(self.folder / "state.json", json.dumps(state))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
