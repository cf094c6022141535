"""GEFF export / import of the tracking graph (napari_embedtrack.io.geff)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_embedtrack.io import ctc
from napari_embedtrack.io.geff import (
    GeffFormatError,
    find_geff_group,
    read_geff,
    tracking_graph,
    write_geff,
)
from napari_embedtrack.io.tracks import consistent_tracks, lineage_to_tracks
from napari_embedtrack.synthetic import make_movie

geff = pytest.importorskip("geff")

SIM_GT = Path(__file__).resolve().parents[2] / "src/napari_embedtrack/data/sim_clip/01_GT"


def _pairs(labels):
    """All (track id, frame) pairs present in a label movie."""
    return {(int(i), t) for t, frame in enumerate(labels) for i in np.unique(frame) if i}


def _check_round_trip(tmp_path, labels, lineage):
    """CTC and GEFF written from the same result read back equal; the graph's structure."""
    res_labels, res_lineage = ctc.write_results(tmp_path / "01_RES", labels, lineage)
    written = write_geff(tmp_path / "01.geff", labels, lineage)
    ctc_labels, ctc_lineage = ctc.read_results(tmp_path / "01_RES")
    back = read_geff(tmp_path / "01.geff")

    np.testing.assert_array_equal(back.labels, ctc_labels)
    np.testing.assert_array_equal(back.lineage, ctc_lineage)
    want_labels, want_lineage = consistent_tracks(labels, lineage)
    np.testing.assert_array_equal(back.labels, want_labels)
    np.testing.assert_array_equal(back.lineage, want_lineage)
    np.testing.assert_array_equal(res_lineage, want_lineage)
    np.testing.assert_array_equal(res_labels, want_labels)

    nodes, edges = back.nodes, back.edges
    node_of = {
        (int(i), int(t)): int(n)
        for n, i, t in zip(nodes["node_id"], nodes["track_id"], nodes["t"], strict=True)
    }
    assert set(node_of) == _pairs(want_labels)  # one node per (track, frame)
    assert len(nodes["node_id"]) == len(_pairs(want_labels))
    assert np.array_equal(nodes["seg_id"], nodes["track_id"])
    # edges: consecutive frames of each track + parent's last node -> child's first node
    pairs = {(int(s), int(d)) for s, d in zip(edges["source"], edges["target"], strict=True)}
    within = {
        (node_of[(i, t)], node_of[(i, t + 1)]) for i, s, e, _p in want_lineage for t in range(s, e)
    }
    links = {(node_of[(p, e_p)], node_of[(i, s)])
             for i, s, _e, p in want_lineage if p
             for e_p in [int(want_lineage[want_lineage[:, 0] == p][0, 2])]}  # fmt: skip
    assert pairs == within | links and len(pairs) == len(edges["source"])
    n_daughters = dict(zip(*np.unique(want_lineage[:, 3], return_counts=True), strict=True))
    division = {
        (int(s), int(d))
        for s, d, v in zip(edges["source"], edges["target"], edges["division"], strict=True)
        if v
    }
    assert division == {
        (node_of[(p, int(want_lineage[want_lineage[:, 0] == p][0, 2]))], node_of[(i, s)])
        for i, s, _e, p in want_lineage
        if p and n_daughters[p] >= 2
    }
    # written == read; centroids and areas of the masks
    for key in ("t", "y", "x", "track_id", "area", "lineage_id"):
        np.testing.assert_array_equal(back.nodes[key], written.nodes[key])
    data, _graph, props = lineage_to_tracks(want_labels, want_lineage)
    order = np.lexsort((nodes["t"], nodes["track_id"]))
    np.testing.assert_allclose(data[:, 2], nodes["y"][order])
    np.testing.assert_allclose(data[:, 3], nodes["x"][order])
    np.testing.assert_array_equal(props["area"], nodes["area"][order])
    np.testing.assert_array_equal(props["root"], nodes["lineage_id"][order])
    # a valid GEFF that the geff package itself reads (networkx backend)
    geff.validate_structure(str(tmp_path / "01.geff" / "tracks"))
    graph, meta = geff.read(str(tmp_path / "01.geff" / "tracks"))
    assert graph.number_of_nodes() == len(node_of) and graph.number_of_edges() == len(pairs)
    assert meta.related_objects[0].type == "labels"
    assert meta.related_objects[0].node_prop == "seg_id"
    return back, meta


def test_round_trip_synthetic_movie_equals_ctc(tmp_path, synthetic_movie):
    back, meta = _check_round_trip(tmp_path, synthetic_movie.labels, synthetic_movie.lineage)
    assert back.edges["division"].sum() >= 2  # the movie has divisions
    assert meta.track_node_props == {"lineage": "lineage_id", "tracklet": "track_id"}


def test_round_trip_real_ground_truth_equals_ctc(tmp_path):
    """The bundled Fluo-N2DH-SIM+ clip's tracking ground truth (8 daughters of 4 parents)."""
    gt = ctc.read_ground_truth(SIM_GT)
    back, _ = _check_round_trip(tmp_path, gt.tra, gt.lineage)
    assert back.edges["division"].sum() == int((gt.lineage[:, 3] > 0).sum()) == 8


def test_time_gap_becomes_a_linked_track(tmp_path):
    movie = make_movie(n_frames=6, shape=(64, 64), n_cells=3, seed=1, radius=(5.0, 7.0))
    labels = movie.labels.copy()
    lin = movie.lineage
    gone = int(lin[(lin[:, 1] <= 1) & (lin[:, 2] >= 3), 0][0])
    labels[2][labels[2] == gone] = 0  # track `gone` missing in frame 2 only
    assert (labels[1] == gone).any() and (labels[3] == gone).any()
    back, meta = _check_round_trip(tmp_path, labels, movie.lineage)
    piece = back.lineage[back.lineage[:, 3] == gone]
    assert len(piece) == 1 and piece[0, 1] == 3  # the piece after the gap, parent = `gone`
    gap = back.edges["division"][
        np.isin(back.edges["target"], back.nodes["node_id"][back.nodes["track_id"] == piece[0, 0]])
    ]
    assert gap.tolist() == [False]  # one cell lost for a frame, not a division
    assert "tracklet" not in meta.track_node_props  # a one-child link: ids are no tracklets


def test_extra_node_and_edge_properties_round_trip(tmp_path, small_movie):
    graph = tracking_graph(small_movie.labels, small_movie.lineage)
    n, m = len(graph.nodes["node_id"]), len(graph.edges["source"])
    # nodes are in the order of np.unique per frame: a per-cell score computed frame by frame
    per_frame = [u[u > 0] for u in map(np.unique, small_movie.labels)]
    np.testing.assert_array_equal(graph.nodes["track_id"], np.concatenate(per_frame))
    score = np.linspace(0.0, 1.0, n)
    partial = np.ma.masked_array(np.arange(n, dtype=np.float32), mask=np.arange(n) % 3 == 0)
    vector = np.arange(2 * n, dtype=np.int32).reshape(n, 2)
    link = np.linspace(1.0, 0.5, m)
    write_geff(
        tmp_path / "s.geff",
        small_movie.labels,
        small_movie.lineage,
        node_props={"seg_confidence": score, "partial": partial, "vector": vector},
        edge_props={"link_confidence": link},
    )
    back = read_geff(tmp_path / "s.geff")
    np.testing.assert_array_equal(back.nodes["seg_confidence"], score)
    np.testing.assert_array_equal(back.nodes["vector"], vector)
    assert back.nodes["partial"].dtype == np.float32
    np.testing.assert_array_equal(np.ma.getmaskarray(back.nodes["partial"]), partial.mask)
    np.testing.assert_array_equal(back.nodes["partial"].compressed(), partial.compressed())
    np.testing.assert_array_equal(back.edges["link_confidence"], link)
    np.testing.assert_array_equal(back.edges["source"], graph.edges["source"])


def test_foreign_geff_tracklets_and_relabelled_masks(tmp_path, small_movie):
    """A GEFF from another tool: no track_id, segment ids != track ids, masks elsewhere."""
    import zarr
    from geff.core_io import write_arrays
    from geff_spec import Axis, GeffMetadata, RelatedObject

    graph = tracking_graph(small_movie.labels, small_movie.lineage)
    nodes, edges = graph.nodes, graph.edges
    seg_id = nodes["track_id"] * 10 + 3  # other segment ids
    seg = np.zeros(graph.labels.shape, np.uint32)
    for i, t in zip(nodes["track_id"], nodes["t"], strict=True):
        seg[t][graph.labels[t] == i] = i * 10 + 3
    root = tmp_path / "other.zarr"
    zarr.open_array(str(root / "masks"), mode="w", shape=seg.shape, dtype=seg.dtype)[:] = seg
    ids = nodes["node_id"] + 100  # other node ids
    meta = GeffMetadata(
        directed=True,
        axes=[Axis(name="t", type="time"), Axis(name="y", type="space"), Axis(name="x")],
        node_props_metadata={},
        edge_props_metadata={},
        related_objects=[RelatedObject(type="labels", path="../masks", node_prop="label")],
    )
    props = {k: {"values": nodes[k], "missing": None} for k in ("t", "y", "x")}
    props["label"] = {"values": seg_id, "missing": None}
    pairs = np.stack([edges["source"], edges["target"]], axis=1) + 100
    write_arrays(str(root / "graph"), ids, props, pairs.astype(ids.dtype), {}, meta)

    assert find_geff_group(root) == root / "graph"
    back = read_geff(root)
    relabel = consistent_tracks(back.labels, back.lineage)
    np.testing.assert_array_equal(relabel[1], back.lineage)  # masks agree with the lineage
    # same tracks and divisions up to the track ids
    mapping = dict(zip(back.nodes["track_id"].tolist(), nodes["track_id"].tolist(), strict=True))
    assert len(set(mapping.values())) == len(mapping)
    lut = np.zeros(max(mapping) + 1, np.int64)
    lut[list(mapping)] = list(mapping.values())
    np.testing.assert_array_equal(lut[back.labels], graph.labels)
    got = {(mapping[c], mapping[p]) for c, _s, _e, p in back.lineage.tolist() if p}
    want = {(c, p) for c, _s, _e, p in graph.lineage.tolist() if p}
    assert got == want


def test_bad_paths_and_arguments_give_one_line_errors(tmp_path, small_movie):
    labels, lineage = small_movie.labels, small_movie.lineage
    out = tmp_path / "a.geff"
    write_geff(out, labels, lineage)
    errors = []
    with pytest.raises(FileExistsError, match="overwrite=True") as e:
        write_geff(out, labels, lineage)
    errors.append(e)
    write_geff(out, labels[:3], None, overwrite=True)  # replaced as a whole
    assert read_geff(out).labels.shape[0] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a GEFF store") as e:
        write_geff(other, labels, lineage, overwrite=True)
    errors.append(e)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="not a folder") as e:
        write_geff(other / "keep.txt", labels, lineage, overwrite=True)
    errors.append(e)
    for props, match in [
        ({"area": np.zeros(3)}, "written by embedtrack"),
        ({"score": np.zeros(3)}, "one value per node"),
        ({"a/b": np.zeros(3)}, "no '/'"),
    ]:
        with pytest.raises(ValueError, match=match) as e:
            write_geff(tmp_path / "b.geff", labels, lineage, node_props=props)
        errors.append(e)
    with pytest.raises(ValueError, match="one value per edge") as e:
        write_geff(tmp_path / "b.geff", labels, lineage, edge_props={"s": np.zeros(1)})
    errors.append(e)
    with pytest.raises(ValueError, match="expected integer labels") as e:
        write_geff(tmp_path / "b.geff", labels.astype(float), lineage)
    errors.append(e)
    assert not (tmp_path / "b.geff").exists()
    with pytest.raises(FileNotFoundError, match="no such file") as e:
        read_geff(tmp_path / "missing.geff")
    errors.append(e)
    for path in (other, other / "keep.txt"):
        with pytest.raises(GeffFormatError, match="not a GEFF store") as e:
            read_geff(path)
        errors.append(e)
    (out / "tracks" / "nodes" / "ids" / ".zarray").unlink()  # a broken store
    with pytest.raises(GeffFormatError, match="not a valid GEFF store") as e:
        read_geff(out)
    errors.append(e)
    for e in errors:
        assert "\n" not in str(e.value), str(e.value)


def test_missing_geff_package_and_no_gui_imports(tmp_path):
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from napari_embedtrack.io import geff as g\n"
        f"g.write_geff({str(tmp_path / 'x.geff')!r}, np.ones((2, 8, 8), np.uint16))\n"
        "print(json.dumps(sorted(sys.modules)))\n"
        "sys.modules['geff'] = None  # as if the package were not installed\n"
        f"g.read_geff({str(tmp_path / 'x.geff')!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and "pip install napari-embedtrack[geff]" in last
    tops = {m.split(".")[0] for m in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert "geff" in tops and "zarr" in tops
    gui = sorted(t for t in tops if t in ("qtpy", "napari", "magicgui") or t.startswith("PyQt"))
    assert gui == []
