"""io.movies: a compressed TIFF stack read page by page from many threads at once (dask's
threaded scheduler, as napari reads a long movie) gives its pixels, never corrupt pages."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tifffile

from napari_embedtrack.io.movies import open_movie


def test_pages_read_from_many_threads_are_the_stacks_pixels(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4000, (24, 96, 80)).astype(np.uint16)
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, frames, photometric="minisblack", compression="zlib")
    movie = open_movie(path)
    order = [t for _ in range(20) for t in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda t: (t, movie[t]), order))
    for t, frame in got:
        np.testing.assert_array_equal(frame, frames[t])
