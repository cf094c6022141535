"""How a user corrects the planted errors of ``planted.py`` with the track editing
operations (issue #17), looking at the truth: shared by the engine test and the widget test
(which loads this file by its path)."""

from __future__ import annotations

import numpy as np


def correct_planted(planted, apply) -> None:
    """Correct the four planted errors as a user would, looking at the truth: ``apply(name,
    *args)`` makes one edit and returns the current labels."""
    truth = planted.truth

    def rid(labels, t, true_id) -> int:
        ids, counts = np.unique(labels[t][truth[t] == true_id], return_counts=True)
        return int(ids[np.argmax(counts)])

    labels = apply("noop")
    # merge in frame 3: the part of the merged cell over true cell b goes to b's track,
    # which then continues with b's track after the merge
    (_, t, y, x) = next(e for e in planted.errors if e[0] == "merge")
    merged = labels[t][int(y), int(x)]
    inside = [int(i) for i in np.unique(truth[t][labels[t] == merged]) if i]
    b = next(i for i in inside if rid(labels, t - 1, i) != merged)  # its track ended
    b_before = rid(labels, t - 1, b)
    labels = apply("relabel_mask", t, (truth[t] == b) & (labels[t] == merged), b_before)
    labels = apply("join", b_before, rid(labels, t + 1, b))
    # split in frame 6: the smaller piece joins the larger one
    (_, t, y, x) = next(e for e in planted.errors if e[0] == "split")
    true_id = truth[t][int(y), int(x) + 1]
    pieces = [int(i) for i in np.unique(labels[t][truth[t] == true_id]) if i]
    pieces.sort(key=lambda i: np.count_nonzero(labels[t] == i))
    labels = apply("relabel_cell", t, pieces[0], pieces[1])
    # broken link in frame 8: join the two halves
    (_, t, y, x) = next(e for e in planted.errors if e[0] == "broken link")
    true_id = truth[t][int(y), int(x)]
    labels = apply("join", rid(labels, t - 1, true_id), rid(labels, t, true_id))
    # false division in frame 5: both "daughters" continue their own cell (true cells
    # that were there before)
    (_, t, _, _) = next(e for e in planted.errors if e[0] == "false division")
    lineage = planted.lineage
    daughters = [int(r[0]) for r in lineage if r[1] == t and r[3]]
    true_start = {int(r[0]): int(r[1]) for r in planted.truth_lineage}
    for d in daughters:
        true_id = np.bincount(truth[t][labels[t] == d]).argmax()
        if true_start[int(true_id)] < t:
            labels = apply("join", rid(labels, t - 1, true_id), rid(labels, t, true_id))
