"""npe2 contributions: readers, writer, sample data, widgets, manifest."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.layers import Image, Labels, Tracks
from npe2 import PluginManifest

from napari_embedtrack import _sample_data
from napari_embedtrack._reader import get_geff_reader, get_movie_reader, get_tracks_reader
from napari_embedtrack._writer import write_ctc_results, write_geff_store
from napari_embedtrack.io import ctc
from napari_embedtrack.io.tracks import lineage_to_tracks
from napari_embedtrack.synthetic import write_ctc

PLUGIN = "napari-embedtrack"


@pytest.fixture
def dataset(tmp_path, movie):
    """The movie as a CTC dataset: ``01`` and ``01_GT``."""
    seq, gt = write_ctc(movie, tmp_path / "data", seq="01")
    return seq, gt


def test_manifest_is_valid():
    manifest = PluginManifest.from_distribution(PLUGIN)
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Track cells (EmbedTrack)", "Fine-tune EmbedTrack", "Review and evaluate (EmbedTrack)",
        "Edit tracks (EmbedTrack)", "Lineage tree (EmbedTrack)",
    }  # fmt: skip
    manifest.validate_imports()  # every python_name imports


def test_readers_return_none_for_other_paths(tmp_path, dataset):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(tmp_path / "zstack.tif", np.zeros((2, 3, 16, 16), np.uint8),
                     imagej=True, metadata={"axes": "ZCYX"})  # fmt: skip
    others = ["empty", "notes.txt", "missing", "missing.tif", "rgb.tif", "zstack.tif"]
    for name in others:
        assert get_movie_reader(str(tmp_path / name)) is None, name
        assert get_tracks_reader(str(tmp_path / name)) is None, name
        assert get_geff_reader(str(tmp_path / name)) is None, name
    seq, gt = dataset
    assert get_tracks_reader(str(seq)) is None
    assert get_geff_reader(str(seq)) is None and get_geff_reader(str(gt)) is None
    assert get_movie_reader(str(gt)) is None
    assert get_movie_reader([str(seq), str(seq)]) is None


def test_read_write_round_trip(make_napari_viewer, tmp_path, dataset, movie):
    seq, gt = dataset
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(seq), plugin=PLUGIN)
    assert isinstance(image, Image) and image.data.shape == (6, 96, 96)
    assert image.name == "data 01"
    for path in (gt, gt / "TRA", gt / "TRA" / "man_track.txt"):
        layers = get_tracks_reader(str(path))(str(path))
        assert [kind for *_, kind in layers] == ["labels", "tracks", "labels"]  # TRA, SEG
    labels, tracks, seg = viewer.open(str(gt), plugin=PLUGIN)
    assert isinstance(labels, Labels) and isinstance(tracks, Tracks)
    np.testing.assert_array_equal(labels.data, movie.labels)
    np.testing.assert_array_equal(seg.data, movie.labels)  # synthetic SEG: every frame
    assert tracks.graph

    res = tmp_path / "01_RES"
    viewer.layers.selection = {labels, tracks}
    written = viewer.layers.save(str(res), selected=True, plugin=PLUGIN)
    assert written == [str(res)]
    out_labels, out_lineage = ctc.read_results(res)
    np.testing.assert_array_equal(out_labels, movie.labels)
    np.testing.assert_array_equal(out_lineage, movie.lineage)

    # a results folder is replaced; a folder with other files is not
    write_ctc_results(str(res), [(labels.data, {}, "labels")])
    assert (ctc.read_results(res)[1][:, 3] == 0).all()  # no tracks: no parents
    with pytest.raises(FileExistsError, match="not a CTC results folder"):
        write_ctc_results(str(seq), [(labels.data, {}, "labels")])
    layers = get_tracks_reader(str(res))(str(res))
    assert [kind for *_, kind in layers] == ["labels", "tracks"]


def test_movie_reader_tiff_stack_and_single_image(tmp_path, movie):
    stack = (movie.image * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    tifffile.imwrite(tmp_path / "one.tif", stack[0])
    stack_path, one_path = str(tmp_path / "stack.tif"), str(tmp_path / "one.tif")
    ((data, meta, kind),) = get_movie_reader(stack_path)(stack_path)
    assert kind == "image" and data.shape == (6, 96, 96) and meta["name"] == "stack"
    ((data, _, _),) = get_movie_reader(one_path)(one_path)
    assert data.shape == (96, 96)


def test_sample_data_and_widgets_through_napari(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "synthetic")
    assert [type(ly).__name__ for ly in layers] == ["Image", "Labels", "Tracks"]
    assert layers[0].data.ndim == 3
    for name in ("Track cells (EmbedTrack)", "Fine-tune EmbedTrack"):
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        assert widget._image.value is layers[0]
    assert tiny_model in widget._init.choices


@pytest.mark.parametrize("key", ["sim_clip", "gowt1_clip", "msc_clip"])
def test_bundled_clips(key):
    layers = getattr(_sample_data, key)()
    assert [kind for _, _, kind in layers] == ["image", "labels", "tracks"]
    movie, labels = layers[0][0], layers[1][0]
    assert movie.ndim == 3 and movie.shape == labels.shape
    assert labels.max() > 0 and len(layers[2][0]) > 0


def test_geff_write_and_read_through_the_viewer(make_napari_viewer, tmp_path, movie):
    pytest.importorskip("geff")
    from napari_embedtrack.io.geff import read_geff, tracking_graph, write_geff

    viewer = make_napari_viewer()
    labels = viewer.add_labels(movie.labels, name="labels: movie")
    data, graph, props = lineage_to_tracks(movie.labels, movie.lineage)
    tracks = viewer.add_tracks(data, graph=graph, properties=props, name="tracks: movie")
    out = tmp_path / "movie.geff"
    viewer.layers.selection = {labels, tracks}
    written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert written == [str(out)]
    stored = read_geff(out)
    np.testing.assert_array_equal(stored.labels, movie.labels)
    np.testing.assert_array_equal(stored.lineage, movie.lineage)

    new = make_napari_viewer()
    back_labels, back_tracks = new.open(str(out), plugin=PLUGIN)
    assert isinstance(back_labels, Labels) and isinstance(back_tracks, Tracks)
    assert back_labels.name == "movie" and back_tracks.name == "movie tracks"
    np.testing.assert_array_equal(back_labels.data, movie.labels)
    np.testing.assert_allclose(back_tracks.data, tracks.data)
    assert back_tracks.graph == tracks.graph and back_tracks.graph  # divisions
    # the GEFF group itself opens too; extra node properties become Tracks properties
    nodes = tracking_graph(movie.labels, movie.lineage).nodes
    score = nodes["track_id"] * 100.0 + nodes["t"]  # per node, in the graph's node order
    write_geff(tmp_path / "s.geff", movie.labels, movie.lineage, node_props={"score": score})
    group = str(tmp_path / "s.geff" / "tracks")
    (_, (t_data, meta, kind)) = get_geff_reader(group)(group)
    assert kind == "tracks"
    np.testing.assert_array_equal(meta["properties"]["score"], t_data[:, 0] * 100 + t_data[:, 1])

    # a GEFF store is replaced, any other folder is not
    write_geff_store(str(out), [(movie.labels[:2], {}, "labels")])
    assert read_geff(out).labels.shape[0] == 2
    assert (read_geff(out).lineage[:, 3] == 0).all()  # no tracks layer: no parents
    with pytest.raises(FileExistsError, match="not a GEFF store"):
        write_geff_store(str(tmp_path), [(movie.labels, {}, "labels")])


def test_long_movies_open_as_dask_arrays_read_frame_by_frame(tmp_path, dataset, movie):
    """Above ``LAZY_BYTES`` the reader gives a dask array (frames read when asked for): for a
    CTC folder, an uncompressed and a compressed stack; the pixels are the movie's."""
    import dask.array as da

    from napari_embedtrack import _reader

    seq, _ = dataset
    frames = (movie.image * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", frames, photometric="minisblack")
    tifffile.imwrite(tmp_path / "zlib.tif", frames, photometric="minisblack", compression="zlib")
    small = _reader.LAZY_BYTES
    _reader.LAZY_BYTES = 0  # every movie counts as long
    try:
        for path, want in ((seq, ctc.read_movie(seq)), (tmp_path / "stack.tif", frames),
                           (tmp_path / "zlib.tif", frames)):  # fmt: skip
            (data, _kw, kind), *_ = get_movie_reader(str(path))(str(path))
            assert kind == "image" and isinstance(data, da.Array)
            assert data.shape == want.shape and data.chunksize == (1, *want.shape[1:])
            np.testing.assert_array_equal(np.asarray(data[2]), want[2])
            np.testing.assert_array_equal(data.compute(), want)
    finally:
        _reader.LAZY_BYTES = small
