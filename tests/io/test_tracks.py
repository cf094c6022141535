"""Tests for napari_embedtrack.io.tracks: lineage tables <-> napari Tracks and consistent_tracks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_embedtrack.io.tracks import (
    consistent_tracks,
    lineage_from_labels,
    lineage_to_tracks,
    tracks_to_lineage,
)

# --------------------------------------------------------------------------------------------
# labels <-> lineage
# --------------------------------------------------------------------------------------------


def test_lineage_from_labels(gap_labels):
    labels, _ = gap_labels
    lineage = lineage_from_labels(labels)
    assert lineage.dtype == np.int64
    np.testing.assert_array_equal(lineage, [[1, 0, 4, 0], [2, 5, 6, 0], [3, 5, 6, 0], [5, 0, 6, 0]])
    assert lineage_from_labels(np.zeros((3, 4, 4), np.uint8)).shape == (0, 4)


def test_consistent_tracks_repairs_lineage():
    labels = np.zeros((4, 8, 8), np.uint16)
    labels[0:2, 0:2, 0:2] = 1
    labels[1:4, 4:6, 4:6] = 2  # claims parent 1, but starts while 1 is still present
    labels[2:4, 0:2, 4:6] = 3  # not in the lineage
    lineage = np.array([[1, 0, 9, 0], [2, 2, 3, 1], [4, 0, 3, 0]])
    out_labels, out = consistent_tracks(labels, lineage)
    np.testing.assert_array_equal(out, [[1, 0, 1, 0], [2, 1, 3, 0], [3, 2, 3, 0]])
    np.testing.assert_array_equal(out_labels, labels)
    assert out_labels is not labels


# --------------------------------------------------------------------------------------------
# napari Tracks
# --------------------------------------------------------------------------------------------


def test_lineage_to_tracks_and_back():
    labels = np.zeros((4, 10, 10), np.uint16)
    labels[0:2, 0:2, 0:4] = 1  # centroid (0.5, 1.5)
    labels[2:4, 6:9, 6:9] = 2  # centroid (7, 7)
    labels[2:3, 0:1, 0:1] = 3
    labels[3, 4, 4] = 4
    lineage = np.array([[1, 0, 1, 0], [2, 2, 3, 1], [3, 2, 2, 1], [4, 3, 3, 3], [8, 0, 0, 0]])
    data, graph, props = lineage_to_tracks(labels, lineage)
    np.testing.assert_allclose(
        data,
        [
            [1, 0, 0.5, 1.5],
            [1, 1, 0.5, 1.5],
            [2, 2, 7, 7],
            [2, 3, 7, 7],
            [3, 2, 0, 0],
            [4, 3, 4, 4],
        ],
    )
    assert graph == {2: [1], 3: [1], 4: [3]}
    np.testing.assert_array_equal(props["generation"], [0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(props["track_length"], [2, 2, 2, 2, 1, 1])
    np.testing.assert_array_equal(props["parent"], [0, 0, 1, 1, 1, 3])
    np.testing.assert_array_equal(props["root"], [1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(props["area"], [8, 8, 9, 9, 1, 1])
    assert all(len(v) == len(data) for v in props.values())

    back = tracks_to_lineage(data, graph)
    np.testing.assert_array_equal(back, lineage[:4])
    # napari also accepts scalar parents
    np.testing.assert_array_equal(tracks_to_lineage(data, {2: 1, 3: 1, 4: 3}), lineage[:4])


def test_lineage_to_tracks_empty_and_errors():
    data, graph, props = lineage_to_tracks(np.zeros((2, 4, 4), np.uint16))
    assert data.shape == (0, 4) and graph == {} and props["generation"].shape == (0,)
    assert tracks_to_lineage(np.zeros((0, 4))).shape == (0, 4)
    data = np.array([[1, 0, 1, 1], [2, 1, 2, 2], [3, 2, 2, 2]], float)
    with pytest.raises(ValueError, match="parents"):
        tracks_to_lineage(data, {3: [1, 2]})
    with pytest.raises(ValueError, match="integer"):
        tracks_to_lineage(np.array([[1, 0.5, 1, 1]]))
    # unknown parent ignored
    np.testing.assert_array_equal(tracks_to_lineage(data, {2: [7]})[:, 3], [0, 0, 0])
