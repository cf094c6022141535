"""Confidence scores (issue #17) as GEFF node and edge properties."""

from __future__ import annotations

import numpy as np
import pytest

from napari_embedtrack._writer import write_geff_store
from napari_embedtrack.engine.confidence import score_tracking
from napari_embedtrack.io.geff import (
    confidence_props,
    read_geff,
    tracking_graph,
    values_per_node,
    write_geff,
)
from napari_embedtrack.io.tracks import lineage_to_tracks
from napari_embedtrack.synthetic import make_movie

pytest.importorskip("geff")


@pytest.fixture
def result():
    movie = make_movie(n_frames=6, shape=(96, 96))
    labels = movie.labels.astype(np.int64)
    labels[3][labels[3] == 1] = 0  # a time gap: written as two linked pieces
    return labels, movie.lineage


def test_confidence_round_trip(tmp_path, result):
    labels, lineage = result
    report = score_tracking(labels, lineage)
    cells = report.cells
    graph = tracking_graph(labels, lineage)
    node = values_per_node(labels, cells["label"], cells["t"], report.node_confidence(), graph)
    np.testing.assert_allclose(node, report.node_confidence())  # same order, none missing
    link = values_per_node(labels, cells["label"], cells["t"], cells["link_confidence"], graph)
    divisions = dict(zip(report.divisions["parent"].tolist(),
                         report.divisions["confidence"].tolist(), strict=True))  # fmt: skip
    node_props, edge_props = confidence_props(graph, node, link, divisions)
    write_geff(tmp_path / "r.geff", labels, lineage, node_props=node_props,
               edge_props=edge_props)  # fmt: skip
    back = read_geff(tmp_path / "r.geff")
    np.testing.assert_allclose(back.nodes["confidence"], report.node_confidence())
    edge = np.ma.filled(np.ma.asarray(back.edges["confidence"], float), np.nan)
    target = back.edges["target"].astype(int)
    # an edge carries its target's link confidence (a division: at most the division's)
    want = np.ma.filled(link, np.nan)[target]
    div = back.edges["division"]
    assert div.any()
    np.testing.assert_allclose(edge[~div], want[~div])
    assert np.all(edge[div] <= want[div] + 1e-12)
    # the piece after the gap starts without predecessor in the labels: no link value
    assert np.isnan(edge).any()


def test_napari_writer_writes_tracks_confidence(tmp_path, result):
    labels, lineage = result
    report = score_tracking(labels, lineage)
    data, graph, props = lineage_to_tracks(labels, lineage)
    key = {(int(t), int(i)): k for k, (t, i) in
           enumerate(zip(report.cells["t"], report.cells["label"], strict=True))}  # fmt: skip
    rows = [key[(int(t), int(i))] for i, t in data[:, :2]]
    props["confidence"] = report.node_confidence()[rows]
    props["link_confidence"] = report.cells["link_confidence"][rows]
    layers = [(labels, {}, "labels"), (data, {"graph": graph, "properties": props}, "tracks")]
    write_geff_store(str(tmp_path / "w.geff"), layers)
    back = read_geff(tmp_path / "w.geff")
    np.testing.assert_allclose(back.nodes["confidence"], report.node_confidence())
    assert "confidence" in back.edges
    # without confidence properties nothing extra is written
    props.pop("confidence")
    write_geff_store(str(tmp_path / "plain.geff"), layers)
    assert "confidence" not in read_geff(tmp_path / "plain.geff").nodes


def test_bad_values(result):
    labels, lineage = result
    graph = tracking_graph(labels, lineage)
    with pytest.raises(ValueError, match="one value per node"):
        confidence_props(graph, np.zeros(3))
    with pytest.raises(ValueError, match="pairs but"):
        values_per_node(labels, [1, 2], [0, 0], [0.5])
