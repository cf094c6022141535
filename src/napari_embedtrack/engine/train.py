"""Training and fine-tuning (paper, section 4.3), as a generator of progress records.

``train(sequences, out_dir, config)`` yields :class:`~.progress.Progress` per step (loss parts,
learning rate, ETA) and per validation (SEG and TRA on the held-out frames of each sequence,
as they are and as a dim, noisy copy), keeps the best model in ``out_dir``
(``weights.safetensors`` + ``card.json``), a resumable ``checkpoint.pt`` and ``history.json``,
and returns the path of the best model. Stopping early (``should_stop()`` true,
KeyboardInterrupt, or closing the generator) saves a checkpoint first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import data as D
from .cluster import cluster
from .link import Linker
from .losses import LossWeights, embedtrack_loss
from .metrics import seg_score
from .model import build_model
from .modelfile import ModelCard, disc_diameter, load_model, save_model
from .pipeline import default_cluster_params
from .postprocess import add_dim_rims, finish_tracks, seediness_u8
from .predict import (
    SCALE_RANGE,
    _Background,
    auto_amp,
    check_scale,
    iter_outputs,
    resolve_device,
)
from .progress import Progress
from .proxy import restyle_movie

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"


@dataclass
class TrainConfig:
    """Training settings (stored in the model card).

    Attributes:
        steps: optimiser steps; if 0, ``epochs`` x steps per epoch.
        epochs: epochs when ``steps`` is 0. An epoch draws as many crops as it takes to cover
            the later frame of every training pair once, at the scale trained at: when
            fine-tuning with replay, counted once replay is decided (replayed results left
            out add no steps; a refitted scale changes the crops a frame takes).
        batch_size: pairs per step.
        crop_size: crop edge (px); also the model's tile size at inference.
        scale: image scale the model works at (frames are resized by it for training and
            prediction; 0.5 suits cells of ~100 px and more). None: 1.0 for a new model;
            when fine-tuning, the initial model's scale, set (as prediction's
            ``--cell-diameter`` does) so that it sees the training masks' cells at the size
            it was trained on when they are 5 % smaller or 10 % larger or more.
        lr: peak learning rate of the one-cycle schedule (Adam).
        weight_decay: Adam weight decay.
        val_fraction: tail fraction of each sequence's frames held out for validation.
        val_window: (start, stop) frames held out for validation in every sequence instead
            of the tail (e.g. a stretch with many annotated cells); or a mapping from a
            sequence name (``Fluo-N2DH-GOWT1/01``) or dataset name (``Fluo-N2DH-GOWT1``) to
            its window, the other sequences using the tail; None: the tail everywhere.
        val_every: validate every this many steps (0: once per epoch).
        checkpoint_every: save a checkpoint every this many steps.
        max_seconds: stop (validate, save, checkpoint) after this much training time; 0: no
            limit. The learning-rate schedule spans ``steps`` (``schedule="steps"``) or
            whichever of ``steps`` and ``max_seconds`` runs out first (``"time"``).
        schedule: ``"steps"``: one-cycle over ``steps`` (a run stopped by ``max_seconds``
            stops wherever the cycle is); ``"time"``: the same cycle over the fraction done
            of steps or of ``max_seconds``, whichever is larger, so a run given minutes
            rather than steps (on a machine of unknown speed) still anneals.
        seed: random seed (crops, augmentation, initialisation).
        device: auto, cpu, cuda or mps.
        amp: bf16 autocast on CPU / fp16 on CUDA (None: on where supported).
        dropout: encoder dropout.
        augment: augmentation settings.
        loss: loss weights.
        train_parts: ``"all"`` or ``"decoders"`` (the shared encoder frozen; its BatchNorm
            statistics too): which parts of the network learn.
        anchor: fine-tuning only: weight of a penalty ``anchor * sum((w - w_start)**2)``
            keeping the weights near the starting model (against forgetting); 0: off.
        workers: processes that draw and augment training crops (torch DataLoader
            workers; each has its own random stream). 0: one background thread in this
            process. None: up to 8 on a GPU (one crop costs 30-50 ms of CPU, a GPU step of
            16 crops a few ms), 0 on a CPU (the cores are busy with the network).
        replay_share: fine-tuning with replay: the fraction of the training pairs drawn
            from the replayed sequences where they are used; None: as the pairs' weights
            fall (by frame: with SIM+ 01's first five frames corrected and 40 replayed,
            94 % replayed). Half gave better lineages on one case and worse on another
            (docs/models.md, "Fine-tuning with replay"), so it is not the default.
        freeze_norm: keep the BatchNorm layers' running statistics as they are (they are
            updated by every training step otherwise: two steps at a learning rate of
            1e-12 moved the SIM+ model's SEG on GOWT1 01's dim copy from 0.58 to 0.46).
            On in the fine-tuning recipe (:meth:`for_finetuning`): over seven paired
            fine-tunes (three seeds of GOWT1 on MSC, four runs of GOWT1 on SIM+) SEG / TRA /
            CT +0.004 / +0.015 / +0.026 on average, +0.014 / +0.032 / +0.036 on MSC with a
            third of the spread of SEG between seeds (docs/models.md, "Fine-tuning with
            replay"). Off for training from scratch, where the statistics are learnt.
    """

    steps: int = 0
    epochs: int = 15
    batch_size: int = 4
    crop_size: int = 256
    scale: float | None = None
    lr: float = 5e-4
    weight_decay: float = 1e-5
    val_fraction: float = 0.1
    val_window: tuple[int, int] | dict[str, tuple[int, int]] | None = None
    val_every: int = 0
    checkpoint_every: int = 100
    max_seconds: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    dropout: float = 0.3
    augment: D.AugmentConfig = field(default_factory=D.AugmentConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    train_parts: str = "all"
    anchor: float = 0.0
    replay_share: float | None = None
    freeze_norm: bool = False
    workers: int | None = None
    schedule: str = "steps"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_finetuning(cls, **overrides) -> TrainConfig:
        """The fine-tuning recipe (issue #14): small steps, a time budget, frequent
        validation. ``train(..., init=MODEL)`` also keeps the starting model unless a
        fine-tuned checkpoint beats it on the held-out corrections (the stop rule).

        - learning rate 1e-4 (the from-scratch 5e-4 made the SIM+ model worse on SIM+ 02),
          one-cycle over at most 300 steps, stopped after 10 minutes;
        - validation every 50 steps on a fifth of the corrected frames (at least one),
          or, with too few, on dim noisy copies of the training frames;
        - the from-scratch augmentation (intensity, noise, blur, scale, flips), which
          widens a handful of frames;
        - the starting model's BatchNorm statistics kept (``freeze_norm``): a few
          corrected frames' crops are a poor estimate of a movie's.
        """
        base = {
            "steps": 300,
            "lr": 1e-4,
            "max_seconds": 600.0,
            "val_every": 50,
            "val_fraction": 0.2,
            "freeze_norm": True,
        }
        return cls(**{**base, **overrides})


def _amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CPUs and on GPUs that support it (no loss scaling needed), else fp16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16 if device.type in ("cpu", "cuda") else torch.float16


def _prefetch(
    sampler: D.PairSampler, batch_size: int, depth: int = 2
) -> Generator[dict, None, None]:
    """Batches from a background thread, ``depth`` ahead (crop sampling, augmentation and
    medoids take ~50 ms a sample on the main thread otherwise). One producer, so the order
    of the crops is the sampler's own; closing the generator stops the thread; an error in
    the sampler is raised here."""

    def batches() -> Generator[dict, None, None]:
        while True:
            yield D.collate([sampler.sample() for _ in range(batch_size)])

    background = _Background(batches(), depth=depth, name="embedtrack-crops")
    try:
        yield from background
    finally:
        background.close()


class TimedOneCycle:
    """One-cycle learning rate (and Adam beta1) as a function of the fraction of training
    done, as ``torch.optim.lr_scheduler.OneCycleLR`` computes it over steps (cosine, 30 %
    warm-up from lr / 25, annealing to lr / 25e4; beta1 0.95 -> 0.85 -> 0.95)."""

    def __init__(self, opt: torch.optim.Optimizer, max_lr: float, pct_start: float = 0.3):
        self.opt, self.max_lr, self.pct = opt, max_lr, pct_start
        self.step(0.0)

    @staticmethod
    def _cos(start: float, end: float, frac: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * frac) + 1.0)

    def step(self, done: float) -> None:
        done = min(max(done, 0.0), 1.0)
        lo, hi = self.max_lr / 25.0, self.max_lr
        if done < self.pct:
            f = done / self.pct
            lr, beta = self._cos(lo, hi, f), self._cos(0.95, 0.85, f)
        else:
            f = (done - self.pct) / (1.0 - self.pct)
            lr, beta = self._cos(hi, lo / 1e4, f), self._cos(0.85, 0.95, f)
        for g in self.opt.param_groups:
            g["lr"] = lr
            g["betas"] = (beta, g["betas"][1])
        self._last = [lr]

    def get_last_lr(self) -> list[float]:
        return self._last

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, _state: dict) -> None:
        pass


def auto_workers(device: torch.device) -> int:
    """Crop workers for ``TrainConfig.workers=None``: up to 8 on a GPU (all cores but
    one), none on a CPU."""
    if device.type == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class _CropStream(torch.utils.data.IterableDataset):
    """Endless batches from a :class:`PairSampler`, one random stream per worker."""

    def __init__(self, sampler: D.PairSampler, batch_size: int, seed: int, step: int):
        self.sampler, self.batch_size, self.seed, self.step = sampler, batch_size, seed, step

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        self.sampler.rng = np.random.default_rng([self.seed, self.step, worker])
        while True:
            yield D.collate([self.sampler.sample() for _ in range(self.batch_size)])


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # crops use torch's resize; the workers are the parallelism


def _batches(
    sampler: D.PairSampler,
    batch_size: int,
    workers: int,
    device: torch.device,
    seed: int,
    step: int,
) -> Generator[dict, None, None]:
    """Training batches: from ``workers`` DataLoader processes, or (0) one prefetch thread."""
    if workers <= 0:
        yield from _prefetch(sampler, batch_size)
        return
    loader = torch.utils.data.DataLoader(
        _CropStream(sampler, batch_size, seed, step),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4,
        pin_memory=device.type == "cuda",
        worker_init_fn=_one_thread,
    )
    it = iter(loader)
    try:
        while True:
            yield next(it)
    finally:
        del it  # stops the worker processes


def _mask_sizes(sequences: list[D.TrainingSequence]) -> np.ndarray:
    """Areas of all training masks (px)."""
    sizes = []
    for s in sequences:
        for t in s.seg_frames:
            c = np.bincount(s.seg[t].ravel())[1:]
            sizes.append(c[c > 0])
    return np.concatenate(sizes) if sizes else np.zeros(0)


def _scale_for_cells(card: ModelCard, sizes: np.ndarray) -> float:
    """The image scale at which a starting model (``card``) sees the training masks'
    cells (``sizes``: their areas) at the size it was trained on: its own scale when they
    are of that size within :data:`~.cellsize.TOLERANCE`, or it does not know it, or there
    are no masks; else scaled as :meth:`~.modelfile.LoadedModel.with_cell_diameter` does
    for prediction (a model fine-tuned on a movie filmed at another magnification)."""
    from .cellsize import within_tolerance

    own = card.cell_diameter
    if own <= 0 or sizes.size == 0:
        return card.scale
    diameter = float(disc_diameter(np.median(sizes)))
    if within_tolerance(diameter, own):
        return card.scale
    lo, hi = SCALE_RANGE
    scale = min(max(card.scale * own / diameter, lo), hi)
    log.info(
        "training cells are ~%.0f px across, the starting model's %.0f px: training at "
        "image scale %.3g (was %.3g)", diameter, own, scale, card.scale
    )  # fmt: skip
    return scale


#: Replay (the starting model's own results trained on beside corrections) only where the
#: starting model segments the held-out corrections at least this well (SEG): the GOWT1
#: model's results on MSC 01 (SEG 0.38 on the corrections) replayed made fine-tuning lose
#: 0.04 SEG on the later frames instead of gaining 0.22; on SIM+ 01 (0.90) and GOWT1 01
#: (0.74-0.79) replay kept or gained (docs/models.md, "Fine-tuning with replay").
REPLAY_MIN_SEG = 0.6


def _gate_replay(sequences, sampler: D.PairSampler, card: ModelCard, start: dict) -> bool:
    """Leave the replayed sequences out of the training pairs when the starting model
    segments the held-out corrections worse than :data:`REPLAY_MIN_SEG` (its results are
    not worth keeping), and say so in the card. True when replayed sequences are used."""
    replays = {i for i, s in enumerate(sequences) if s.replay}
    if not replays:
        return False
    seg = next((start[k] for k in ("SEG_plain", "SEG_hard") if k in start), None)
    if seg is not None and seg >= REPLAY_MIN_SEG:
        card.training["replay"] = (
            f"used: the starting model's SEG on the corrections {seg:.3f}; the cells' size "
            "from the corrections and the replayed results"
        )
        return True
    sampler.keep_sequences(set(range(len(sequences))) - replays)
    card.training.pop("replayed_frames", None)
    why = "no SEG" if seg is None else f"SEG {seg:.3f}, below {REPLAY_MIN_SEG}"
    card.training["replay"] = (
        f"not used: the starting model's results are not worth keeping ({why} on the "
        "held-out corrections)"
    )
    log.warning("replay %s", card.training["replay"])
    return False


def _min_size(sequences: list[D.TrainingSequence]) -> int:
    """Half the 1% percentile of the training mask sizes (paper, section 3.3)."""
    allv = _mask_sizes(sequences)
    return max(int(np.percentile(allv, 1) / 2), 4) if allv.size else 20


def _val_windows(
    val_window: tuple[int, int] | dict[str, tuple[int, int]] | None,
    sequences: list[D.TrainingSequence],
) -> list[tuple[int, int] | None]:
    """Each sequence's validation window from ``TrainConfig.val_window``."""
    if not isinstance(val_window, dict):
        return [val_window for _ in sequences]
    dataset = {s.name: s.name.split("/")[0] for s in sequences}
    unknown = sorted(set(val_window) - set(dataset) - set(dataset.values()))
    if unknown:
        raise ValueError(
            f"validation frames given for {', '.join(unknown)}, which is not among the "
            f"training sequences ({', '.join(s.name for s in sequences)})"
        )
    return [val_window.get(s.name, val_window.get(dataset[s.name])) for s in sequences]


#: Validation styles: the held-out frames as they are, a dimmer, noisier copy and a copy with
#: cells of unequal brightness (:mod:`.proxy`), which predicted new movies better than the
#: frames themselves (issue #13; ``uneven`` came closest to three new movies, docs/models.md).
VALIDATION_STYLES = ("plain", "hard", "uneven")
#: The measures scored per style (``SEG_plain``, ``CT_hard``, ...): SEG on the held-out masks,
#: TRA and CT (complete tracks) on the held-out window.
VALIDATION_MEASURES = ("SEG", "TRA", "CT")
#: The tracking measures among them, scored on consecutive held-out frames.
_TRACKING_MEASURES = VALIDATION_MEASURES[1:]


def _window_tracking(
    s: D.TrainingSequence, frames: list[int], tracked: np.ndarray, lineage: np.ndarray
) -> dict[str, float] | None:
    """Official TRA and CT (py-ctcmetrics) of tracked labels on consecutive frames of a
    sequence; the sequence's known cell pixels (masks or markers) are the reference, on the
    longest run of at least two consecutive frames that are not wholly unknown (corrections
    spread over a movie leave the frames between them unknown: scored against nothing, a
    model's cells there were all false, TRA 0). On frames where only some cells are known
    (:meth:`~.data.TrainingSequence.partial_frames`) the cells found away from them are left
    out, not counted false. None when there is no such run or it holds no reference."""
    from ..io import ctc
    from ..io.tracks import consistent_tracks, lineage_from_labels

    if len(frames) < 2 or frames != list(range(frames[0], frames[-1] + 1)):
        return None
    runs: list[list[int]] = []
    known = s.known_frames()
    for i, t in enumerate(frames):
        if not known[t]:
            continue
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    run = max(runs, key=len, default=[])
    if len(run) < 2:
        return None
    if len(run) < len(frames):  # the results clipped to the run, renumbered from 0
        lo, hi = run[0], run[-1] + 1
        clipped = ctc.GroundTruth(tra=tracked, seg={}, lineage=lineage).select_frames(lo, hi)
        frames, tracked, lineage = frames[lo:hi], clipped.tra, clipped.lineage
    partial = s.partial_frames()[frames]
    if partial.any():  # cells found beside a partial correction: not scored (not false)
        tracked = np.array(tracked, copy=True)
        for i in np.flatnonzero(partial):
            found = tracked[i]
            seen = np.unique(found[s.track[frames[i]] > 0])
            found[(found > 0) & ~np.isin(found, seen)] = 0
        tracked, lineage = consistent_tracks(tracked, lineage)
    tra = s.track[frames].astype(np.uint16)
    gt = lineage_from_labels(tra)
    if gt.size == 0:
        return None
    present = {int(r[0]): (int(r[1]), int(r[2])) for r in gt}
    for r in gt:
        p = s.parents.get(int(r[0]), 0)
        if p in present and present[p][1] == r[1] - 1:
            r[3] = p
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ctc.write_ground_truth(Path(tmp) / "GT", tra, gt)
            ctc.write_results(Path(tmp) / "RES", tracked, lineage)
            scores = ctc.evaluate(Path(tmp) / "GT", Path(tmp) / "RES", _TRACKING_MEASURES)
        return {k: float(scores[k]) for k in _TRACKING_MEASURES}
    except (ctc.CTCFormatError, ValueError) as err:  # a reference the evaluator rejects
        log.warning("validation TRA/CT of %s skipped: %s", s.name, err)
        return None


def validate(
    net: torch.nn.Module,
    card: ModelCard,
    sequences: list[D.TrainingSequence],
    val_frames: list[list[int]],
    device: torch.device,
    styles: tuple[str, ...] = VALIDATION_STYLES,
) -> dict[str, float]:
    """SEG on the validation frames with full masks, TRA and CT (complete tracks) on the
    validation window, on the frames as they are and on re-styled copies
    (:data:`VALIDATION_STYLES`; no TTA).

    ``score``, which picks the best checkpoint, is the mean of all of them: a model that
    segments well but fragments tracks (pieces, false divisions) does not win on SEG alone,
    and CT sees broken lineages that TRA barely does (issue #13).
    """
    params = default_cluster_params(card)
    result: dict[str, float] = {}
    for style in styles:
        refs, preds, tras, cts = [], [], [], []
        for s, frames in zip(sequences, val_frames, strict=True):
            seg_frames = set(s.seg_frames)
            if not frames:
                continue
            movie = s.image[frames]
            if style != "plain":
                movie = restyle_movie(movie, style, labels=s.track[frames])
            linker = Linker()
            tracked, seeds = [], []
            outs = iter_outputs(
                net,
                movie,
                **card.input_kwargs,
                tta=False,
                device=device,
            )
            for i, (t, out) in enumerate(zip(frames, outs, strict=True)):
                labels = cluster(out.seediness, out.bandwidth, out.offsets, params)
                tracked.append(linker.add(labels, out.track_offsets if i else None))
                seeds.append(seediness_u8(out.seediness))
                if t in seg_frames:  # masks as the pipeline gives them (dim-cell rims added)
                    preds.append(add_dim_rims(labels, seeds[-1], params.grow_dim))
                    refs.append(s.seg[t])
            tr, lin = finish_tracks(np.stack(tracked), linker.lineage, params, np.stack(seeds))
            scores = _window_tracking(s, list(frames), tr, lin)
            if scores is not None:
                tras.append(scores["TRA"])
                cts.append(scores["CT"])
        if refs:
            result[f"SEG_{style}"] = seg_score(refs, preds)
        if tras:
            result[f"TRA_{style}"] = float(np.mean(tras))
            result[f"CT_{style}"] = float(np.mean(cts))
    if result:
        result["score"] = float(np.mean(list(result.values())))
    return result


def _atomic_torch_save(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train(
    sequences: list[D.TrainingSequence],
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    init: str | Path | None = None,
    resume: bool = False,
    name: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[Progress, None, Path]:
    """Train (or fine-tune from ``init``) on training sequences; see the module docstring.

    Args:
        sequences: training data (see :mod:`.data`).
        out_dir: model folder to write (best model, checkpoint, history).
        config: settings; default :class:`TrainConfig`.
        init: a model name or folder to start from (fine-tuning); its card's crop size,
            grid spacing and percentiles are kept.
        resume: continue from ``out_dir/checkpoint.pt``.
        name: model name for the card (default: the folder name).
        should_stop: polled every step; when it returns True, a checkpoint is saved and the
            generator returns.

    Returns:
        ``out_dir`` (holding the best model).
    """
    cfg = config or TrainConfig()
    scale = None if cfg.scale is None else check_scale(cfg.scale)
    if cfg.schedule not in ("steps", "time"):
        raise ValueError(f"schedule must be 'steps' or 'time', got {cfg.schedule!r}")
    if cfg.replay_share is not None and not 0.0 < cfg.replay_share < 1.0:
        raise ValueError(f"replay_share must lie between 0 and 1, got {cfg.replay_share}")
    if cfg.schedule == "time" and not cfg.max_seconds:
        raise ValueError("schedule 'time' needs a time budget (max_seconds / --max-minutes)")
    train_frames, val_frames = [], []  # split first: a bad window must not leave a folder
    windows = _val_windows(cfg.val_window, sequences)
    if sequences and all(s.replay for s in sequences):
        raise ValueError("replayed results need corrections beside them: nothing to validate on")
    if init is None and any(s.replay for s in sequences):
        raise ValueError("replayed results are a starting model's own: give the model (init)")
    for s, window in zip(sequences, windows, strict=True):
        if s.replay:  # the starting model's own results: trained on, never validated on
            tr, va = list(range(1, s.n_frames)), []
        else:
            tr, va = D.split_frames(s.n_frames, cfg.val_fraction, s.seg_frames, window)
            # frames of which nothing is known at the window's ends are not validated on
            # (spread corrections: SIM+ 01 corrected at 0/16/32/48/64 held out 52-64 to
            # score frame 64)
            has = s.known_frames()
            known = [t for t in va if has[t]]
            va = va[va.index(known[0]) : va.index(known[-1]) + 1] if known else va
        train_frames.append(tr)
        val_frames.append(va)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    amp = cfg.amp if cfg.amp is not None else auto_amp(device)
    amp_dtype = _amp_dtype(device)
    # fp16 needs loss scaling (most output gradients lie below its normal range); bf16 not
    scaler = torch.amp.GradScaler(
        device.type, enabled=amp and amp_dtype == torch.float16 and device.type == "cuda"
    )

    if init is not None:
        base = load_model(init)
        net = base.net
        card = dataclasses.replace(base.card)
        card.training = {"init": str(init), "init_training": base.card.training}
    else:
        net = build_model(dropout=cfg.dropout)
        card = ModelCard(crop_size=cfg.crop_size, grid_spacing=1.0 / (cfg.crop_size - 1))
    if scale is not None:
        card.scale = scale
    start_card = base.card if init is not None else None

    def fit_cells(with_replay: bool) -> bool:
        """Set the card's cell size, minimum size and (fine-tuning at no given scale) the
        training scale from the training masks: the person's labels only, or with the
        starting model's replayed results too (once they are known to be good: a poor
        start's results may be pieces of cells). True when the card changed."""
        masks = [s for s in sequences if with_replay or not s.replay]
        before = (card.scale, card.min_size, card.cell_size)
        if scale is None and start_card is not None:  # the start sees cells at its size
            card.scale = _scale_for_cells(start_card, _mask_sizes(masks))
        if init is None or any(s.seg_frames for s in masks):
            card.min_size = _min_size(masks)  # from the masks the model is trained on
            sizes = _mask_sizes(masks)
            card.cell_size = int(np.median(sizes)) if sizes.size else card.cell_size
        return (card.scale, card.min_size, card.cell_size) != before

    timed = cfg.schedule == "time"

    def make_sampler() -> D.PairSampler:
        # crops come from the sequences at the model's scale; validation on the originals
        scaled = [D.rescale_sequence(s, card.scale) for s in sequences]
        return D.PairSampler(scaled, train_frames, card.crop_size, cfg.augment, cfg.seed)

    def use_replay(start: dict) -> bool:
        """Replay decided on the starting model's figures (:func:`_gate_replay`); where
        used, the card fitted to the replayed results' cells too and the replayed pairs
        given their share. True when that changed the card (a new sampler, and the start
        is to be validated again)."""
        nonlocal sampler, per_epoch, total, val_every, sched
        used = _gate_replay(sequences, sampler, card, start)
        refit = used and fit_cells(with_replay=True)
        if refit:
            sampler = make_sampler()
        if used and cfg.replay_share is not None:
            sampler.set_share({i for i, s in enumerate(sequences) if s.replay}, cfg.replay_share)
        if not cfg.steps:  # an epoch of the pairs drawn from, at the scale trained at
            before = total
            per_epoch, total, val_every = plan()
            sched = make_schedule()
            if total != before:
                log.info("training %d steps (%d per epoch)", total, per_epoch)
        return refit

    card.name = name or out_dir.name
    card.dropout = cfg.dropout if init is None else card.dropout
    fit_cells(with_replay=False)
    memory_format = torch.channels_last if amp or device.type == "cuda" else torch.contiguous_format
    net.to(device).to(memory_format=memory_format)

    def plan() -> tuple[int, int, int]:
        """Steps per epoch (crops covering the later frame of every pair drawn from, at
        the model's scale), total steps and the validation interval."""
        size = [s.image.shape[1] * s.image.shape[2] for s in sampler.sequences]
        crops = sum(math.ceil(size[i] / card.crop_size**2) for i, _ in sampler.pairs)
        per_epoch = max(1, math.ceil(crops / cfg.batch_size))
        return per_epoch, cfg.steps or cfg.epochs * per_epoch, cfg.val_every or per_epoch

    def make_schedule():
        if timed:
            return TimedOneCycle(opt, cfg.lr)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)

    sampler = make_sampler()
    per_epoch, total, val_every = plan()
    if cfg.train_parts not in ("all", "decoders"):
        raise ValueError(f"train_parts must be 'all' or 'decoders', got {cfg.train_parts!r}")
    frozen = net.encoder if cfg.train_parts == "decoders" else None
    if frozen is not None:
        frozen.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    norms = (
        [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if cfg.freeze_norm
        else []
    )
    start_weights = (
        [p.detach().clone() for p in params] if init is not None and cfg.anchor > 0 else None
    )
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_schedule()
    step, best, history, seconds = 0, -1.0, [], 0.0
    ckpt_path = out_dir / CHECKPOINT
    card.training.update(
        {
            "data": [s.name for s in sequences],
            "labels": "SEG masks where annotated; TRA markers for tracking; unknown pixels "
            "around unannotated markers ignored",
            "config": cfg.to_dict(),
            "device": str(device),
            "torch": torch.__version__,
        }
    )
    if replayed := {s.name: [int(t) for t in s.seg_frames] for s in sequences if s.replay}:
        card.training["replayed_frames"] = replayed  # the starting model's own results
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"{ckpt_path}: no checkpoint to resume from")
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        if (out_dir / HISTORY).is_file():
            history = json.loads((out_dir / HISTORY).read_text())["history"]
        # replay as decided before the stop (no start figures: no SEG, not used): it sets
        # the scale, the pairs drawn from and so an epoch's steps
        start = history[0] if history and history[0].get("step") == 0 else {}
        use_replay(start.get("gate", start))
        if ck["total"] != total:
            raise ValueError(
                f"{ckpt_path}: checkpoint was made for {ck['total']} steps, not {total}; "
                "resume with the same --steps/--epochs"
            )
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, best, seconds = int(ck["step"]), float(ck["best"]), float(ck["seconds"])
        sampler.rng = np.random.default_rng([cfg.seed, step])
        torch.manual_seed(cfg.seed + step)

    def save_checkpoint() -> None:
        _atomic_torch_save(
            {
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "total": total,
                "best": best,
                "seconds": seconds,
            },
            ckpt_path,
        )
        (out_dir / HISTORY).write_text(json.dumps({"history": history}, indent=1))

    def finish_card(metrics: dict) -> None:
        card.training.update(
            {
                "steps": step,
                "total_steps": total,
                "epochs": round(step / per_epoch, 2),
                "seconds": round(seconds, 1),
            }
        )
        card.validation = {
            **{k: round(v, 4) for k, v in metrics.items()},
            **(
                {"start": {k: round(v, 4) for k, v in start_metrics.items()}}
                if start_metrics
                else {}
            ),
            "frames": {
                s.name: f"{v[0]}-{v[-1]}" for s, v in zip(sequences, val_frames, strict=True) if v
            },
            "step": step,
        }

    log.info("training %d steps (%d per epoch) on %s", total, per_epoch, device)
    styles = VALIDATION_STYLES
    if not any(
        t in set(s.seg_frames) for s, v in zip(sequences, val_frames, strict=True) for t in v
    ):
        if init is not None and any(s.seg_frames for s in sequences):
            # too few corrections to hold some out: validate on dim noisy copies of the
            # corrected training frames (the last four of each sequence, to keep it quick),
            # so the stop rule still has something to go on
            val_frames = [[] if s.replay else [t for t in tr if t in set(s.seg_frames)][-4:]
                          for s, tr in zip(sequences, train_frames, strict=True)]  # fmt: skip
            styles = ("hard",)
            log.warning("no held-out frames with masks: validating on re-styled training frames")
        else:
            log.warning("no validation frames with masks: the last model is kept")

    def validation() -> dict[str, float]:
        return validate(net, card, sequences, val_frames, device, styles)

    start_metrics: dict[str, float] | None = None
    if init is not None and not resume:
        # the stop rule: the starting model is the one to beat
        start_metrics = gate = validation()
        if use_replay(gate):
            # the start's results are good: their cells (the whole movie's, where the
            # corrections may be its first frames only) set the size; the start is the one
            # to beat at that size
            start_metrics = validation()
        if "score" in start_metrics:
            best = start_metrics["score"]
            # the figures replay was decided on, for a resumed run to decide the same
            kept = {"gate": gate} if gate is not start_metrics else {}
            history.append({"step": 0, "seconds": 0.0, **start_metrics, **kept})
            card.training["outcome"] = (
                "no fine-tuned checkpoint beat the starting model on the validation frames: "
                "these are the starting model's weights"
            )
            finish_card(start_metrics)
            save_model(out_dir, net, card)
            yield Progress(
                0,
                total,
                "starting model: " + ", ".join(f"{k} {v:.3f}" for k, v in start_metrics.items()),
                {"validation": start_metrics, "start": True},
            )
    t_start = time.perf_counter() - seconds
    running = None
    workers = cfg.workers if cfg.workers is not None else auto_workers(device)
    batches = _batches(sampler, cfg.batch_size, workers, device, cfg.seed, step)
    try:
        while step < total:
            if should_stop is not None and should_stop():
                save_checkpoint()
                return out_dir
            net.train()
            if frozen is not None:
                frozen.eval()  # frozen encoder: keep its BatchNorm statistics and no dropout
            for m in norms:  # BatchNorm statistics kept as they are (cfg.freeze_norm)
                m.eval()
            batch = next(batches)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            img = batch["image"].to(memory_format=torch.contiguous_format)
            prev = img[:, 0:1].contiguous(memory_format=memory_format)
            cur = img[:, 1:2].contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                seg_t, seg_prev, trk = net(cur, prev)
            loss, parts = embedtrack_loss(seg_t, seg_prev, trk, batch, card.grid_spacing, cfg.loss)
            if start_weights is not None:
                drift = sum(
                    ((p - w) ** 2).sum() for p, w in zip(params, start_weights, strict=True)
                )
                loss = loss + cfg.anchor * drift
                parts["drift"] = float(drift.detach())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            scaler.step(opt)
            scaler.update()
            step += 1
            seconds = time.perf_counter() - t_start
            if timed:
                sched.step(max(step / total, seconds / cfg.max_seconds))
            else:
                sched.step()
            lv = float(loss.detach())
            running = lv if running is None else 0.95 * running + 0.05 * lv
            eta = seconds / step * (total - step) if step else 0.0
            info = {
                "loss": lv,
                "smoothed_loss": running,
                "lr": sched.get_last_lr()[0],
                "eta": eta,
                **parts,
            }
            yield Progress(step, total, f"step {step}/{total} loss {running:.3f}", info)
            timed_out = bool(cfg.max_seconds) and seconds >= cfg.max_seconds
            is_val = step % val_every == 0 or step == total or timed_out
            if is_val:
                metrics = validation()
                history.append(
                    {"step": step, "seconds": round(seconds, 1), "loss": running, **metrics}
                )
                score = metrics.get("score")
                if score is None or score > best:  # no validation: keep the last model
                    best = best if score is None else score
                    if start_metrics is not None and score is not None:
                        card.training["outcome"] = (
                            f"fine-tuned: step {step} beat the starting model "
                            f"(score {score:.3f} vs {start_metrics['score']:.3f})"
                        )
                    finish_card(metrics)
                    save_model(out_dir, net, card)
                yield Progress(
                    step,
                    total,
                    "validation " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()),
                    {"validation": metrics},
                )
            if is_val or step % cfg.checkpoint_every == 0:
                save_checkpoint()
            if timed_out:
                log.info("time budget of %s s reached at step %s", cfg.max_seconds, step)
                break
    except (KeyboardInterrupt, GeneratorExit):
        save_checkpoint()
        raise
    finally:
        batches.close()
    return out_dir
