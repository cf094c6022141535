"""The ``embedtrack`` command: predict, train, evaluate, models, demo, benchmark.

Every subcommand is a thin layer over the engine; errors in the input end with a one-line
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("napari_embedtrack")


def _frames(text: str | None) -> slice:
    if not text:
        return slice(None)
    try:
        a, b = text.split(":")
        return slice(int(a) if a else None, int(b) if b else None)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"frame ranges look like START:STOP (e.g. 0:10), got {text!r}"
        ) from None


def _window(frames: slice | None) -> tuple[int, int] | None:
    if frames is None:
        return None
    return (frames.start or 0, frames.stop if frames.stop is not None else 10**9)


def _val_window(texts: list[str] | None) -> tuple[int, int] | dict[str, tuple[int, int]] | None:
    """``--val-frames`` values: one START:STOP for every sequence, or DATASET=START:STOP each."""
    if not texts:
        return None

    def window(text: str) -> tuple[int, int] | None:
        try:
            return _window(_frames(text))
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"--val-frames: {e}") from None

    named = [t for t in texts if "=" in t]
    if not named:
        if len(texts) > 1:
            raise ValueError(
                "--val-frames: give one START:STOP for all sequences, or DATASET=START:STOP "
                f"for each, got {' '.join(texts)}"
            )
        return window(texts[0])
    if len(named) < len(texts):
        raise ValueError(
            "--val-frames: do not mix START:STOP with DATASET=START:STOP, got " + " ".join(texts)
        )
    return {name.rstrip("/"): window(frames) for name, frames in (t.split("=", 1) for t in named)}


def _tqdm(total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


# --------------------------------------------------------------------------- predict
def run_predict(
    input_path: str | Path,
    model: str,
    out: str | Path,
    *,
    tta: bool | None = None,
    device: str = "auto",
    frames: slice = slice(None),
    save_embeddings: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
):
    """Predict CTC results for a sequence folder or TIFF stack; returns the TrackingResult.

    ``tta=None`` uses the model card's default."""
    from . import ctc
    from .engine.modelfile import load_model
    from .engine.pipeline import track_movie
    from .engine.predict import resolve_device, save_outputs
    from .engine.progress import run

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if save_embeddings is not None and Path(save_embeddings).exists() and not overwrite:
        raise FileExistsError(f"{save_embeddings} exists; pass --overwrite to replace it")
    movie = ctc.read_movie(input_path)[frames]
    if movie.shape[0] == 0:
        raise ValueError(f"--frames selects no frame of {input_path} ({len(movie)} frames)")
    ndigits = ctc.frame_digits(input_path)
    dev = resolve_device(device)
    loaded = load_model(model, device=dev)
    gen = track_movie(movie, loaded, tta=tta, device=dev, keep_outputs=save_embeddings is not None)
    bar = _tqdm(movie.shape[0], "predict", "frame") if progress else None

    def show(p) -> None:
        if bar is not None and p.done:
            bar.update(p.done - bar.n)
            bar.set_postfix(cells=p.info.get("n_cells", 0))

    try:
        result = run(gen, show)
    finally:
        if bar is not None:
            bar.close()
    ctc.write_results(out, result.labels, result.lineage, ndigits=ndigits, overwrite=overwrite)
    if save_embeddings is not None:
        save_outputs(save_embeddings, result.outputs)
    return result


# --------------------------------------------------------------------------- train
def train_config(args: argparse.Namespace):
    """The TrainConfig of ``embedtrack train`` arguments."""
    from .engine.train import TrainConfig

    # --init: the fine-tuning recipe (TrainConfig.for_finetuning); else training from scratch.
    # Options given on the command line override either.
    cfg = TrainConfig.for_finetuning() if args.init else TrainConfig()
    given = {
        "steps": args.steps,
        "lr": args.lr,
        "val_fraction": args.val_fraction,
        "val_every": args.val_every,
        "max_seconds": None if args.max_minutes is None else args.max_minutes * 60,
    }
    if args.epochs is not None:
        given.update(epochs=args.epochs, steps=0)
    cfg = dataclasses.replace(
        cfg,
        **{k: v for k, v in given.items() if v is not None},
        batch_size=args.batch_size,
        crop_size=args.crop_size,
        scale=args.scale,
        val_window=_val_window(args.val_frames),
        seed=args.seed,
        device=args.device,
    )
    return cfg


def run_train(args: argparse.Namespace) -> Path:
    from .engine import data as D
    from .engine.train import train

    cfg = train_config(args)
    sequences = [D.load_ctc_sequence(p) for p in args.data]
    if args.frames is not None:
        sequences = [D.keep_frames(s, args.frames) for s in sequences]
    gen = train(sequences, args.out, cfg, init=args.init, resume=args.resume, name=args.name)
    bar = None
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                out = stop.value
                break
            if bar is None:
                bar = _tqdm(p.total, "train", "step")
                bar.update(p.done - 1 if "validation" not in p.info else p.done)
            if p.info.get("start"):
                bar.write("before fine-tuning: " + p.message.removeprefix("starting model: "))
            elif "validation" in p.info:
                bar.write(f"step {p.done}: " + p.message)
                log.info("step %d: %s", p.done, p.message)
            else:
                bar.update(p.done - bar.n)
                bar.set_postfix(loss=f"{p.info['smoothed_loss']:.3f}", lr=f"{p.info['lr']:.1e}")
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: checkpoint saved in {args.out}; continue with --resume",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    finally:
        if bar is not None:
            bar.close()
    _report_outcome(Path(out))
    return Path(out)


def _report_outcome(model_dir: Path) -> None:
    """Before/after validation figures of a fine-tuning run, from the card it wrote."""
    from .engine.modelfile import read_card

    card = read_card(model_dir)
    start = card.validation.get("start")
    if not start:
        return
    after = {k: v for k, v in card.validation.items() if isinstance(v, float)}
    fmt = ", ".join
    print(f"before: {fmt(f'{k} {v:.3f}' for k, v in start.items())}", file=sys.stderr)
    print(f"after:  {fmt(f'{k} {v:.3f}' for k, v in after.items())}", file=sys.stderr)
    print(card.training.get("outcome", ""), file=sys.stderr)


# --------------------------------------------------------------------------- other commands
def run_models() -> list[dict]:
    from .engine.modelfile import list_models

    rows = []
    for m in list_models():
        v = m.card.validation
        val = {k: x for k, x in v.items() if isinstance(x, float)}
        frames = "; ".join(f"{k} frames {x}" for k, x in v.get("frames", {}).items())
        text = ", ".join(f"{k} {x:.3f}" for k, x in val.items()) or "-"
        if frames:
            text += f" ({frames})"
        ctc = v.get("ctc")  # official scores measured when the model was shipped
        if isinstance(ctc, dict):
            scores = ", ".join(f"{k} {ctc[k]:.3f}" for k in ("SEG", "DET", "TRA") if k in ctc)
            text += f"; CTC {scores} ({ctc.get('settings', '')})"
        rows.append(
            {
                "name": m.name,
                "kind": "shipped" if m.shipped else "user",
                "trained on": ", ".join(m.card.training.get("data", [])) or "?",
                "validation": text,
                "path": str(m.path),
            }
        )
    return rows


def run_demo(out: str | Path, overwrite: bool = False) -> dict:
    """Track the bundled SIM+ clip with the shipped SIM+ model and score it."""
    from . import ctc
    from ._sample_data import CLIPS

    model = "Fluo-N2DH-SIM+"
    clip = CLIPS[model]
    run_predict(clip / "01", model, out, overwrite=overwrite)
    return ctc.score_results(clip / "01_GT", out)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="embedtrack",
        description="Segment and track cells in 2D time-lapse microscopy with EmbedTrack.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("predict", help="segment and track a movie, write CTC results")
    pr.add_argument("input", help="CTC sequence folder (tNNN.tif) or a TIFF stack")
    pr.add_argument("--model", required=True, help="shipped model name or model folder")
    pr.add_argument("--out", required=True, help="results folder (maskNNN.tif + res_track.txt)")
    pr.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation (8 flips/rotations, 8x slower); default: the model "
        "card's choice (embedtrack models shows it)",
    )
    pr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    pr.add_argument(
        "--frames",
        type=_frames,
        default=None,
        help="START:STOP frame range (results are numbered from 0)",
    )
    pr.add_argument(
        "--save-embeddings",
        metavar="FILE",
        help="also save the network outputs (.npz) for inspection / re-clustering",
    )
    pr.add_argument("--overwrite", action="store_true", help="replace an existing result")
    pr.add_argument("--gt", metavar="SEQ_GT", help="score the result against this ground truth")

    tr = sub.add_parser("train", help="train or fine-tune a model on CTC data")
    tr.add_argument("data", nargs="+", help="CTC dataset folders (with NN and NN_GT)")
    tr.add_argument("--out", required=True, help="model folder to write")
    g = tr.add_mutually_exclusive_group()
    g.add_argument(
        "--epochs", type=int, default=None, help="epochs (default 15; with --init: --steps 300)"
    )
    g.add_argument("--steps", type=int, default=None, help="optimiser steps instead of epochs")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument(
        "--init",
        help="start from this model (name or folder): fine-tuning with its own recipe (300 "
        "steps, lr 1e-4, 10 minutes, validation every 50 steps on a fifth of the frames) that "
        "keeps the starting model unless a fine-tuned checkpoint beats it",
    )
    tr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    tr.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="tail fraction of each sequence held out for validation (default 0.1; with "
        "--init 0.2)",
    )
    tr.add_argument(
        "--val-frames",
        action="append",
        default=None,
        metavar="[DATASET=]START:STOP",
        help="validate on these frames of each sequence instead of the tail (e.g. a stretch "
        "with many annotated cells); repeat as DATASET=START:STOP to give each dataset its own",
    )
    tr.add_argument(
        "--val-every",
        type=int,
        default=None,
        help="validate every N steps (default: once per epoch; with --init 50)",
    )
    tr.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop after this many minutes of training (default: no limit; with --init 10)",
    )
    tr.add_argument("--batch-size", type=int, default=4)
    tr.add_argument("--crop-size", type=int, default=256)
    tr.add_argument(
        "--scale",
        type=float,
        default=None,
        help="image scale the model works at, e.g. 0.5 for large cells (default: 1, or the "
        "--init model's scale)",
    )
    tr.add_argument("--lr", type=float, default=None, help="peak learning rate (5e-4; --init 1e-4)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--name", help="model name for the card (default: folder name)")
    tr.add_argument(
        "--frames",
        type=_frames,
        default=None,
        help="START:STOP: train on this frame range of each sequence only (e.g. "
        "fine-tuning on a few annotated frames)",
    )

    ev = sub.add_parser(
        "evaluate",
        help="score CTC results as JSON: SEG, DET, TRA, the lineage measures CT, TF, BC(1), "
        "CCA, and the number of tracks against the truth",
    )
    ev.add_argument("--gt", required=True, help="ground truth folder (NN_GT)")
    ev.add_argument("--res", required=True, help="results folder (NN_RES)")

    sub.add_parser("models", help="list shipped and user models")

    de = sub.add_parser("demo", help="track the bundled SIM+ clip and print SEG/DET/TRA")
    de.add_argument("--out", default="embedtrack_demo_RES", help="results folder")
    de.add_argument("--overwrite", action="store_true")

    from .benchmark import add_arguments as add_benchmark_arguments

    be = sub.add_parser(
        "benchmark",
        help="time the reference and the fast path (network, clustering, linking) against "
        "this machine's floor",
    )
    add_benchmark_arguments(be)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from .ctc import CTCFormatError
    from .engine.modelfile import ModelFileError

    try:
        if args.command == "predict":
            result = run_predict(
                args.input,
                args.model,
                args.out,
                tta=args.tta,
                device=args.device,
                frames=args.frames or slice(None),
                save_embeddings=args.save_embeddings,
                overwrite=args.overwrite,
            )
            n_tracks = len(result.lineage)
            print(
                f"wrote {result.labels.shape[0]} frames, {n_tracks} tracks to {args.out}",
                file=sys.stderr,
            )
            if args.gt:
                from .ctc import score_results

                print(json.dumps(score_results(args.gt, args.out)))
        elif args.command == "train":
            out = run_train(args)
            print(f"best model written to {out}", file=sys.stderr)
        elif args.command == "evaluate":
            from .ctc import score_results

            print(json.dumps(score_results(args.gt, args.res)))
        elif args.command == "models":
            rows = run_models()
            if not rows:
                print("no models found")
            for r in rows:
                print(
                    f"{r['name']:<22} {r['kind']:<8} trained on: {r['trained on']}; "
                    f"validation: {r['validation']}\n{'':<31}{r['path']}"
                )
        elif args.command == "demo":
            print(json.dumps(run_demo(args.out, args.overwrite)))
        elif args.command == "benchmark":
            from .benchmark import main as benchmark_main

            benchmark_main(args)
    except (CTCFormatError, ModelFileError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"embedtrack {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
