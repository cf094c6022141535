"""napari-embedtrack: cell segmentation and tracking with EmbedTrack, in napari and on the CLI."""

__version__ = "0.1.0"
