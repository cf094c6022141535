"""Per-frame network outputs in pixel units (the contract between predict, cluster and link)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FrameOutput:
    """Network outputs for one frame, full frame size, float32.

    Attributes:
        seediness: (Y, X) in [0, 1].
        bandwidth: (2, Y, X) raw sigmoid outputs (y, x) in [0, 1]; kernel variance on the
            normalised grid is ``exp(-10 * bandwidth)``.
        offsets: (2, Y, X) segmentation offsets (dy, dx) in pixels, pixel -> its cell centre.
        track_offsets: (2, Y, X) tracking offsets (dy, dx) in pixels, pixel at t -> its cell's
            centre at t-1 (zeros for the first frame of a movie).
    """

    seediness: np.ndarray
    bandwidth: np.ndarray
    offsets: np.ndarray
    track_offsets: np.ndarray

    def __post_init__(self) -> None:
        shape = self.seediness.shape
        if len(shape) != 2:
            raise ValueError(f"seediness must be (Y, X), got shape {shape}")
        for name in ("bandwidth", "offsets", "track_offsets"):
            arr = getattr(self, name)
            if arr.shape != (2, *shape):
                raise ValueError(f"{name} must have shape {(2, *shape)}, got {arr.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.seediness.shape  # type: ignore[return-value]

    def stack(self) -> np.ndarray:
        """All channels as one (7, Y, X) array: seed, bw y/x, off y/x, track y/x."""
        return np.concatenate(
            [self.seediness[None], self.bandwidth, self.offsets, self.track_offsets], 0
        ).astype(np.float32, copy=False)

    @classmethod
    def unstack(cls, arr: np.ndarray) -> FrameOutput:
        """Inverse of :meth:`stack`."""
        if arr.ndim != 3 or arr.shape[0] != 7:
            raise ValueError(f"expected a (7, Y, X) array of stacked outputs, got {arr.shape}")
        return cls(arr[0], arr[1:3], arr[3:5], arr[5:7])
