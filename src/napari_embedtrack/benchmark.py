"""``embedtrack benchmark``: the reference path against the fast path, and this machine's floor.

One run measures, on the current machine and device, for each frame size and with and without
TTA:

- the **reference path**: fp32, the training crop as tile with the original overlap, every
  pair (t-1, t) encoded from scratch, one job at a time, BatchNorm unfolded
  (:data:`REFERENCE`);
- the **fast path**: the defaults of :func:`~napari_embedtrack.engine.predict.iter_outputs`
  (whole frames where memory allows, BatchNorm folded, features reused, automatic batch size,
  bf16 where the device has it) (:data:`FAST`);
- the **floor**: the throughput of this network's own layers (encode + segmentation decode +
  tracking decode) on a large batch of training-size tiles, as seconds per frame.

Every configuration runs in its own process (clean peak memory, cold start counted apart) on
a synthetic movie read from TIFF files and written as CTC masks, and reports seconds per
frame (steady state: frames 1.., each with a tracking decode) split into network /
clustering / linking / reading / writing, the start-up, the peak memory, the speed-up of the
fast path over the reference path and the fraction of the floor reached.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the plain path the fast path is measured against (iter_outputs keyword arguments; the
#: tile is the model's training crop)
REFERENCE = {
    "tile_size": "crop",
    "batch_size": 1,
    "amp": False,
    "fold_bn": False,
    "reuse_features": False,
}
#: the defaults of iter_outputs
FAST: dict = {}
DEFAULT_MODEL = "Fluo-N2DH-GOWT1"
TILE = 256  # floor: tiles of the training crop size


def add_arguments(be: argparse.ArgumentParser) -> None:
    be.add_argument("--model", default=DEFAULT_MODEL, help=f"model (default {DEFAULT_MODEL})")
    be.add_argument(
        "--sizes", type=int, nargs="+", default=[512, 1024], help="frame sides (512 1024)"
    )
    be.add_argument(
        "--frames", type=int, default=5, help="frames per fast-path run (default 5, >= 2)"
    )
    be.add_argument(
        "--reference-frames",
        type=int,
        default=3,
        help="frames per reference-path run (default 3, >= 2)",
    )
    be.add_argument(
        "--tta",
        choices=["both", "on", "off"],
        default="both",
        help="with and/or without test-time augmentation (default both)",
    )
    be.add_argument(
        "--paths",
        nargs="+",
        choices=["reference", "fast"],
        default=["reference", "fast"],
        help="which paths to run (default both)",
    )
    be.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    be.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the results as JSON to FILE (or to standard output instead of the table)",
    )


def main(args: argparse.Namespace) -> None:
    """Run the benchmark described by the parsed ``embedtrack benchmark`` arguments."""
    if args.frames < 2 or args.reference_frames < 2:
        raise ValueError("--frames and --reference-frames must be at least 2 (frame 0 has no t-1)")
    if any(s < 64 for s in args.sizes):
        raise ValueError(f"--sizes must be at least 64 pixels, got {args.sizes}")
    ttas = {"both": [False, True], "on": [True], "off": [False]}[args.tta]
    report = run_benchmark(
        args.model, args.sizes, ttas, args.paths, args.frames, args.reference_frames, args.device
    )
    if args.json == "-":
        print(json.dumps(report, indent=1))
        return
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


def run_benchmark(
    model: str,
    sizes: list[int],
    ttas: list[bool],
    paths: list[str],
    frames: int,
    reference_frames: int,
    device: str = "auto",
    log=None,
) -> dict:
    """Measure every (size, TTA, path) in its own process, plus the floor; return a report."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    floor = _child({"kind": "floor", "model": model, "device": device})
    log(f"floor: {floor['s_per_tile_job']:.4f} s per {TILE}x{TILE} tile job ({floor['precision']})")
    rows = []
    for size in sizes:
        for tta in ttas:
            for path in paths:
                n = frames if path == "fast" else reference_frames
                cfg = {"kind": "run", "model": model, "device": device, "size": size,
                       "tta": tta, "path": path, "frames": n}  # fmt: skip
                log(f"{path} path, {size}x{size}, TTA {'on' if tta else 'off'}, {n} frames ...")
                row = _child(cfg)
                jobs = (size / TILE) ** 2 * (8 if tta else 1)
                row["floor_s"] = round(jobs * floor["s_per_tile_job"], 4)
                row["floor_fraction"] = round(row["floor_s"] / row["network_s"], 3)
                rows.append(row)
    for row in rows:
        ref = [r for r in rows if r["path"] == "reference" and r["size"] == row["size"]
               and r["tta"] == row["tta"]]  # fmt: skip
        if ref and row["path"] == "fast":
            row["speedup"] = round(ref[0]["total_s"] / row["total_s"], 2)
            row["network_speedup"] = round(ref[0]["network_s"] / row["network_s"], 2)
    return {"machine": floor["machine"], "model": model, "floor": floor, "runs": rows}


def format_table(report: dict) -> str:
    """The report as a Markdown table (seconds per frame, steady state)."""
    m = report["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, device {m['device']}, torch {m['torch']} "
        f"({m['threads']} threads); model {report['model']}; floor "
        f"{report['floor']['s_per_tile_job']:.4f} s per {TILE}x{TILE} tile job "
        f"({report['floor']['precision']})",
        "",
        "| size | TTA | path | network | clustering | linking | reading | writing | total "
        "| start-up | peak MB | speed-up | floor | floor / network |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['size']} | {'on' if r['tta'] else 'off'} | {r['path']} "
            f"| {r['network_s']:.3f} | {r['cluster_s']:.3f} | {r['link_s']:.3f} "
            f"| {r['read_s']:.3f} | {r['write_s']:.3f} | {r['total_s']:.3f} "
            f"| {r['startup_s']:.2f} | {r['peak_mb']:.0f} | {r.get('speedup', '-')} "
            f"| {r['floor_s']:.3f} | {r['floor_fraction']:.2f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- child processes
def _child(cfg: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "napari_embedtrack.benchmark", json.dumps(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        what = f"{cfg.get('path', 'floor')} path" + (f", {cfg['size']} px" if "size" in cfg else "")
        raise ValueError(f"benchmark run ({what}) failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine(device) -> dict:
    import platform

    import torch

    from .engine.resources import cpu_model_name

    cpu = cpu_model_name() or platform.processor() or platform.machine()
    if device.type == "cuda":
        cpu += f"; GPU {torch.cuda.get_device_name(device)}"
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _peak_mb(device) -> float:
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if device.type == "cuda":
        return round(rss + torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(rss, 1)


def _floor(cfg: dict) -> dict:
    """Seconds per tile job of the network's own layers on a large batch (steady state)."""
    import torch

    from .engine.modelfile import load_model
    from .engine.predict import _amp_dtype, auto_amp, fold_batchnorm, resolve_device

    dev = resolve_device(cfg["device"])
    net = fold_batchnorm(load_model(cfg["model"], device=dev).net.eval())
    net = net.to(dev, memory_format=torch.channels_last)
    batch = 64 if dev.type == "cuda" else 8
    x = torch.rand(batch, 1, TILE, TILE, device=dev).contiguous(memory_format=torch.channels_last)
    amp = auto_amp(dev)
    ctx = torch.autocast(dev.type, dtype=_amp_dtype(dev), enabled=amp)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def job():
        with torch.inference_mode(), ctx:
            f = net.encode(x)
            net.decode_seg(f)
            net.decode_track(f, f)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    job()
    reps = 10 if dev.type == "cuda" else 3
    t0 = time.perf_counter()
    for _ in range(reps):
        job()
    per_job = (time.perf_counter() - t0) / reps / batch
    precision = str(_amp_dtype(dev)).replace("torch.", "") if amp else "float32"
    return {"s_per_tile_job": per_job, "batch": batch, "precision": precision,
            "machine": _machine(dev)}  # fmt: skip


class _TimedFrames:
    """Frames of a CTC folder read one at a time, timing the reads."""

    def __init__(self, files: list[Path]):
        import tifffile

        self.files = files
        self._imread = tifffile.imread
        first = self._imread(files[0])
        self.shape = (len(files), *first.shape)
        self.dtype = first.dtype
        self.ndim = 3
        self.seconds = 0.0

    def __getitem__(self, t: int):
        t0 = time.perf_counter()
        frame = self._imread(self.files[t])
        self.seconds += time.perf_counter() - t0
        return frame


def _run(cfg: dict) -> dict:
    """One path on one synthetic movie: seconds per frame by stage, start-up, peak memory."""
    t_import = time.perf_counter()
    import numpy as np
    import tifffile
    import torch

    from .engine.cluster import cluster
    from .engine.link import Linker
    from .engine.modelfile import load_model
    from .engine.pipeline import default_cluster_params
    from .engine.predict import DEFAULT_OVERLAP, iter_outputs, resolve_device
    from .io.ctc import _write_mask
    from .synthetic import make_movie

    import_s = time.perf_counter() - t_import
    dev = resolve_device(cfg["device"])
    size, n = cfg["size"], cfg["frames"]
    movie = make_movie(
        n_frames=n, shape=(size, size), n_cells=max(4, size * size // 12000), seed=0,
        radius=(18.0, 30.0) if size >= 256 else (size / 16, size / 10), speed=3.0,
    ).image  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "01"), Path(tmp, "01_RES")
        src.mkdir()
        out.mkdir()
        files = []
        for t, frame in enumerate(movie):
            files.append(src / f"t{t:03d}.tif")
            tifffile.imwrite(files[-1], (frame * 4000).astype(np.uint16))
        frames = _TimedFrames(files)
        t0 = time.perf_counter()
        m = load_model(cfg["model"], device=dev)
        load_s = time.perf_counter() - t0
        kw = dict(REFERENCE) if cfg["path"] == "reference" else dict(FAST)
        if kw.get("tile_size") == "crop":
            kw["tile_size"] = m.card.crop_size
        params = default_cluster_params(m.card)
        linker = Linker()
        stages = {k: [] for k in ("network", "cluster", "link", "read", "write")}
        it = iter_outputs(
            m.net, frames, **m.card.input_kwargs,
            tta=cfg["tta"], device=dev, overlap=DEFAULT_OVERLAP, **kw,
        )  # fmt: skip
        read_before, cells = 0.0, []
        t0 = time.perf_counter()
        for t, o in enumerate(it):
            t1 = time.perf_counter()
            read = frames.seconds - read_before
            read_before = frames.seconds
            stages["read"].append(read)
            stages["network"].append(t1 - t0 - read)
            lab = cluster(o.seediness, o.bandwidth, o.offsets, params)
            t2 = time.perf_counter()
            cells.append(int(lab.max()))
            tracked = linker.add(lab, o.track_offsets if t else None)
            t3 = time.perf_counter()
            _write_mask(out / f"mask{t:03d}.tif", tracked.astype(np.uint16))
            t0 = time.perf_counter()
            stages["cluster"].append(t2 - t1)
            stages["link"].append(t3 - t2)
            stages["write"].append(t0 - t3)
    steady = {k: float(np.mean(v[1:])) for k, v in stages.items()}
    total = sum(steady.values())
    first = sum(v[0] for v in stages.values())
    return {
        "size": size, "tta": cfg["tta"], "path": cfg["path"], "frames": n,
        **{f"{k}_s": round(v, 4) for k, v in steady.items()},
        "total_s": round(total, 4),
        "startup_s": round(load_s + max(0.0, first - total), 3),
        "import_s": round(import_s, 2),
        "cells_per_frame": round(float(np.mean(cells)), 1),
        "peak_mb": _peak_mb(dev),
        "threads": torch.get_num_threads(),
    }  # fmt: skip


def _child_main(cfg: dict) -> None:
    result = _floor(cfg) if cfg["kind"] == "floor" else _run(cfg)
    print(json.dumps(result))


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
