"""Score a tracking result held in memory against ground truth held in memory (the viewer's
evaluation, issue #17), with exactly what ``embedtrack evaluate`` computes.

Qt-free. :func:`iter_evaluate` writes both as CTC folders into a temporary folder (the
ground truth as given; the result as the CTC writer writes it, i.e. made consistent with
:func:`io.tracks.consistent_tracks`), scores them with :func:`io.ctc.score_results` (SEG, DET, TRA,
CT, TF, BC(1), CCA and the track counts; SEG only with SEG masks) and lists the error cells
(:func:`engine.confidence.truth_errors`) for the review queue.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engine.confidence import Suspect, truth_errors
from .engine.progress import Progress
from .io import ctc
from .io.tracks import MAX_LABEL, lineage_from_labels

log = logging.getLogger(__name__)

__all__ = ["Evaluation", "iter_evaluate", "write_truth"]


@dataclass
class Evaluation:
    """Scores (as ``embedtrack evaluate`` prints them) and the error cells."""

    scores: dict[str, float | int | None]
    errors: list[Suspect] = field(default_factory=list)


def _integer_movie(arr, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: {arr.dtype} array of shape {arr.shape}; expected (T, Y, X)")
    if arr.size and (arr.min() < 0 or arr.max() > MAX_LABEL):
        raise ValueError(f"{name}: labels must be in 0..{MAX_LABEL} (CTC masks are 16-bit)")
    return arr


def write_truth(
    gt_dir: Path,
    tra: np.ndarray,
    lineage: np.ndarray | None,
    seg: Mapping[int, np.ndarray] | None = None,
) -> None:
    """Write ground truth as a CTC ``<seq>_GT`` folder. Checked like
    :func:`ctc.write_ground_truth`; ground truth whose tracks have gaps (allowed in CTC
    ground truth) is written as given."""
    if lineage is None:
        lineage = lineage_from_labels(tra)
    try:
        ctc.write_ground_truth(gt_dir, tra, lineage, seg=seg)
        return
    except ValueError as err:
        if "is present in only" not in str(err):  # not a gap: broken ground truth
            raise
        log.info("ground truth with gaps, written as given: %s", err)
    nd = ctc.frame_digits(tra.shape[0])
    (gt_dir / "TRA").mkdir(parents=True)
    for t, frame in enumerate(tra):
        ctc._write_mask(gt_dir / "TRA" / f"man_track{t:0{nd}d}.tif", frame)
    ctc.write_lineage(gt_dir / "TRA" / "man_track.txt", lineage)
    if seg:
        (gt_dir / "SEG").mkdir()
        for t, mask in sorted(seg.items()):
            ctc._write_mask(gt_dir / "SEG" / f"man_seg{t:0{nd}d}.tif", np.asarray(mask))


def iter_evaluate(
    labels: np.ndarray,
    lineage: np.ndarray | None,
    gt_labels: np.ndarray,
    gt_lineage: np.ndarray | None,
    gt_seg: Mapping[int, np.ndarray] | None = None,
    *,
    threads: int = 1,
) -> Generator[Progress, None, Evaluation]:
    """Score a result against ground truth as ``embedtrack evaluate`` does.

    Args:
        labels: (T, Y, X) result labels, label = track id.
        lineage: the result's ``[id, start, end, parent]`` rows (None: no divisions).
        gt_labels: (T, Y, X) true tracking labels (CTC TRA markers or full masks).
        gt_lineage: the truth's lineage (None: one track per label, no divisions).
        gt_seg: ``{frame: (Y, X) true instance masks}`` for SEG (None or empty: no SEG).
        threads: worker processes of py-ctcmetrics.

    Returns:
        Evaluation: :func:`io.ctc.score_results`'s scores and the error cells.

    Raises:
        ValueError: shapes differ, labels are not integers or exceed 16 bits, or the
            evaluator rejects the data (one line).
    """
    labels = _integer_movie(labels, "result labels")
    gt_labels = _integer_movie(gt_labels, "ground truth labels")
    if labels.shape != gt_labels.shape:
        raise ValueError(
            f"result labels have shape {labels.shape} but the ground truth has shape "
            f"{gt_labels.shape}; expected the same frames and size"
        )
    seg = {int(t): np.asarray(m) for t, m in (gt_seg or {}).items()}
    for t, mask in seg.items():
        if mask.shape != gt_labels.shape[1:] or not 0 <= t < gt_labels.shape[0]:
            raise ValueError(
                f"SEG mask of frame {t} has shape {mask.shape}; expected a frame in "
                f"0..{gt_labels.shape[0] - 1} of shape {gt_labels.shape[1:]}"
            )
    with tempfile.TemporaryDirectory(prefix="embedtrack-eval-") as tmp:
        gt_dir, res_dir = Path(tmp) / "01_GT", Path(tmp) / "01_RES"
        yield Progress(0, 4, "writing the ground truth")
        write_truth(gt_dir, gt_labels, gt_lineage, seg)
        yield Progress(1, 4, "writing the result")
        ctc.write_results(res_dir, labels, lineage)
        yield Progress(2, 4, "scoring (py-ctcmetrics)")
        scores = ctc.score_results(gt_dir, res_dir, threads=threads)
    yield Progress(3, 4, "matching cells")
    gt_lin = lineage_from_labels(gt_labels) if gt_lineage is None else gt_lineage
    errors = truth_errors(labels, lineage, gt_labels, gt_lin)  # the given ids
    yield Progress(4, 4, f"{len(errors)} error(s)")
    return Evaluation(scores, errors)
