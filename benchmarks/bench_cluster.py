"""Time engine.cluster on a 1024x1024 frame with ~300 touching cells (one CPU thread).

Run: ``python benchmarks/bench_cluster.py``. Two cases: ideal outputs (every pixel points
exactly at its cell's centre) and noisy outputs (offset noise, soft seediness, wider kernels),
which create many more candidate centres. Then the dim-cell rims the pipeline adds to every
finished frame (``postprocess.add_dim_rims`` at the default ``GROW_DIM``) on the clustered
noisy frame and on the untrained-like one.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from napari_embedtrack.engine.cluster import ClusterParams, cluster
from napari_embedtrack.engine.pipeline import GROW_DIM
from napari_embedtrack.engine.postprocess import add_dim_rims, seediness_u8

G = 1.0 / 255.0


def voronoi_cells(shape=(1024, 1024), n=300, seed=0):
    """Touching cells: Voronoi regions of random seeds, eroded by a 1 px gap here and there."""
    rng = np.random.default_rng(seed)
    markers = np.zeros(shape, dtype=np.int32)
    pts = rng.integers(20, shape[0] - 20, size=(n, 2))
    markers[pts[:, 0], pts[:, 1]] = np.arange(1, n + 1)
    _, (iy, ix) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
    labels = markers[iy, ix]
    # background: pixels far from their seed
    dist = np.hypot(iy - np.arange(shape[0])[:, None], ix - np.arange(shape[1])[None, :])
    labels[dist > 30] = 0
    centres = np.zeros((2, n + 1))
    centres[:, 1:] = pts.T
    return labels, centres


def outputs(labels, centres, noise=0.0, radius=1.5, seed=0):
    rng = np.random.default_rng(seed)
    h, w = labels.shape
    yy, xx = np.mgrid[0:h, 0:w]
    fg = labels > 0
    off = np.zeros((2, h, w), np.float32)
    off[0][fg] = centres[0][labels[fg]] - yy[fg]
    off[1][fg] = centres[1][labels[fg]] - xx[fg]
    seed_map = fg.astype(np.float32)
    if noise:
        off += rng.normal(0, noise, off.shape).astype(np.float32)
        seed_map = np.clip(seed_map * 0.9 + rng.normal(0, 0.05, fg.shape), 0, 1)
    s = (radius * G) ** 2 / np.log(2)
    bw = np.full((2, h, w), -np.log(s) / 10, np.float32)
    return seed_map.astype(np.float32), bw, off


def bench(name, args, params, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        lab = cluster(*args, params)
        times.append(time.perf_counter() - t0)
    print(f"{name}: {min(times):.3f} s (min of {repeat}), {lab.max()} instances")
    return lab


def bench_rims(name, labels, seediness, repeat=3):
    seed = seediness_u8(seediness)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        grown = add_dim_rims(labels, seed, GROW_DIM)
        times.append(time.perf_counter() - t0)
    added = int((grown > 0).sum() - (labels > 0).sum())
    print(f"dim-cell rims, {name}: {min(times):.3f} s (min of {repeat}), {added} pixels added")


def main():
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    labels, centres = voronoi_cells()
    n_cells = len(np.unique(labels)) - 1
    print(f"frame {labels.shape}, {n_cells} cells, {int((labels > 0).sum())} fg pixels")
    params = ClusterParams(min_size=20, grid_spacing=G)
    bench("ideal outputs", outputs(labels, centres), params)
    noisy = outputs(labels, centres, 2.0, 4.0)
    noisy_labels = bench("noisy outputs (sd 2 px, radius 4 px)", noisy, params)
    bench("noisy outputs (sd 4 px, radius 8 px)", outputs(labels, centres, 4.0, 8.0), params)
    shape = labels.shape
    rng = np.random.default_rng(0)
    untrained = (
        rng.random(shape).astype(np.float32),
        np.full((2, *shape), 0.5, np.float32),
        rng.normal(0, 1, (2, *shape)).astype(np.float32),
    )
    raw = bench("untrained-like outputs (random seediness, zero-ish offsets)", untrained, params, 1)
    bench_rims("noisy outputs (sd 2 px)", noisy_labels, noisy[0])
    bench_rims("untrained-like outputs", raw, untrained[0], 1)


if __name__ == "__main__":
    main()
