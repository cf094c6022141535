"""Fast in-memory segmentation score used for validation during training.

The official scores come from py-ctcmetrics (``ctc.evaluate``); this is the same SEG
definition on arrays, without writing files, so training can validate every epoch:
a reference mask is matched by the predicted mask that covers more than half of it, its
score is the Jaccard index of the pair, unmatched references score 0, SEG is the mean over
references (``tests/engine/test_metrics.py`` checks it against py-ctcmetrics).
"""

from __future__ import annotations

import numpy as np


def seg_ious(reference: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Jaccard index per reference instance (0 where unmatched), for one 2D frame.

    Args:
        reference: (Y, X) int ground-truth instance masks (0 = background).
        predicted: (Y, X) int predicted instance masks.

    Returns:
        (n_reference,) float64 in label order.
    """
    ref = np.asarray(reference).ravel().astype(np.int64)
    pred = np.asarray(predicted).ravel().astype(np.int64)
    ref_ids, ref_inv = np.unique(ref, return_inverse=True)
    pred_ids, pred_inv = np.unique(pred, return_inverse=True)
    n_r, n_p = len(ref_ids), len(pred_ids)
    inter = np.bincount(ref_inv * n_p + pred_inv, minlength=n_r * n_p).reshape(n_r, n_p)
    ref_sizes = inter.sum(1)
    pred_sizes = inter.sum(0)
    fg_r = ref_ids > 0
    fg_p = pred_ids > 0
    inter = inter[fg_r][:, fg_p]
    if inter.size == 0:
        return np.zeros(int(fg_r.sum()))
    best = inter.argmax(1)
    best_inter = inter[np.arange(len(best)), best]
    rs, ps = ref_sizes[fg_r], pred_sizes[fg_p][best]
    iou = best_inter / (rs + ps - best_inter)
    return np.where(best_inter * 2 > rs, iou, 0.0)


def seg_score(references: list[np.ndarray], predictions: list[np.ndarray]) -> float:
    """SEG over several frames: mean Jaccard over all reference instances (0 if none)."""
    ious = [seg_ious(r, p) for r, p in zip(references, predictions, strict=True)]
    allv = np.concatenate(ious) if ious else np.zeros(0)
    return float(allv.mean()) if allv.size else 0.0
