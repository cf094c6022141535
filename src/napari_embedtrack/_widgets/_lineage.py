"""Dock widget "Lineage tree (EmbedTrack)": the lineage of a Tracks layer drawn with
pyqtgraph, synchronised with the viewer (issue #17 part 3).

Time runs left to right; each track is a row of nodes (one per cell, i.e. per frame), a
division a line from the mother's last cell to each daughter's first. Leaves are stacked in
the order of a depth-first walk from the roots (by id); a mother sits midway between its
daughters. Clicking a node shows its frame, centres the viewer on the cell and selects its
label in the labels layer; selecting a label (or changing the frame) in the viewer marks
the node of that cell (or the track's nearest cell) in the tree. The tree is redrawn when
the Tracks layer changes (e.g. after an edit in the edit widget).

pyqtgraph (a well-kept plotting library on Qt, MIT, numpy only) draws and handles the
clicks; napari-arboretum was not used: it draws one lineage at a time, has no
tree -> viewer selection, and pulls in matplotlib, pandas and napari-matplotlib.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import napari
import numpy as np
import pyqtgraph as pg
from magicgui.widgets import ComboBox, Container, Label
from napari.layers import Labels, Tracks
from qtpy.QtCore import QPointF

from ._inputs import tracks_of
from ._layers import find_own, follow_layers, layer_choices, tag_of

log = logging.getLogger(__name__)

NODE_SIZE = 7
MARK_SIZE = 16


def tree_layout(
    data: np.ndarray, graph: dict
) -> tuple[dict[int, float], dict[int, tuple[int, int]], dict[int, list[int]]]:
    """Rows of a lineage drawing: ``{track: y}``, ``{track: (first, last frame)}`` and
    ``{track: daughters}`` from napari Tracks data and graph."""
    ids = data[:, 0].astype(np.int64)
    ts = data[:, 1].astype(np.int64)
    span: dict[int, tuple[int, int]] = {}
    for tid in np.unique(ids).tolist():
        t = ts[ids == tid]
        span[int(tid)] = (int(t.min()), int(t.max()))
    children: dict[int, list[int]] = defaultdict(list)
    parent: dict[int, int] = {}
    for child, parents in graph.items():
        p = parents[0] if isinstance(parents, list | tuple) else parents
        if int(child) in span and int(p) in span:
            children[int(p)].append(int(child))
            parent[int(child)] = int(p)
    y: dict[int, float] = {}
    leaf = 0.0
    for root in sorted(t for t in span if t not in parent):
        stack = [(root, False)]
        while stack:  # post-order: daughters first, the mother midway
            node, seen = stack.pop()
            kids = sorted(children.get(node, []))
            if not kids:
                y[node] = leaf
                leaf += 1.0
            elif seen:
                y[node] = float(np.mean([y[k] for k in kids]))
            else:
                stack.append((node, True))
                stack.extend((k, False) for k in reversed(kids))
    return y, span, dict(children)


class LineageWidget(Container):
    """Lineage tree of a Tracks layer, synchronised with the viewer's frame and labels."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = napari_viewer
        self._tracks = ComboBox(
            label="tracks", choices=layer_choices(self._viewer, Tracks), nullable=True
        )
        self._labels = ComboBox(
            label="labels", choices=layer_choices(self._viewer, Labels), nullable=True
        )
        self._labels.tooltip = "The labels whose label is selected with a node"
        self._status = Label(label="", value="")
        self.extend([self._tracks, self._labels, self._status])

        self.plot = pg.PlotWidget(background="k")
        self.plot.setMinimumHeight(300)
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "frame")
        item.hideAxis("left")
        item.setMenuEnabled(False)
        self.edges = pg.PlotDataItem(connect="pairs", pen=pg.mkPen((150, 150, 150), width=1))
        self.nodes = pg.ScatterPlotItem(size=NODE_SIZE, pen=None, hoverable=True)
        self.mark = pg.ScatterPlotItem(
            size=MARK_SIZE, pen=pg.mkPen("y", width=2), brush=None, symbol="o"
        )
        self.now = pg.InfiniteLine(angle=90, pen=pg.mkPen((255, 255, 0, 90), width=1))
        for it in (self.edges, self.now, self.nodes, self.mark):
            self.plot.addItem(it)
        self.native.layout().addWidget(self.plot)
        self.nodes.sigClicked.connect(self._on_click)

        #: track -> y row; (track, frame) -> (y, x) centroid in the Tracks layer's data
        self.rows: dict[int, float] = {}
        self.spans: dict[int, tuple[int, int]] = {}
        self._cells: dict[tuple[int, int], tuple[float, float]] = {}
        self.selected: tuple[int, int] | None = None
        self._watched_tracks: Tracks | None = None
        self._watched_labels: Labels | None = None

        self._tracks.changed.connect(self._on_tracks)
        self._labels.changed.connect(self._on_labels)
        self._viewer.dims.events.current_step.connect(self._sync_from_viewer)
        follow_layers(self._viewer, self, self._pick_defaults)
        self.reset_choices()
        self._pick_defaults()

    # ------------------------------------------------------------------ layers
    def _pick_defaults(self, _event=None) -> None:
        tracks = [ly for ly in self._viewer.layers if isinstance(ly, Tracks)]
        own = [ly for ly in tracks if (tag_of(ly) or {}).get("kind") == "tracks"]
        if self._tracks.value is None and (own or tracks):
            self._tracks.value = (own or tracks)[-1]
        self._on_tracks(self._tracks.value)

    def _labels_for(self, tracks: Tracks) -> Labels | None:
        tag = tag_of(tracks)
        if tag and tag.get("kind") == "tracks":
            own = find_own(self._viewer, tag.get("source"), "labels")
            if isinstance(own, Labels):
                return own
            for ly in self._viewer.layers:  # an edited result keeps its tag
                t = tag_of(ly)
                if isinstance(ly, Labels) and t and t.get("source") == tag.get("source"):
                    return ly
        name = tracks.name.removesuffix(" tracks")
        found = [ly for ly in self._viewer.layers if ly.name == name and isinstance(ly, Labels)]
        return found[0] if found else None

    def _on_tracks(self, layer: Tracks | None) -> None:
        if layer is not self._watched_tracks:
            if self._watched_tracks is not None:
                self._watched_tracks.events.data.disconnect(self.redraw)
                self._watched_tracks.events.rebuild_graph.disconnect(self.redraw)
            self._watched_tracks = layer
            if layer is not None:
                layer.events.data.connect(self.redraw)
                layer.events.rebuild_graph.connect(self.redraw)
                labels = self._labels_for(layer)
                if labels is not None:
                    self._labels.value = labels
        self.redraw()

    def _on_labels(self, layer: Labels | None) -> None:
        if layer is self._watched_labels:
            return
        if self._watched_labels is not None:
            self._watched_labels.events.selected_label.disconnect(self._sync_from_viewer)
        self._watched_labels = layer
        if layer is not None:
            layer.events.selected_label.connect(self._sync_from_viewer)

    # ------------------------------------------------------------------ drawing
    def redraw(self, _event=None) -> None:
        """Draw the tree of the chosen Tracks layer."""
        layer = self._tracks.value
        self.rows, self.spans, self._cells = {}, {}, {}
        if not isinstance(layer, Tracks) or not len(layer.data):
            self.nodes.setData([], [])
            self.edges.setData([], [])
            self._status.value = "choose a Tracks layer"
            self._sync_from_viewer()
            return
        data, graph = tracks_of(layer)
        data = np.asarray(data, float)
        self.rows, self.spans, children = tree_layout(data, graph)
        ids, ts = data[:, 0].astype(int), data[:, 1].astype(int)
        self._cells = {
            (int(i), int(t)): (float(r[-2]), float(r[-1]))
            for i, t, r in zip(ids, ts, data, strict=True)
        }
        ys = np.array([self.rows[int(i)] for i in ids])
        colours = self._colours(layer, ids)
        spots = [
            {"pos": (t, y), "data": (int(i), int(t)), "brush": pg.mkBrush(*c)}
            for i, t, y, c in zip(ids, ts, ys, colours, strict=True)
        ]
        self.nodes.setData(spots)
        segs = []
        for tid, (first, last) in self.spans.items():
            y = self.rows[tid]
            segs += [(first, y), (last, y)]
            for kid in children.get(tid, []):
                segs += [(last, y), (self.spans[kid][0], self.rows[kid])]
        segs = np.array(segs, float).reshape(-1, 2)
        self.edges.setData(segs[:, 0], segs[:, 1])
        divisions = sum(len(k) >= 2 for k in children.values())
        self._status.value = f"{len(self.spans)} tracks, {divisions} division(s)"
        self._sync_from_viewer()

    def _colours(self, layer: Tracks, ids: np.ndarray) -> np.ndarray:
        """The Tracks layer's own colours of its rows (RGBA 0-255), white if unknown."""
        try:
            rgba = np.asarray(layer.track_colors, float)
            if rgba.shape == (len(ids), 4):
                return (rgba * 255).astype(int)
        except (AttributeError, ValueError):
            pass
        return np.full((len(ids), 4), 255)

    # ------------------------------------------------------------------ sync
    def node_position(self, track: int, frame: int):
        """Where node (track, frame) is drawn, in the plot widget's pixels."""
        vb = self.plot.getPlotItem().getViewBox()
        scene = vb.mapViewToScene(QPointF(float(frame), float(self.rows[track])))
        return self.plot.mapFromScene(scene)

    def _on_click(self, _item, points, _event=None) -> None:
        if len(points):
            track, frame = points[0].data()
            self.select_node(track, frame)

    def select_node(self, track: int, frame: int) -> None:
        """Show ``frame``, centre the viewer on the cell and select its label."""
        track, frame = int(track), int(frame)
        if (track, frame) not in self._cells:
            return
        self.selected = (track, frame)
        tracks = self._tracks.value
        y, x = self._cells[(track, frame)]
        world = tracks.data_to_world(np.array([frame, y, x], float))
        self._viewer.dims.set_point(0, float(world[0]))
        scene = getattr(self._viewer, "scene", None)
        camera = scene.camera if scene is not None else self._viewer.camera
        camera.center = (float(world[1]), float(world[2]))
        labels = self._labels.value
        if isinstance(labels, Labels):
            labels.selected_label = track
        self._mark(track, frame)

    def _sync_from_viewer(self, _event=None) -> None:
        """Mark the node of the selected label in the current frame (or the track's
        nearest cell)."""
        tracks = self._tracks.value
        if not isinstance(tracks, Tracks) or not self._cells:
            self.mark.setData([], [])
            return
        frame = round(float(tracks.world_to_data(self._viewer.dims.point)[0]))
        self.now.setValue(frame)
        labels = self._labels.value
        track = int(labels.selected_label) if isinstance(labels, Labels) else None
        if track not in self.spans:
            self.selected = None
            self.mark.setData([], [])
            return
        first, last = self.spans[track]
        frame = min(max(frame, first), last)
        self.selected = (track, frame)
        self._mark(track, frame)

    def _mark(self, track: int, frame: int) -> None:
        self.mark.setData([frame], [self.rows[track]])
