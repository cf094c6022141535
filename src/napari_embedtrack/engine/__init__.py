"""Qt-free EmbedTrack engine: model, losses, training, inference, clustering and linking.

Nothing in this package imports Qt, napari or magicgui.
"""
