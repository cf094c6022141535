"""Exchange formats for tracking results (Qt-free).

- :mod:`napari_embedtrack.io.ctc`: Cell Tracking Challenge folders (movies, masks, lineage
  files, ground truth, results) and the official scores.
- :mod:`napari_embedtrack.io.tracks`: lineage tables <-> napari Tracks layer data, and label
  movies made consistent with their lineage.
- :mod:`napari_embedtrack.io.geff`: the tracking graph as a GEFF zarr store (needs the
  optional ``geff`` package: ``pip install napari-embedtrack[geff]``).
- :mod:`napari_embedtrack.io.movies`: movies read one frame at a time.
- :mod:`napari_embedtrack.io.zarr_store`: network outputs on disk, zarr / OME-Zarr movies.
"""
