"""Peak memory of ``embedtrack predict`` against movie length (issue #16, part 2).

Writes a synthetic movie of 1024x1024 frames (moving, dividing-free nuclei on noise, made
frame by frame; an uncompressed TIFF stack, so the movie is read through memory maps), then
runs the real command line, ``embedtrack predict`` (streaming path: lazy reading, network,
clustering, linking, checkpoint, track clean-up, results written frame by frame), on its
first N frames in a fresh subprocess per N, and reports each run's peak resident memory
(``getrusage`` ``ru_maxrss`` of the child) and, sampled every second with psutil, the
largest RSS during the first and the last tenth of the run.

The network is the shipped ``Fluo-N2DH-SIM+`` model (no TTA). ``--net-scale S`` runs it on
frames resized by S (a copy of the model whose card says ``scale: S``): the same code path
(frames read, resized for the network, outputs resized back to 1024x1024, clustering,
linking and writing at 1024x1024), only the network's own cost shrinks (about 4x at 0.5).
``--net-scale 1`` is the model as shipped. The synthetic nuclei are drawn ``1 / S`` times
SIM+'s size, so the network sees nuclei of the size it was trained on. Results and the
command that made them: docs/performance.md, "Long movies: memory".

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/bench_memory.py --frames 100 1000 \\
        --net-scale 0.5 --work /tmp/bench_memory --json /tmp/bench_memory/result.json

Timings are printed for orientation only (a busy shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

RUNNER = r"""
import json, resource, sys, time
from napari_embedtrack.cli import main
t0 = time.perf_counter()
rc = main(sys.argv[1:])
print("BENCH " + json.dumps({"rc": rc, "seconds": time.perf_counter() - t0,
      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
"""


def synthetic_frames(n: int, size: int = 1024, seed: int = 0, radius: float = 25.0):
    """Frames of smooth nuclei (radius ``radius`` to 1.3x that, in pixels, about
    ``size**2 / (9 radius**2)`` of them) drifting with a random walk on a noisy background,
    uint16, one frame at a time (nothing of the movie is kept). With ``radius = 25 / S`` a
    network run at scale S sees nuclei of SIM+'s size."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    n_cells = max(int(size**2 / (9 * radius**2)), 1)
    margin = 1.5 * radius
    pos = rng.uniform(margin, size - margin, (n_cells, 2))
    vel = rng.normal(0, radius / 20, (n_cells, 2))
    rad = rng.uniform(radius, 1.3 * radius, n_cells)
    level = rng.uniform(0.6, 1.0, n_cells)
    h = int(np.ceil(1.3 * radius)) + 1
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    for _ in range(n):
        frame = np.zeros((size, size), np.float32)
        for (y, x), r, v in zip(pos, rad, level, strict=True):
            y0, x0 = round(y), round(x)
            disk = (yy**2 + xx**2) <= r**2
            ys, xs = yy[disk] + y0, xx[disk] + x0
            ok = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
            frame[ys[ok], xs[ok]] = v
        frame = ndimage.gaussian_filter(frame, radius / 8) + rng.normal(0.1, 0.02, frame.shape)
        yield (np.clip(frame, 0, 1.5) * 20000).astype(np.uint16)
        vel = 0.8 * vel + rng.normal(0, radius / 40, vel.shape)
        pos = np.clip(pos + vel, margin, size - margin)


def write_movie(path: Path, n: int, size: int, radius: float) -> None:
    import tifffile

    if path.exists():
        with tifffile.TiffFile(path) as tif:
            if tif.series[0].shape == (n, size, size):
                return
    tmp = path.with_suffix(".tmp.tif")
    frames = synthetic_frames(n, size, radius=radius)
    tifffile.imwrite(tmp, frames, shape=(n, size, size), dtype=np.uint16,
                     photometric="minisblack")  # fmt: skip
    os.replace(tmp, path)


def scaled_model(work: Path, scale: float) -> str:
    """The shipped SIM+ model, or a copy whose card runs the network at ``scale``."""
    if scale == 1.0:
        return "Fluo-N2DH-SIM+"
    import dataclasses

    from napari_embedtrack.engine.modelfile import load_model, save_model

    loaded = load_model("Fluo-N2DH-SIM+")
    card = dataclasses.replace(loaded.card, name=f"SIM+ at scale {scale:g}", scale=scale)
    return str(save_model(work / f"sim_scale_{scale:g}", loaded.net, card))


def measure(movie: Path, model: str, n: int, out: Path, extra: list[str]) -> dict:
    import psutil

    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", RUNNER, "predict", str(movie), "--model", model,
           "--out", str(out), "--device", "cpu", "--no-tta", "--frames", f"0:{n}",
           "--overwrite", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    samples: list[tuple[float, int]] = []
    ps = psutil.Process(proc.pid)

    def sample() -> None:
        while proc.poll() is None:
            try:
                samples.append((time.perf_counter(), ps.memory_info().rss))
            except psutil.Error:
                break
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.join()
    line = next(ln for ln in stdout.splitlines() if ln.startswith("BENCH "))
    result = json.loads(line[6:])
    rss = np.array([r for _t, r in samples], float) / 2**20
    k = max(len(rss) // 10, 1)
    result.update({
        "frames": n,
        "peak_rss_mib": result["maxrss_kib"] / 1024,
        "sampled_peak_first_tenth_mib": float(rss[:k].max()) if len(rss) else None,
        "sampled_peak_last_tenth_mib": float(rss[-k:].max()) if len(rss) else None,
        "samples": len(rss),
    })  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--net-scale", type=float, default=0.5)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_memory"))
    p.add_argument("--save-embeddings", action="store_true", help="also write the outputs store")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    radius = 25.0 / args.net_scale
    movie = args.work / f"movie_{max(args.frames)}x{args.size}_r{radius:g}.tif"
    t0 = time.perf_counter()
    write_movie(movie, max(args.frames), args.size, radius)
    print(f"movie {movie} ({time.perf_counter() - t0:.0f} s)", flush=True)
    model = scaled_model(args.work, args.net_scale)
    rows = []
    for n in args.frames:
        extra = ["--save-embeddings", str(args.work / f"emb_{n}.zarr")] if args.save_embeddings \
            else []  # fmt: skip
        row = measure(movie, model, n, args.work / f"res_{n}", extra)
        row.update({"size": args.size, "net_scale": args.net_scale,
                    "save_embeddings": args.save_embeddings})  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(args.work / f"emb_{n}.zarr", ignore_errors=True)
    base = rows[0]["peak_rss_mib"]
    for row in rows:
        print(f"{row['frames']:>6} frames: peak RSS {row['peak_rss_mib']:8.1f} MiB "
              f"({100 * (row['peak_rss_mib'] / base - 1):+.1f} % vs {rows[0]['frames']}), "
              f"{row['seconds']:.0f} s, rc {row['rc']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
