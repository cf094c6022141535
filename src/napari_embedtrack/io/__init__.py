"""Exchange formats for tracking results (Qt-free).

- :mod:`napari_embedtrack.io.geff`: the tracking graph as a GEFF zarr store (needs the
  optional ``geff`` package: ``pip install napari-embedtrack[geff]``).

The CTC folder format lives in :mod:`napari_embedtrack.ctc` (to move to ``io/ctc.py``).
"""
