"""Fixtures shared by the CTC and Tracks tests (test_ctc.py, test_tracks.py)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def gap_labels() -> tuple[np.ndarray, np.ndarray]:
    """Track 1 in frames 0-1 and 3-4 (gap at 2), dividing into 2 and 3 at frame 5."""
    labels = np.zeros((7, 16, 16), np.uint16)
    for t in (0, 1, 3, 4):
        labels[t, 2:6, 2:6] = 1
    labels[5:, 2:6, 2:4] = 2
    labels[5:, 9:13, 2:6] = 3
    labels[:, 10:14, 10:14] = 5  # a track present throughout
    lineage = np.array(
        [[1, 0, 4, 0], [2, 5, 6, 1], [3, 5, 6, 1], [5, 0, 6, 0], [9, 0, 3, 0], [10, 4, 6, 9]]
    )  # 9 is not in the masks: dropped, its child 10 is not in the masks either
    return labels, lineage
