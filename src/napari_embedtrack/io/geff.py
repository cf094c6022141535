"""The tracking graph as a GEFF store (https://liveimagetrackingtools.org/geff), beside the CTC
results folder (:func:`napari_embedtrack.io.ctc.write_results`).

Qt-free; imports the optional ``geff`` package lazily (``pip install
napari-embedtrack[geff]``).

Layout of a store written by :func:`write_geff` (zarr format 2)::

    movie.geff/               zarr group (attrs: {"embedtrack": {...}})
      tracks/                 the GEFF graph (attrs: {"geff": metadata}), nodes/ and edges/
      labels                  (T, Y, X) uint16 masks, one chunk per frame, label = track id

The masks are a GEFF *related object* of the graph (``{"type": "labels", "path":
"../labels", "node_prop": "seg_id"}``): node property ``seg_id`` is the node's label value in
its frame of ``labels``. The graph has one node per cell per frame (a track id present in a
frame), an edge from each node to the same track's node in the next frame, and an edge from
a parent track's last node to each daughter track's first node. Labels and lineage are made
consistent first (:func:`napari_embedtrack.io.tracks.consistent_tracks`), exactly as the CTC
writer does, so a time gap inside a track becomes a new track whose parent is the piece
before the gap (a parent with one child).

Node properties (always): ``t`` (frame), ``y``, ``x`` (pixel centroid), ``track_id`` (CTC
track id = label value), ``seg_id`` (= ``track_id``), ``lineage_id`` (track id of the oldest
ancestor), ``area`` (pixels). Edge properties (always): ``division`` (True for a parent ->
daughter link of a parent with two or more daughters, False for links of one cell over time).
Extra per-node / per-edge properties are passed as ``node_props`` / ``edge_props``, aligned
with :func:`tracking_graph`'s node and edge order; :func:`values_per_node` aligns values
given per (track id, frame), e.g. a Tracks layer's properties.

Confidence (issue #17, :mod:`napari_embedtrack.engine.confidence`): :func:`confidence_props`
makes node property ``confidence`` (the cell's confidence, the lower of its own and that of
the link to its predecessor) and edge property ``confidence`` (the link's: an edge's target
cell's link confidence; for a division edge the lower of that and the division's). The
napari writer writes them when the Tracks layer has ``confidence`` (and
``link_confidence``) properties, as the review widget sets them.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import __version__
from . import ctc
from .tracks import MAX_LABEL, _label_centroids, consistent_tracks

log = logging.getLogger(__name__)

GRAPH_GROUP = "tracks"  # the GEFF group inside the store
LABELS_ARRAY = "labels"  # the masks, sibling of the GEFF group
NODE_PROPS = ("t", "y", "x", "track_id", "seg_id", "lineage_id", "area")
EDGE_PROPS = ("division",)
INSTALL_HINT = "pip install napari-embedtrack[geff]"

PathLike = str | os.PathLike


class GeffFormatError(ValueError):
    """A path that is not a GEFF store, or a GEFF graph that is not a cell tracking (one-line
    message naming the path)."""


class TrackingGraph(NamedTuple):
    """Masks, lineage and the graph tables of a tracking result.

    ``labels``: ``(T, Y, X)`` uint16 (label = track id) or None (a GEFF store without masks);
    ``lineage``: ``(N, 4)`` int64 ``[id, start, end, parent]``; ``nodes``: dict of 1-D arrays
    (``node_id`` + node properties, one entry per node; a property with missing values is a
    ``numpy.ma.MaskedArray``); ``edges``: dict of arrays (``source``, ``target`` node ids +
    edge properties, one entry per edge).
    """

    labels: np.ndarray | None
    lineage: np.ndarray
    nodes: dict[str, np.ndarray]
    edges: dict[str, np.ndarray]


def _geff():
    try:
        import geff
        import geff.core_io
        import zarr
    except ImportError as e:
        raise ImportError(
            f"GEFF import/export needs the 'geff' package ({e.name} is missing): {INSTALL_HINT}"
        ) from None
    return geff, zarr


# --------------------------------------------------------------------------------------------
# masks + lineage -> graph
# --------------------------------------------------------------------------------------------


def tracking_graph(labels: np.ndarray, lineage: np.ndarray | None = None) -> TrackingGraph:
    """The graph :func:`write_geff` writes, without writing it.

    Nodes are ordered by frame, then by label value in the given ``labels`` (the order of
    ``numpy.unique(labels[t])``), so per-cell values computed frame by frame line up with
    ``nodes``; node ids are ``0 .. N-1`` in that order. Edges are sorted by (source, target).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(T, Y, X)`` or ``(Y, X)`` integer labels, label = track id (<= 65535).
    lineage : numpy.ndarray, optional
        ``(N, 4)`` ``[id, start, end, parent]``; None: every label is a track without parent.

    Returns
    -------
    TrackingGraph
        ``labels`` / ``lineage`` after :func:`consistent_tracks`; ``nodes`` with
        ``node_id`` and :data:`NODE_PROPS`; ``edges`` with ``source``, ``target`` and
        ``division``.
    """
    out, lin = consistent_tracks(labels, lineage)
    given = np.asarray(labels)
    if given.ndim == 2:
        given = given[None]
    relabelled = not np.array_equal(out, given)
    rows = []  # t, y, x, track_id, area
    for t in range(out.shape[0]):
        ids, cents, areas = _label_centroids(out[t])
        if not ids.size:
            continue
        order = np.arange(ids.size)
        if relabelled:  # order by the given label value (split pieces got new ids)
            fg = out[t] > 0
            key = np.unique(given[t][fg].astype(np.int64) * (MAX_LABEL + 1) + out[t][fg])
            new_ids = key % (MAX_LABEL + 1)  # sorted by the given value
            order = np.searchsorted(ids, new_ids)
        rows.append(np.column_stack([np.full(ids.size, t), cents[order], ids[order], areas[order]]))
    table = np.concatenate(rows) if rows else np.zeros((0, 5))
    n = len(table)
    t_col = table[:, 0].astype(np.int64)
    track = table[:, 3].astype(np.int64)
    parent_of = {int(i): int(p) for i, _s, _e, p in lin.tolist()}
    root: dict[int, int] = {}
    for tid in parent_of:
        chain = [tid]
        while parent_of.get(chain[-1], 0) and chain[-1] not in root and len(chain) <= len(lin):
            chain.append(parent_of[chain[-1]])
        top = root.get(chain[-1], chain[-1])
        for node in chain:
            root.setdefault(node, top)
    nodes = {
        "node_id": np.arange(n, dtype=np.uint64),
        "t": t_col,
        "y": table[:, 1].astype(np.float64),
        "x": table[:, 2].astype(np.float64),
        "track_id": track,
        "seg_id": track.copy(),
        "lineage_id": np.array([root[i] for i in track.tolist()], np.int64),
        "area": table[:, 4].astype(np.int64),
    }

    # edges: consecutive nodes of a track (contiguous after consistent_tracks) + parent links
    by_track = np.lexsort((t_col, track))
    same = track[by_track][1:] == track[by_track][:-1]
    src = [by_track[:-1][same]]
    dst = [by_track[1:][same]]
    div = [np.zeros(int(same.sum()), bool)]
    if n:
        starts = np.r_[True, ~same]
        ends = np.r_[~same, True]
        first = dict(zip(track[by_track][starts].tolist(), by_track[starts].tolist(), strict=True))
        last = dict(zip(track[by_track][ends].tolist(), by_track[ends].tolist(), strict=True))
        children = lin[lin[:, 3] > 0]
        n_children = dict(zip(*np.unique(children[:, 3], return_counts=True), strict=True))
        src.append(np.array([last[p] for p in children[:, 3].tolist()], np.int64))
        dst.append(np.array([first[c] for c in children[:, 0].tolist()], np.int64))
        div.append(np.array([n_children[p] >= 2 for p in children[:, 3].tolist()], bool))
    src_a, dst_a, div_a = (np.concatenate(a) for a in (src, dst, div))
    order = np.lexsort((dst_a, src_a))
    edges = {
        "source": src_a[order].astype(np.uint64),
        "target": dst_a[order].astype(np.uint64),
        "division": div_a[order],
    }
    return TrackingGraph(out, lin, nodes, edges)


def values_per_node(
    labels: np.ndarray, track_ids, frames, values, graph: TrackingGraph | None = None
) -> np.ma.MaskedArray:
    """Values given per (track id, frame) of ``labels`` -> one per node of
    ``tracking_graph(labels, ...)``, masked where none was given (NaN counts as none).

    Nodes are matched by frame and the label value in the given ``labels`` (a time gap split
    by :func:`consistent_tracks` keeps its nodes' given label), so values computed on
    the labels as they are line up with the graph written from them.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None]
    key_of = MAX_LABEL + 1
    node_keys = [
        t * key_of + np.unique(frame[frame > 0]).astype(np.int64) for t, frame in enumerate(labels)
    ]
    node_key = np.concatenate([np.zeros(0, np.int64), *node_keys])
    if graph is not None and len(graph.nodes["node_id"]) != node_key.size:
        raise ValueError(
            f"labels have {node_key.size} cells but the graph {len(graph.nodes['node_id'])} "
            "nodes; expected the labels the graph was made from"
        )
    values = np.asarray(values, np.float64).ravel()
    key = np.asarray(frames, np.int64).ravel() * key_of + np.asarray(track_ids, np.int64).ravel()
    if key.size != values.size:
        raise ValueError(f"{key.size} (track id, frame) pairs but {values.size} values")
    out = np.full(node_key.size, np.nan)
    if key.size and node_key.size:
        order = np.argsort(key, kind="stable")
        pos = np.searchsorted(key, node_key, sorter=order).clip(0, key.size - 1)
        hit = key[order[pos]] == node_key
        out[hit] = values[order[pos[hit]]]
    return np.ma.masked_invalid(out)


def confidence_props(
    graph: TrackingGraph, node_confidence, link_confidence=None, division_confidence=None
) -> tuple[dict[str, np.ma.MaskedArray], dict[str, np.ma.MaskedArray]]:
    """Node and edge property ``confidence`` for :func:`write_geff`.

    Args:
        graph: :func:`tracking_graph` of the result.
        node_confidence: one value per node (NaN / masked: unknown).
        link_confidence: per node, the confidence of the link into it (the edge whose target
            it is); None: no edge property.
        division_confidence: ``{parent track id: confidence}`` (in the graph's track ids);
            a division edge gets the lower of its link's and its division's confidence.

    Returns:
        ``({"confidence": per node}, {"confidence": per edge})`` (the edge dict empty
        without ``link_confidence``).
    """
    n = len(graph.nodes["node_id"])
    node = np.ma.masked_invalid(np.ma.filled(np.ma.asarray(node_confidence, float), np.nan))
    if node.shape != (n,):
        raise ValueError(f"node_confidence: shape {node.shape}; expected one value per node ({n})")
    if link_confidence is None:
        return {"confidence": node}, {}
    link = np.ma.filled(np.ma.asarray(link_confidence, float), np.nan)
    if link.shape != (n,):
        raise ValueError(f"link_confidence: shape {link.shape}; expected one value per node ({n})")
    src = graph.edges["source"].astype(np.int64)
    dst = graph.edges["target"].astype(np.int64)
    edge = link[dst].copy()
    if division_confidence:
        div = np.asarray(graph.edges["division"], bool)
        parent = graph.nodes["track_id"][src]
        for k in np.flatnonzero(div).tolist():
            c = division_confidence.get(int(parent[k]))
            if c is not None:
                edge[k] = np.nanmin([edge[k], c])
    return {"confidence": node}, {"confidence": np.ma.masked_invalid(edge)}


def props_from_tracks(
    labels: np.ndarray, lineage: np.ndarray | None, data, properties
) -> tuple[dict | None, dict | None]:
    """GEFF ``confidence`` properties from a napari Tracks layer's data (rows ``[track_id,
    t, y, x]``) and its ``confidence`` / ``link_confidence`` properties (one per row);
    ``(None, None)`` when it has no ``confidence``."""
    properties = properties or {}
    if "confidence" not in properties or data is None or not len(data):
        return None, None
    data = np.asarray(data)
    graph = tracking_graph(labels, lineage)
    ids, ts = data[:, 0], data[:, 1]
    node = values_per_node(labels, ids, ts, properties["confidence"], graph)
    link = None
    if "link_confidence" in properties:
        link = values_per_node(labels, ids, ts, properties["link_confidence"], graph)
    return confidence_props(graph, node, link)


def _extra_props(props, n: int, builtin: tuple[str, ...], what: str) -> dict[str, dict]:
    """Validate user properties; -> geff's ``{name: {"values", "missing"}}``."""
    if props is None:
        return {}
    if not isinstance(props, dict):
        raise ValueError(f"{what}: {type(props).__name__}; expected a dict name -> array")
    out = {}
    unit = "node" if what == "node_props" else "edge"
    for name, values in props.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ValueError(f"{what}: property name {name!r}; expected a non-empty name, no '/'")
        if name in builtin:
            raise ValueError(f"{what}: {name!r} is written by embedtrack; choose another name")
        missing = None
        if np.ma.isMaskedArray(values):
            missing = np.ma.getmaskarray(values)
            values = np.ma.getdata(values)
        values = np.asarray(values)
        if values.ndim == 0 or values.shape[0] != n:
            raise ValueError(
                f"{what}[{name!r}]: shape {values.shape}; expected one value per {unit} ({n}) "
                f"in the order of tracking_graph()"
            )
        if values.dtype == object:
            raise ValueError(f"{what}[{name!r}]: object array; expected numbers, bools or str")
        if missing is not None:
            missing = missing.reshape(n, -1).any(axis=1)
            if not missing.any():
                missing = None
        out[name] = {"values": values, "missing": missing}
    return out


# --------------------------------------------------------------------------------------------
# finding a store
# --------------------------------------------------------------------------------------------


def _zarr_attrs(folder: Path) -> dict:
    """Attributes of a zarr group folder (format 2 or 3) or {} (never raises)."""
    try:
        if (folder / ".zattrs").is_file():
            return json.loads((folder / ".zattrs").read_text())
        if (folder / "zarr.json").is_file():
            meta = json.loads((folder / "zarr.json").read_text())
            return meta.get("attributes") or {} if meta.get("node_type") == "group" else {}
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def find_geff_group(path: PathLike) -> Path | None:
    """The GEFF group of a store: ``path`` itself if it holds GEFF metadata, else its one
    child group that does (:data:`GRAPH_GROUP` if several). None if neither; never raises,
    needs no ``geff`` package (used by the napari reader to claim paths)."""
    p = Path(path)
    if not p.is_dir():
        return None
    if "geff" in _zarr_attrs(p):
        return p
    try:
        children = sorted(c for c in p.iterdir() if c.is_dir() and "geff" in _zarr_attrs(c))
    except OSError:
        return None
    if len(children) == 1:
        return children[0]
    return p / GRAPH_GROUP if p / GRAPH_GROUP in children else None


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_geff(
    path: PathLike,
    labels: np.ndarray,
    lineage: np.ndarray | None = None,
    *,
    node_props: dict[str, Any] | None = None,
    edge_props: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> TrackingGraph:
    """Write a tracking result (masks + lineage) as a GEFF store (see the module docstring).

    The store is written to a temporary sibling folder and renamed into place at the end.

    Parameters
    ----------
    path : path
        The store folder, e.g. ``movie.geff``. Must not exist or be empty unless
        ``overwrite``; an existing folder that is not a GEFF store is never replaced.
    labels : numpy.ndarray
        ``(T, Y, X)`` or ``(Y, X)`` integer labels, label = track id (<= 65535).
    lineage : numpy.ndarray, optional
        ``(N, 4)`` ``[id, start, end, parent]``; None: every label is a track without parent.
    node_props, edge_props : dict[str, array], optional
        Extra properties, one value (or row of values) per node / edge in the order of
        :func:`tracking_graph` (nodes: by frame, then given label value; edges: by source,
        target). A ``numpy.ma.MaskedArray`` marks missing values. Names must differ from
        :data:`NODE_PROPS` / :data:`EDGE_PROPS`.
    overwrite : bool
        Replace an existing GEFF store.

    Returns
    -------
    TrackingGraph
        What was written (masks and lineage after :func:`consistent_tracks`).

    Raises
    ------
    FileExistsError
        ``path`` is a file, a non-empty folder that is not a GEFF store, or a GEFF store and
        ``overwrite`` is False.
    ValueError
        Bad ``labels`` / ``lineage`` / properties.
    ImportError
        The ``geff`` package is not installed.
    """
    geff, zarr = _geff()
    from geff_spec import Axis, DisplayHint, GeffMetadata, RelatedObject

    target = Path(path)
    graph = tracking_graph(labels, lineage)
    n_nodes, n_edges = len(graph.nodes["node_id"]), len(graph.edges["source"])
    extra_nodes = _extra_props(node_props, n_nodes, (*NODE_PROPS, "node_id"), "node_props")
    extra_edges = _extra_props(edge_props, n_edges, (*EDGE_PROPS, "source", "target"), "edge_props")
    if target.is_dir() and any(target.iterdir()) and find_geff_group(target) is None:
        raise FileExistsError(f"{target}: exists and is not a GEFF store; choose a new folder")

    lin = graph.lineage
    single = np.unique(lin[lin[:, 3] > 0, 3], return_counts=True)[1]
    track_props = {"lineage": "lineage_id"}
    if not np.any(single == 1):  # track ids are GEFF tracklets (maximal simple paths)
        track_props["tracklet"] = "track_id"
    metadata = GeffMetadata(
        directed=True,
        axes=[
            Axis(name="t", type="time", unit="frame"),
            Axis(name="y", type="space", unit="pixel"),
            Axis(name="x", type="space", unit="pixel"),
        ],
        node_props_metadata={},
        edge_props_metadata={},
        track_node_props=track_props,
        related_objects=[
            RelatedObject(type="labels", path=f"../{LABELS_ARRAY}", node_prop="seg_id")
        ],
        display_hints=DisplayHint(display_horizontal="x", display_vertical="y", display_time="t"),
        extra={"embedtrack": {"version": __version__, "labels": f"../{LABELS_ARRAY}"}},
    )
    nodes = {k: {"values": v, "missing": None} for k, v in graph.nodes.items() if k != "node_id"}
    edges = {"division": {"values": graph.edges["division"], "missing": None}}
    edge_ids = np.stack([graph.edges["source"], graph.edges["target"]], axis=1).reshape(-1, 2)
    with ctc._atomic_folder(target, overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        root.attrs["embedtrack"] = {"graph": GRAPH_GROUP, "labels": LABELS_ARRAY}
        t, y, x = graph.labels.shape
        arr = root.create_array(
            LABELS_ARRAY, shape=(t, y, x), dtype="uint16", chunks=(1, max(y, 1), max(x, 1))
        )
        arr[:] = graph.labels
        arr.attrs["_ARRAY_DIMENSIONS"] = ["t", "y", "x"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # geff: "Property ... not present"
            geff.core_io.write_arrays(
                str(tmp / GRAPH_GROUP),
                graph.nodes["node_id"],
                {**nodes, **extra_nodes},
                edge_ids.astype(np.uint64),
                {**edges, **extra_edges},
                metadata,
                zarr_format=2,
            )
    log.info("wrote %s nodes, %s edges, %s tracks to %s", n_nodes, n_edges, len(lin), target)
    return graph


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _prop_array(d: dict) -> np.ndarray:
    values, missing = np.asarray(d["values"]), d.get("missing")
    if missing is None or not np.any(missing):
        return values
    mask = np.asarray(missing, bool).reshape((-1,) + (1,) * (values.ndim - 1))
    return np.ma.masked_array(values, mask=np.broadcast_to(mask, values.shape))


def _tracklets(n: int, t: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Track ids 1.. for maximal simple paths (GEFF tracklets)."""
    in_deg = np.bincount(dst, minlength=n)
    out_deg = np.bincount(src, minlength=n)
    pred = np.full(n, -1)
    pred[dst] = src
    track = np.zeros(n, np.int64)
    next_id = 1
    for i in np.argsort(t, kind="stable").tolist():
        p = pred[i]
        if in_deg[i] == 1 and out_deg[p] == 1:
            track[i] = track[p]
        else:
            track[i] = next_id
            next_id += 1
    return track


def _related_labels(group: Path, meta, zarr) -> tuple[np.ndarray, str] | None:
    related = [o for o in meta.related_objects or [] if o.type == "labels"]
    if not related:
        return None
    obj = related[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        prop = obj.node_prop or obj.label_prop or "seg_id"
    where = os.path.normpath(group / obj.path)
    try:
        seg = np.asarray(zarr.open_array(where, mode="r")[...])
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GeffFormatError(f"{group}: labels {obj.path!r} cannot be read ({msg})") from None
    if seg.ndim > 3:  # (T, C, Z, Y, X) with singleton C / Z
        if any(s != 1 for s in seg.shape[1:-2]):
            raise GeffFormatError(
                f"{group}: labels of shape {seg.shape}; expected 2D + t (T, Y, X)"
            )
        seg = seg.reshape(seg.shape[0], *seg.shape[-2:])
    if seg.ndim == 2:
        seg = seg[None]
    if seg.ndim != 3 or seg.dtype.kind not in "ui":
        raise GeffFormatError(
            f"{group}: labels {seg.dtype} {seg.shape}; expected integer (T, Y, X)"
        )
    return seg, prop


def read_geff(path: PathLike) -> TrackingGraph:
    """Read a GEFF store (ours or another tool's 2D + t cell tracking graph).

    ``path`` is the store (e.g. ``movie.geff``) or its GEFF group. Track ids come from node
    property ``track_id``, else the store's tracklet property, else from the graph (maximal
    simple paths). The lineage's parent links are the edges between tracks. Masks are read
    from a related object of type ``labels`` (relabelled to track ids if its ``node_prop``
    differs from them); None if the store has none.

    Returns
    -------
    TrackingGraph
        ``labels`` (``(T, Y, X)``, label = track id) or None, ``lineage`` ``(N, 4)`` int64
        sorted by id, ``nodes`` (``node_id``, every node property, ``track_id``) and
        ``edges`` (``source``, ``target``, every edge property).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    GeffFormatError
        Not a GEFF store, not 2D + t, or a graph that is no cell lineage (merges, edges
        backwards in time, two nodes of a track in one frame).
    ImportError
        The ``geff`` package is not installed.
    """
    geff, zarr = _geff()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder; expected a GEFF store")
    group = find_geff_group(p)
    if group is None:
        raise GeffFormatError(f"{p}: not a GEFF store (no zarr group with GEFF metadata)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mem = geff.core_io.read_to_memory(str(group))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GeffFormatError(f"{group}: not a valid GEFF store ({msg})") from None
    meta = mem["metadata"]
    node_ids = np.asarray(mem["node_ids"])
    n = len(node_ids)
    props = {k: _prop_array(d) for k, d in mem["node_props"].items()}
    eprops = {k: _prop_array(d) for k, d in mem["edge_props"].items()}
    edge_ids = np.asarray(mem["edge_ids"]).reshape(-1, 2)

    axes = meta.axes or []
    time = [a.name for a in axes if a.type == "time" or (a.type is None and a.name == "t")]
    space = [a.name for a in axes if a.type == "space" or (a.type is None and a.name in ("y", "x"))]
    if len(time) != 1 or len(space) != 2:
        names = [a.name for a in axes]
        raise GeffFormatError(f"{group}: axes {names}; expected one time and two space axes")
    t = np.asarray(props[time[0]], dtype=np.float64)
    if not np.all(t == np.round(t)) or (n and t.min() < 0):
        raise GeffFormatError(f"{group}: time '{time[0]}' must be frame indices (integers >= 0)")
    t = t.astype(np.int64)

    sorter = np.argsort(node_ids, kind="stable")
    pos = np.searchsorted(node_ids, edge_ids, sorter=sorter).clip(0, max(n - 1, 0))
    idx = sorter[pos] if n else pos
    if edge_ids.size and not np.array_equal(node_ids[idx], edge_ids):
        raise GeffFormatError(f"{group}: edges refer to node ids that are not in the graph")
    src, dst = (idx[:, 0], idx[:, 1]) if edge_ids.size else (np.zeros(0, int), np.zeros(0, int))
    if np.any(t[src] >= t[dst]):
        raise GeffFormatError(
            f"{group}: an edge goes backwards or stays in time; expected t -> t+k"
        )

    tracklet = (meta.track_node_props or {}).get("tracklet")
    if "track_id" in props:
        track = np.asarray(props["track_id"]).astype(np.int64)
    elif tracklet in props:
        track = np.asarray(props[tracklet]).astype(np.int64)
        track = track - track.min() + 1 if n and track.min() < 1 else track
    else:
        track = _tracklets(n, t, src, dst)
    props["track_id"] = track

    lineage = np.zeros((0, 4), np.int64)
    if n:
        ids, inverse = np.unique(track, return_inverse=True)
        if np.unique(track * (int(t.max()) + 1) + t).size != n:
            raise GeffFormatError(f"{group}: a track has two nodes in one frame (not a lineage)")
        start = np.full(ids.size, np.iinfo(np.int64).max)
        end = np.full(ids.size, -1)
        np.minimum.at(start, inverse, t)
        np.maximum.at(end, inverse, t)
        parent = np.zeros(ids.size, np.int64)
        cross = track[src] != track[dst]
        for s, d in zip(src[cross].tolist(), dst[cross].tolist(), strict=True):
            k = inverse[d]
            if parent[k] and parent[k] != track[s]:
                raise GeffFormatError(
                    f"{group}: track {track[d]} has two parents ({parent[k]}, {track[s]}); "
                    f"merges are no cell lineage"
                )
            parent[k] = track[s]
        lineage = np.stack([ids, start, end, parent], axis=1).astype(np.int64)

    labels = None
    found = _related_labels(group, meta, zarr)
    if found is not None:
        seg, prop = found
        if n and t.max() >= seg.shape[0]:
            raise GeffFormatError(
                f"{group}: nodes up to frame {t.max()} but the labels have {seg.shape[0]} frames"
            )
        if prop not in props:
            raise GeffFormatError(f"{group}: labels refer to node property {prop!r}; not found")
        seg_id = np.asarray(props[prop]).astype(np.int64)
        if np.array_equal(seg_id, track):
            labels = seg
        else:  # relabel each frame: segment id -> track id (other segments -> 0)
            dtype = np.uint16 if (not n or track.max() <= MAX_LABEL) else np.int64
            labels = np.zeros(seg.shape, dtype)
            for f in range(seg.shape[0]):
                here = t == f
                values, inv = np.unique(seg[f], return_inverse=True)
                lut = dict(zip(seg_id[here].tolist(), track[here].tolist(), strict=True))
                mapped = np.array([lut.get(v, 0) for v in values.tolist()], dtype)
                labels[f] = mapped[inv.reshape(seg[f].shape)]

    nodes = {"node_id": node_ids, **props}
    edges = {"source": edge_ids[:, 0], "target": edge_ids[:, 1], **eprops}
    return TrackingGraph(labels, lineage, nodes, edges)
