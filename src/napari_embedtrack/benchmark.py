"""``embedtrack benchmark`` (being rewritten for issue #15)."""

from __future__ import annotations

import argparse
import json
import time


def add_arguments(be: argparse.ArgumentParser) -> None:
    be.add_argument("--model", help="model (default: an untrained network)")
    be.add_argument("--size", type=int, default=512)
    be.add_argument("--frames", type=int, default=5)
    be.add_argument("--tta", action="store_true")
    be.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])


def main(args: argparse.Namespace) -> None:
    print(json.dumps(run_benchmark(args), indent=1))


def run_benchmark(args: argparse.Namespace) -> dict:
    """Time network outputs, clustering and linking on a synthetic movie."""
    import torch

    from .engine.cluster import cluster
    from .engine.link import Linker
    from .engine.model import build_model
    from .engine.modelfile import LoadedModel, ModelCard, load_model
    from .engine.pipeline import default_cluster_params
    from .engine.predict import iter_outputs, resolve_device
    from .synthetic import make_movie

    dev = resolve_device(args.device)
    if args.model:
        m = load_model(args.model, device=dev)
    else:
        torch.manual_seed(0)
        m = LoadedModel(build_model().eval(), ModelCard(name="random"))
    movie = make_movie(
        n_frames=args.frames, shape=(args.size, args.size), n_cells=max(4, args.size // 40), seed=0
    ).image
    params = default_cluster_params(m.card)
    t_net = t_cl = t_ln = 0.0
    linker = Linker()
    it = iter_outputs(
        m.net,
        movie,
        grid_spacing=m.card.grid_spacing,
        scale=m.card.scale,
        crop_size=m.card.crop_size,
        tta=args.tta,
        device=dev,
    )
    t0 = time.perf_counter()
    for t, out in enumerate(it):
        t1 = time.perf_counter()
        t_net += t1 - t0
        lab = cluster(out.seediness, out.bandwidth, out.offsets, params)
        t2 = time.perf_counter()
        linker.add(lab, out.track_offsets if t else None)
        t0 = time.perf_counter()
        t_cl += t2 - t1
        t_ln += t0 - t2
    n = args.frames
    return {
        "model": m.card.name,
        "device": str(dev),
        "frame": [args.size, args.size],
        "frames": n,
        "tta": args.tta,
        "torch_threads": torch.get_num_threads(),
        "network_s_per_frame": round(t_net / n, 3),
        "cluster_s_per_frame": round(t_cl / n, 4),
        "link_s_per_frame": round(t_ln / n, 4),
    }
