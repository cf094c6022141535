"""The ``embedtrack`` command: predict, train, evaluate, models, demo, benchmark.

Every subcommand is a thin layer over the engine; errors in the input end with a one-line
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import os
import re
import shutil
import sys
import time
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


def _cell_diameter(value: str | None) -> float | str:
    """``--cell-diameter`` checked (ValueError: a one-line message), else the default of
    the CLI and the widget."""
    from .engine.cellsize import DEFAULT, parse_cell_diameter

    return DEFAULT if value is None else parse_cell_diameter(value)


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
def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _axes(text: str) -> str:
    from .io.ctc import _check_axes_text

    try:
        return _check_axes_text(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _warn(message: str) -> None:
    log.warning("%s", message)


def _frame_count(n: int, frames: slice) -> int:
    return len(range(*frames.indices(n)))


def _check_out(out: Path, overwrite: bool, save_embeddings: Path | None) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is a file; expected a results folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if save_embeddings is not None and save_embeddings.exists() and not overwrite:
        raise FileExistsError(f"{save_embeddings} exists; pass --overwrite to replace it")


@dataclasses.dataclass
class PredictResult:
    """What ``embedtrack predict`` wrote for one movie (the masks are on disk, not here).

    Attributes:
        out: the results folder.
        n_frames: frames written.
        lineage: (N, 4) the lineage written (res_track.txt).
        complete: False if the run was stopped before the last frame.
        embeddings: where the network outputs went (None if not asked).
        cell_diameter: the cells' diameter (px) the model was set to, None when it ran as
            trained.
    """

    out: Path
    n_frames: int
    lineage: object
    complete: bool = True
    embeddings: Path | None = None
    cell_diameter: float | None = None


_RESUME_DISTRIBUTED = (
    "--resume does not combine with --scheduler: resume the run without --scheduler (its "
    "finished frames are kept), or start again with --overwrite"
)


def run_predict(
    input_path: str | Path,
    model,
    out: str | Path,
    *,
    tta: bool | None = None,
    device: str = "auto",
    frames: slice = slice(None),
    save_embeddings: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    axes: str | None = None,
    warn=_warn,
    resume: bool = False,
    scheduler=None,
    chunk_frames: int | None = None,
    smooth_sigma: float | None = None,
    cell_diameter: float | str | None = None,
) -> PredictResult:
    """Predict CTC results for a movie (CTC sequence folder, TIFF stack, zarr / OME-Zarr).

    Streaming (issue #16): frames are read one at a time, tracked, kept in
    ``.<out name>.partial`` beside ``out`` while the run lasts, then cleaned up and written
    frame by frame into a temporary folder that is moved into place at the end (memory flat
    in the movie's length). ``resume=True`` continues an interrupted run of the same movie,
    model and settings from the partial folder (:mod:`.engine.checkpoint`).

    ``model``: a name, a model folder or a loaded model. ``tta=None`` uses the model card's
    default, and ``smooth_sigma=None`` the card's Gaussian pre-filter (a number replaces it
    for this run). ``cell_diameter``: the movie's cells' diameter in pixels, ``"auto"``
    (estimated from a few frames, :mod:`.engine.cellsize`; what ``embedtrack predict`` does
    by default) or ``None`` / ``"model"`` (the model as trained); the model is set to the
    cells' size for this run. ``axes``: the TIFF stack's axes (see :func:`ctc.read_movie`).
    ``save_embeddings``: a zarr store folder for the network outputs (float16, written frame by
    frame; a path ending in ``.npz`` gets the ``.npz`` of
    :func:`~.engine.predict.save_outputs` instead, exported from the store at the end).
    Everything that can be checked before the work is (output folder, free disk space,
    memory, the model, the movie's axes, NaN pixels, contrast); ``warn`` gets one-line
    warnings (default: the log).

    ``scheduler``: a dask.distributed scheduler address or client: the network and the
    clustering run there, ``chunk_frames`` frames per task, into a store in the partial
    folder (which, like the movie, must be on a filesystem the workers share); linking, the
    clean-up and the writing run here (:mod:`.engine.distributed`). Not with ``resume``."""
    from .engine.checkpoint import RunCheckpoint
    from .engine.modelfile import LoadedModel, load_model
    from .engine.pipeline import check_memory, check_movie, scan_movie, track_frames
    from .engine.predict import resolve_device
    from .engine.progress import run
    from .io import ctc
    from .io.movies import open_movie
    from .io.zarr_store import OutputStore, is_zarr_movie

    out = Path(out)
    emb = None if save_embeddings is None else Path(save_embeddings)
    if scheduler is not None and resume:
        raise ValueError(_RESUME_DISTRIBUTED)
    _check_out(out, overwrite, emb)
    if is_zarr_movie(input_path):
        movie_all = open_movie(input_path)
        n_all, y, x = movie_all.shape
    else:
        (n_all, y, x), _ = ctc.movie_info(input_path, axes)
        movie_all = None
    n = _frame_count(n_all, frames)
    if n == 0:
        raise ValueError(f"--frames selects no frame of {input_path} ({n_all} frames)")
    for message in (
        ctc.check_results_target(out, (n, y, x), overwrite),
        emb and ctc.check_writable(emb, least=14 * n * y * x + 4096),  # float16
    ):
        if message:
            warn(message)
    # frames are read, tracked and written one at a time
    check_memory((n, y, x), in_memory=False)
    dev = resolve_device(device)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=dev)
    loaded = loaded.with_smooth_sigma(smooth_sigma)
    movie = movie_all if movie_all is not None else open_movie(input_path, axes)
    movie = check_movie(movie[frames], in_memory=False)
    ndigits = ctc.frame_digits(n_all if movie_all is not None or Path(input_path).is_file()
                               else input_path)  # fmt: skip
    low, high = run(scan_movie(movie))
    if low == high:
        raise ValueError(
            f"{input_path}: every pixel of the {n} frame(s) is {_number(low)}; expected a "
            "movie with contrast (a constant image holds no cell)"
        )
    left = RunCheckpoint(partial_folder(out), {})  # refused before measuring the cells
    if left.exists() and not resume and not overwrite and left.frames_done():
        raise FileExistsError(
            f"{out}: an interrupted run left {left.frames_done()} finished frame(s) "
            f"in {left.folder}; add --resume to continue it, or --overwrite to start again"
        )
    loaded, diameter = _fit_to_cells(input_path, movie, loaded, cell_diameter, dev, warn)
    checkpoint = _checkpoint(input_path, movie, loaded, out, frames, tta, axes, diameter)
    if resume and not checkpoint.exists():
        warn(f"{out}: no interrupted run to resume ({checkpoint.folder}); starting at frame 0")
        resume = False
    # network outputs go to a store inside the partial folder (resumable with it), moved
    # beside the results at the end
    store = None if emb is None else OutputStore(checkpoint.folder / "outputs.zarr", (n, y, x))
    if scheduler is None:
        gen = track_frames(
            movie, loaded, tta=tta, device=dev, outputs=store, checkpoint=checkpoint, resume=resume
        )
    else:
        from .engine.distributed import CHUNK_FRAMES, track_frames_distributed

        gen = track_frames_distributed(
            input_path, loaded, scheduler, checkpoint.folder / "distributed.zarr", axes=axes,
            frames=frames, tta=tta, device=device, outputs=store, checkpoint=checkpoint,
            chunk_frames=chunk_frames or CHUNK_FRAMES,
        )  # fmt: skip
    bar = _tqdm(n, "predict", "frame") if progress else None

    def show(p) -> None:
        if bar is not None and p.done:
            bar.update(p.done - bar.n)
            bar.set_postfix(cells=p.info.get("n_cells", 0))

    try:
        raw = run(gen, show)
    finally:
        if bar is not None:
            bar.close()
    finisher = raw.finisher()
    lineage = run(finisher.plan())
    shape = (raw.n_frames, *raw.frame_shape)
    if emb is None:
        written = ctc.write_results_frames(
            out, finisher.frames, lineage, shape, ndigits=ndigits, overwrite=overwrite
        )
        checkpoint.remove()
        return PredictResult(out, raw.n_frames, written, raw.complete, None, diameter)
    # embeddings moved (or exported) beside their target first, renamed once the results are
    # in place: a half-written store never has the name, and a failed run leaves neither
    emb.parent.mkdir(parents=True, exist_ok=True)
    tmp = emb.with_name(f".{emb.name}.tmp-{os.getpid()}")
    try:
        if emb.suffix.lower() == ".npz":
            store.export_npz(tmp)
        else:
            os.replace(store.path, tmp)
        written = ctc.write_results_frames(
            out, finisher.frames, lineage, shape, ndigits=ndigits, overwrite=overwrite
        )
        if emb.is_dir() and overwrite:
            shutil.rmtree(emb)
        elif emb.exists() and overwrite:
            emb.unlink()
        os.replace(tmp, emb)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    checkpoint.remove()
    return PredictResult(out, raw.n_frames, written, raw.complete, emb, diameter)


def _number(value: float) -> str:
    """A pixel value as the movie has it (7, not 7.0)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def partial_folder(out: str | Path) -> Path:
    """Where ``embedtrack predict`` keeps the finished frames of a run writing to ``out``."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def _fit_to_cells(input_path, movie, loaded, cell_diameter, device, warn):
    """The model set to the movie's cells (``run_predict``'s ``cell_diameter``), and the
    diameter it was set to (None: the model as trained)."""
    from .engine.cellsize import AUTO, fit_model, parse_cell_diameter
    from .engine.progress import run

    if cell_diameter is None:
        return loaded, None
    setting = parse_cell_diameter(cell_diameter)
    fitted = run(fit_model(movie, loaded, setting, device=device))
    if fitted is loaded:
        return loaded, None
    d, own = fitted.card.cell_diameter, loaded.card.cell_diameter
    if setting == AUTO:
        warn(
            f"{input_path}: cells are about {d:.0f} px across, model {loaded.card.name!r} was "
            f"trained on {own:.0f} px: frames are resized by {own / d:.3g} for the network "
            "(--cell-diameter model: as trained; --cell-diameter PX: another size)"
        )
    return fitted, d


def _checkpoint(input_path, movie, loaded, out, frames: slice, tta, axes, diameter=None):
    """The run's checkpoint, with a fingerprint of everything that decides its result."""
    from .engine.checkpoint import RunCheckpoint, model_digest, movie_digest
    from .engine.pipeline import default_cluster_params

    card = loaded.card
    fingerprint = {
        "input": str(Path(input_path).resolve()),
        "axes": axes,
        "frames": [frames.start, frames.stop, frames.step],
        "movie": movie_digest(movie),
        "model": card.name,
        "weights": model_digest(loaded.net),
        "tta": card.tta if tta is None else bool(tta),
    }
    if card.smooth_sigma:  # absent when off: runs started before the field existed resume
        fingerprint["smooth_sigma"] = card.smooth_sigma
    if diameter is not None:  # the model set to other cells: absent when as trained
        fingerprint["cell_diameter"] = round(diameter, 3)
    # the clustering decides the finished frames (and, with dim-cell rims, what they keep):
    # a run whose card thresholds or defaults changed since does not resume into a mix
    fingerprint["clustering"] = dataclasses.asdict(default_cluster_params(card))
    return RunCheckpoint(partial_folder(out), fingerprint)


# --------------------------------------------------------------------------- batch predict
_GLOB = re.compile(r"[*?\[]")


def expand_inputs(inputs: list[str]) -> tuple[list[Path], bool]:
    """The movies named by ``embedtrack predict``'s INPUT arguments, and whether it is a
    batch.

    Each argument is a movie path, a glob pattern (``*``, ``?``, ``[...]``, ``**``; quoted so
    that the shell leaves it alone, matched in sorted order) or ``@FILE``: a list file with one
    movie path or pattern per line (blank lines and lines starting with ``#`` are skipped;
    relative paths are relative to the list file's folder). A batch is more than one
    argument, a pattern or a list file, even if it names one movie. Repeated movies are run
    once.
    """
    movies: list[Path] = []
    batch = len(inputs) > 1

    def add(text: str, base: Path | None) -> None:
        nonlocal batch
        path = Path(text).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        if _GLOB.search(text) and not path.exists():
            batch = True
            found = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            if not found:
                raise ValueError(f"{text}: no movie matches this pattern")
            movies.extend(found)
        else:
            movies.append(path)

    for text in inputs:
        if text.startswith("@"):
            batch = True
            listing = Path(text[1:]).expanduser()
            try:
                lines = listing.read_text().splitlines()
            except OSError as err:
                raise ValueError(
                    f"{listing}: cannot read the list of movies ({err.strerror or err}); "
                    "expected a text file with one movie path per line"
                ) from None
            entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
            if not entries:
                raise ValueError(f"{listing}: lists no movie; expected one movie path per line")
            for entry in entries:
                add(entry, listing.parent)
        else:
            add(text, None)
    unique: dict[Path, Path] = {}
    for m in movies:
        unique.setdefault(Path(os.path.abspath(m)), m)
    return list(unique.values()), batch


def result_names(movies: list[Path]) -> list[str]:
    """A distinct result name per movie: the file name without suffix (``movie.tif`` ->
    ``movie``) or the folder name (``.../01`` -> ``01``), prefixed with as many parent folder
    names as needed to tell the movies apart (``Fluo-N2DH-SIM+/01`` -> ``Fluo-N2DH-SIM+_01``)."""

    def parts(m: Path) -> list[str]:
        m = Path(os.path.abspath(m))
        last = m.stem if m.suffix.lower() in (".tif", ".tiff") else m.name
        return [p for p in m.parent.parts if p not in ("/", "")] + [last]

    all_parts = [parts(m) for m in movies]
    depth = [1] * len(movies)
    while True:
        names = ["_".join(p[-d:]) for p, d in zip(all_parts, depth, strict=True)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1]
        grow = [i for i in clash if depth[i] < len(all_parts[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    if len(set(names)) < len(names):  # the same path twice, which expand_inputs prevents
        names = [f"{i:03d}_{name}" for i, name in enumerate(names)]
    return names


@dataclasses.dataclass
class BatchRow:
    """One movie of a batch: ``status`` is ``ok``, ``failed`` or ``not run`` (``ok`` with a
    message: finished by an earlier run, skipped with ``--resume``)."""

    movie: Path
    out: Path
    status: str = "not run"
    frames: int | None = None
    tracks: int | None = None
    seconds: float | None = None
    message: str = ""
    cell_diameter: float | None = None


def _one_line(err: BaseException) -> str:
    from .engine.modelfile import ModelFileError
    from .io.ctc import CTCFormatError

    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    known = (CTCFormatError, ModelFileError, OSError, ValueError)
    if isinstance(err, known) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run_batch(
    movies: list[Path],
    model,
    out: str | Path,
    *,
    save_embeddings: str | Path | None = None,
    report=None,
    **kw,
) -> list[BatchRow]:
    """Track many movies with one model: results in ``out/<name>_RES`` (names from
    :func:`result_names`), embeddings (if asked) in ``save_embeddings/<name>.zarr``.

    A movie that fails (any error) is recorded with its one-line message and the next one
    runs; ``report(row)`` is called after each movie. With ``resume=True`` movies whose
    result exists (and no interrupted run) are skipped and an interrupted one continues.
    Ctrl-C stops the batch: the movie being tracked is not written (its finished frames are
    kept for ``--resume``), the rows so far are returned with the others ``not run``
    (then KeyboardInterrupt is raised again by the caller's choice: see ``main``)."""
    from .engine.modelfile import LoadedModel, load_model
    from .engine.predict import resolve_device
    from .io.ctc import check_writable

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is a file; expected a folder for the results")
    check_writable(out / "x", least=0)
    emb_dir = None if save_embeddings is None else Path(save_embeddings)
    if emb_dir is not None:
        if emb_dir.exists() and not emb_dir.is_dir():
            raise FileExistsError(
                f"{emb_dir} exists and is a file; with several movies --save-embeddings names "
                "a folder"
            )
        check_writable(emb_dir / "x", least=0)
    if not isinstance(model, LoadedModel):
        model = load_model(model, device=resolve_device(kw.get("device", "auto")))
    rows = [
        BatchRow(movie, out / f"{name}_RES")
        for movie, name in zip(movies, result_names(movies), strict=True)
    ]
    for row in rows:
        start = time.perf_counter()
        emb = None if emb_dir is None else emb_dir / f"{row.out.name.removesuffix('_RES')}.zarr"
        finished = row.out.is_dir() and any(row.out.iterdir())
        if kw.get("resume") and finished and not partial_folder(row.out).exists():
            row.status, row.message = "ok", "finished before (--resume)"
            row.seconds = 0.0
            if report is not None:
                report(row)
            continue
        try:
            result = run_predict(row.movie, model, row.out, save_embeddings=emb, **kw)
        except KeyboardInterrupt:
            row.message = "interrupted"
            row.seconds = time.perf_counter() - start
            raise BatchInterrupted(rows) from None
        except Exception as err:  # a failed movie must not stop the others
            log.debug("movie %s failed", row.movie, exc_info=True)
            row.status, row.message = "failed", _one_line(err)
        else:
            row.status = "ok"
            row.frames, row.tracks = result.n_frames, len(result.lineage)
            row.cell_diameter = result.cell_diameter
            del result
        row.seconds = time.perf_counter() - start
        if report is not None:
            report(row)
    return rows


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch; ``rows`` holds the movies done so far."""

    def __init__(self, rows: list[BatchRow]) -> None:
        super().__init__()
        self.rows = rows


def _cells_column(row: BatchRow) -> str:
    """The cells' diameter the model was set to ("model": as trained; "-": not tracked)."""
    if row.frames is None:
        return "-"
    return "model" if row.cell_diameter is None else f"{row.cell_diameter:.0f}"


def format_summary(rows: list[BatchRow]) -> str:
    """The batch summary table: one line per movie, then a total line."""
    header = ("movie", "status", "frames", "tracks", "cells px", "seconds", "result or error")
    body = [
        (
            str(r.movie),
            r.status,
            "-" if r.frames is None else str(r.frames),
            "-" if r.tracks is None else str(r.tracks),
            _cells_column(r),
            "-" if r.seconds is None else f"{r.seconds:.1f}",
            str(r.out) if r.status == "ok" else r.message,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(6)]
    lines = [
        "  ".join(
            [
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line[:6], widths, strict=True))
            ]
            + [line[6]]
        ).rstrip()
        for line in [header, *body]
    ]
    ok = sum(r.status == "ok" for r in rows)
    failed = sum(r.status == "failed" for r in rows)
    total = f"{ok} of {len(rows)} movie(s) tracked, {failed} failed"
    if ok + failed < len(rows):
        total += f", {len(rows) - ok - failed} not run"
    return "\n".join([*lines, total])


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
        workers=args.workers,
        schedule=args.schedule,
    )
    if args.min_cell_to_noise is not None:
        augment = dataclasses.replace(cfg.augment, min_cell_to_noise=args.min_cell_to_noise)
        cfg = dataclasses.replace(cfg, augment=augment)
    if args.cell_gain is not None:
        if not 0.0 <= args.cell_gain <= 1.0:
            raise ValueError(f"--cell-gain must be a probability in [0, 1], got {args.cell_gain}")
        augment = dataclasses.replace(cfg.augment, p_cell_gain=args.cell_gain)
        cfg = dataclasses.replace(cfg, augment=augment)
    if args.contrast_range is not None:
        try:
            lo, hi = (float(v) for v in args.contrast_range.split(":"))
        except ValueError:
            lo = hi = float("nan")
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"--contrast-range must be LO:HI with 0 < LO <= HI <= 1, got {args.contrast_range}"
            )
        augment = dataclasses.replace(cfg.augment, contrast_range=(lo, hi))
        cfg = dataclasses.replace(cfg, augment=augment)
    if args.freeze_norm is not None:
        cfg = dataclasses.replace(cfg, freeze_norm=args.freeze_norm)
    if args.warp is not None:
        if not 0.0 <= args.warp <= 1.0:
            raise ValueError(f"--warp must be a probability in [0, 1], got {args.warp}")
        cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, p_warp=args.warp))
    return cfg


def run_train(args: argparse.Namespace) -> Path:
    from .engine import data as D
    from .engine.train import train

    cfg = train_config(args)
    if args.replay and not args.init:
        raise ValueError("--replay replays a starting model's results: give it with --init")
    sequences = [D.load_ctc_sequence(p) for p in args.data]
    if args.frames is not None:
        sequences = [D.keep_frames(s, args.frames) for s in sequences]
    if args.replay:
        try:
            sequences += _replays(sequences, args.init, args.device)
        except KeyboardInterrupt:
            print(
                "\ninterrupted while the starting model tracked the movies: nothing written",
                file=sys.stderr,
            )
            raise SystemExit(130) from None
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


def _replays(sequences: list, init: str, device: str) -> list:
    """``--replay``: the starting model's results on each sequence's frames away from its
    annotated (SEG) frames, tracked as ``embedtrack predict`` would (cell size measured)."""
    from .engine.modelfile import load_model
    from .engine.progress import run
    from .engine.replay import model_replay

    model = load_model(init, device="cpu")
    replays = []
    for seq in sequences:
        bar = _tqdm(seq.n_frames, f"replay {seq.name}", "frame")

        def show(p, bar=bar) -> None:
            if "frame" in p.info:  # the tracking's frames (not the cell-size estimate's)
                bar.update(p.done - bar.n)

        try:
            replay = run(model_replay(seq, model, device=device), show)
        finally:
            bar.close()
        if replay is None:
            print(
                f"{seq.name}: no frames to replay (its annotated frames cover it, or the "
                "starting model found no cells away from them)",
                file=sys.stderr,
            )
        else:
            frames = len(replay.seg_frames)
            print(
                f"{seq.name}: the starting model's results on {frames} frames replayed",
                file=sys.stderr,
            )
            replays.append(replay)
    return replays


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
def _proxy_text(px) -> str:
    """The card's new-movie proxy figures (``benchmarks/card_proxies.py``) in one clause."""
    if not (isinstance(px, dict) and isinstance(px.get("copies"), dict)):
        return ""

    def fig(x) -> str:  # a measure py-ctcmetrics could not compute is None
        return "-" if x is None else f"{x:.3f}"

    rows = ", ".join(
        f"{style} {fig(r.get('SEG'))}/{fig(r.get('TRA'))}/{fig(r.get('CT'))}/{r.get('tracks')}"
        for style, r in px["copies"].items()
    )
    return (
        f"; new-movie proxies ({px.get('data', '?')}, {px.get('truth_tracks', '?')} true "
        f"tracks; SEG/TRA/CT/tracks): {rows}"
    )


def run_models() -> list[dict]:
    from .engine.modelfile import list_models

    rows = []
    for m in list_models():
        v = m.card.validation
        val = {k: x for k, x in v.items() if isinstance(x, float)}
        frames = "; ".join(f"{k} frames {x}" for k, x in v.get("frames", {}).items())
        text = ", ".join(f"{k} {x:.3f}" for k, x in val.items()) or "-"
        if frames:
            text = f"best checkpoint {text} ({frames})"
        ctc = v.get("ctc")  # official scores on held-out frames (re-measured with the clean-up)
        if isinstance(ctc, dict):
            scores = ", ".join(f"{k} {ctc[k]:.3f}" for k in ("SEG", "DET", "TRA") if k in ctc)
            text += f"; CTC {scores} ({ctc.get('settings', '')})"
        text += _proxy_text(v.get("proxies"))
        d = m.card.cell_diameter
        cells = f"cells {d:.0f} px across" if d else "cell size unknown"
        rows.append(
            {
                "name": m.name,
                "kind": "shipped" if m.shipped else "user",
                "trained on": ", ".join(m.card.training.get("data", [])) or "?",
                "validation": text,
                "defaults": f"TTA {'on' if m.card.tta else 'off'}, "
                f"smoothing {m.card.smooth_sigma:g} px, {cells}",
                "path": str(m.path),
            }
        )
    return rows


def run_demo(out: str | Path, overwrite: bool = False) -> dict:
    """Track the bundled SIM+ clip with the shipped SIM+ model and score it."""
    from ._sample_data import CLIPS
    from .io import ctc

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

    pr = sub.add_parser(
        "predict",
        help="segment and track a movie (or many), write CTC results",
        description="Segment and track movies. One INPUT: --out is its results folder. "
        "Several INPUTs, a quoted glob pattern or @LIST (a file with one movie per line): a "
        "batch; --out is a folder that gets one NAME_RES results folder per movie, a failed "
        "movie is reported and the others run, and a summary table is printed at the end "
        "(exit status 1 if any movie failed).",
    )
    pr.add_argument(
        "input",
        nargs="+",
        help="CTC sequence folder (tNNN.tif) or TIFF stack; several, a quoted glob pattern "
        "('data/*/01', 'movies/*.tif') or @LIST for a batch",
    )
    pr.add_argument("--model", required=True, help="shipped model name or model folder")
    pr.add_argument(
        "--out",
        required=True,
        help="results folder (maskNNN.tif + res_track.txt); in a batch, the folder for the "
        "NAME_RES folders",
    )
    pr.add_argument(
        "--axes",
        type=_axes,
        default=None,
        help="the TIFF stack's axes, T (time), Y, X in order, e.g. TYX or YXT; needed when "
        "the file's metadata names another first axis (ImageJ/OME Z or C, RGB)",
    )
    pr.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation (8 flips/rotations, 8x slower); default: the model "
        "card's choice (embedtrack models shows it)",
    )
    pr.add_argument(
        "--smooth",
        type=float,
        default=None,
        metavar="SIGMA",
        help="Gaussian pre-filter of each frame, SD in the network's pixels (0: off); default: "
        "the model card's (it helps on dim, noisy movies; docs/models.md)",
    )
    pr.add_argument(
        "--cell-diameter",
        default=None,
        metavar="PX|auto|model",
        help="the movie's typical cell diameter in pixels; the model is set to it (frames "
        "resized for the network), for movies filmed at another magnification than its "
        "training movie. auto (default): estimated from three frames (nothing changes when "
        "the cells are of the model's size); model: the model as trained",
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
        help="also save the network outputs for inspection / re-clustering: a zarr store folder "
        "(float16, written frame by frame; FILE.npz: one .npz file instead); in a batch: a "
        "folder, one NAME.zarr per movie",
    )
    pr.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing result (and an interrupted run's finished frames)",
    )
    pr.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run (Ctrl-C, killed) of the same command from its last "
        "finished frame; the result equals an uninterrupted run's",
    )
    pr.add_argument(
        "--gt", metavar="SEQ_GT", help="score the result against this ground truth (one movie)"
    )
    pr.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the network and clustering on a dask.distributed cluster (tcp://host:port); "
        "the movie and --out must be on a filesystem every worker shares (docs/user-guide.md, "
        "Distributed runs); needs pip install napari-embedtrack[distributed]",
    )
    pr.add_argument(
        "--chunk-frames",
        type=_positive,
        default=None,
        metavar="N",
        help="with --scheduler: frames per task (default 32)",
    )

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
    tr.add_argument(
        "--schedule",
        choices=["steps", "time"],
        default="steps",
        help="learning-rate cycle over --steps (default) or over whichever of --steps and "
        "--max-minutes runs out first (time: a run given minutes still anneals)",
    )
    tr.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes drawing training crops (default: up to 8 on a GPU, none on a CPU)",
    )
    tr.add_argument(
        "--min-cell-to-noise",
        type=float,
        default=None,
        metavar="R",
        help="intensity augmentation keeps cells at least R background-noise SDs above the "
        "background (default: no cap; docs/models.md, session 6)",
    )
    tr.add_argument(
        "--cell-gain",
        type=float,
        default=None,
        metavar="P",
        help="probability that a training pair's cells each get their own brightness "
        "(0.08-1 of their contrast; default 0: off; docs/models.md, session 9)",
    )
    tr.add_argument(
        "--contrast-range",
        default=None,
        metavar="LO:HI",
        help="contrast above background that intensity augmentation draws from (uniform; "
        "default 0.08:1; docs/models.md, session 22)",
    )
    tr.add_argument(
        "--freeze-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the BatchNorm statistics (default: kept with --init, updated without)",
    )
    tr.add_argument(
        "--warp",
        type=float,
        default=None,
        metavar="P",
        help="probability that a training pair is deformed by a smooth random field (cell "
        "shapes the movie does not have; default 0: off; docs/models.md, session 15)",
    )
    tr.add_argument("--name", help="model name for the card (default: folder name)")
    tr.add_argument(
        "--replay",
        action="store_true",
        help="with --init: also train on the starting model's own results on the frames "
        "away from the annotated ones (used only where the start segments the held-out "
        "annotations well; docs/models.md, 'Fine-tuning with replay')",
    )
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
    from .engine.modelfile import ModelFileError
    from .io.ctc import CTCFormatError

    try:
        if args.command == "predict":
            return _predict_main(args)
        elif args.command == "train":
            out = run_train(args)
            print(f"best model written to {out}", file=sys.stderr)
        elif args.command == "evaluate":
            from .io.ctc import score_results

            print(json.dumps(score_results(args.gt, args.res)))
        elif args.command == "models":
            rows = run_models()
            if not rows:
                print("no models found")
            for r in rows:
                print(
                    f"{r['name']:<22} {r['kind']:<8} trained on: {r['trained on']}; "
                    f"validation: {r['validation']}\n{'':<31}defaults: {r['defaults']}\n"
                    f"{'':<31}{r['path']}"
                )
        elif args.command == "demo":
            print(json.dumps(run_demo(args.out, args.overwrite)))
        elif args.command == "benchmark":
            from .benchmark import main as benchmark_main

            benchmark_main(args)
    except (CTCFormatError, ModelFileError, OSError, ValueError) as err:
        print(f"embedtrack {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"embedtrack {args.command}: error: out of memory; expected a movie that fits "
            "(track fewer frames at a time with --frames, or crop or bin the frames)",
            file=sys.stderr,
        )
        return 2
    return 0


def _predict_main(args: argparse.Namespace) -> int:
    def warn(message: str) -> None:
        print(f"embedtrack predict: warning: {message}", file=sys.stderr)

    movies, batch = expand_inputs(args.input)
    kw = {
        "tta": args.tta,
        "device": args.device,
        "frames": args.frames or slice(None),
        "overwrite": args.overwrite,
        "axes": args.axes,
        "warn": warn,
        "resume": args.resume,
        "smooth_sigma": args.smooth,
        "cell_diameter": _cell_diameter(args.cell_diameter),
    }
    if args.chunk_frames is not None and not args.scheduler:
        raise ValueError("--chunk-frames needs --scheduler (frames per task on the cluster)")
    if args.scheduler:
        if args.resume:  # before connecting: say it at once
            raise ValueError(_RESUME_DISTRIBUTED)
        try:
            from .engine.distributed import connect

            client = connect(args.scheduler)
        except ImportError as e:
            raise ValueError(str(e)) from None
        kw.update(scheduler=client, chunk_frames=args.chunk_frames)
        try:
            return _predict_run(args, movies, batch, kw)
        finally:
            client.close()
    return _predict_run(args, movies, batch, kw)


def _predict_run(args: argparse.Namespace, movies: list[Path], batch: bool, kw: dict) -> int:
    if not batch:
        try:
            result = run_predict(
                movies[0], args.model, args.out, save_embeddings=args.save_embeddings, **kw
            )
        except KeyboardInterrupt:
            from .engine.checkpoint import RunCheckpoint

            kept = RunCheckpoint(partial_folder(args.out), {}).frames_done()
            print(
                f"\nembedtrack predict: interrupted; {kept} finished frame(s) kept in "
                f"{partial_folder(args.out)}: run the same command with --resume to continue",
                file=sys.stderr,
            )
            return 130
        n_tracks = len(result.lineage)
        print(
            f"wrote {result.n_frames} frames, {n_tracks} tracks to {args.out}",
            file=sys.stderr,
        )
        if args.gt:
            from .io.ctc import score_results

            print(json.dumps(score_results(args.gt, args.out)))
        return 0
    if args.gt:
        raise ValueError(
            "--gt scores one movie; for a batch run embedtrack evaluate on each result folder"
        )

    def report(row: BatchRow) -> None:
        if row.status == "ok":
            print(
                f"{row.movie}: wrote {row.frames} frames, {row.tracks} tracks to {row.out}",
                file=sys.stderr,
            )
        else:
            print(f"embedtrack predict: error: {row.movie}: {row.message}", file=sys.stderr)

    try:
        rows = run_batch(
            movies, args.model, args.out, save_embeddings=args.save_embeddings, report=report, **kw
        )
    except BatchInterrupted as stop:
        print(format_summary(stop.rows))
        print("embedtrack predict: interrupted", file=sys.stderr)
        return 130
    print(format_summary(rows))
    return 0 if all(r.status == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
