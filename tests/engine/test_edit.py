"""Track editing (issue #17 part 2): every operation on many small results gives a valid CTC
result that does what it says; undo / redo restore exactly; pins come back after a re-run;
the planted errors of ``planted.py`` are corrected to a perfect score."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_embedtrack.engine import edit as E
from napari_embedtrack.engine.progress import run
from napari_embedtrack.evaluation import iter_evaluate
from napari_embedtrack.io.tracks import consistent_tracks, lineage_from_labels

from .planted import planted_movie
from .planted_fixes import correct_planted

SLOTS = [(r, c) for r in range(2) for c in range(3)]  # 3x3 blocks of a 6x9 frame


def small_result(seed: int, n_t: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A random valid result on a 6x9 frame: cells are 3x3 blocks (one per slot, a corner
    pixel cut off at random so masks differ), tracks continue, end, start or divide."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n_t, 6, 9), np.int32)
    rows: dict[int, list[int]] = {}
    alive: dict[int, tuple[int, int]] = {}
    next_id = 1
    for t in range(n_t):
        new: dict[int, tuple[int, int]] = {}
        free = [s for s in SLOTS if s not in alive.values()]
        rng.shuffle(free)
        for tid, slot in list(alive.items()):
            fate = rng.choice(["go", "go", "end", "divide"])
            if fate == "go":
                new[tid] = slot
            elif fate == "divide" and free:
                for s in (slot, free.pop()):
                    new[next_id] = s
                    rows[next_id] = [next_id, t, t, tid]
                    next_id += 1
        if t == 0 or rng.random() < 0.3:
            free = [s for s in SLOTS if s not in new.values()]
            for s in free[: rng.integers(1, 3) if t else 3]:
                new[next_id] = s
                rows[next_id] = [next_id, t, t, 0]
                next_id += 1
        for tid, (r, c) in new.items():
            block = labels[t, 3 * r : 3 * r + 3, 3 * c : 3 * c + 3]
            block[:] = tid
            if rng.random() < 0.5:
                block[0, 0] = 0
            rows[tid][2] = t
        alive = new
    lineage = np.array(sorted(rows.values()), np.int64).reshape(-1, 4)
    E.check_result(labels, lineage)
    return labels, lineage


def assert_valid(labels, lineage) -> None:
    """A valid CTC result whose parents end the frame right before their daughters."""
    E.check_result(labels, lineage)
    ends = {int(r[0]): int(r[2]) for r in lineage}
    for tid, start, _end, parent in lineage.tolist():
        if parent:
            assert ends[parent] == start - 1, (tid, parent)


def cells(labels) -> set[tuple[int, bytes]]:
    """The cells of a movie regardless of their ids: (frame, mask bytes)."""
    return {
        (t, (frame == i).tobytes()) for t, frame in enumerate(labels) for i in np.unique(frame) if i
    }


def row(lineage, tid) -> np.ndarray:
    return lineage[lineage[:, 0] == tid][0]


def label_at(labels, t, mask) -> int:
    vals = np.unique(labels[t][mask])
    assert vals.size == 1, vals
    return int(vals[0])


def all_edits(labels, lineage):
    """Every operation with every argument on a small result: (name, args, call)."""
    tracks = lineage[:, 0].tolist()
    n_t = labels.shape[0]
    for tid, t in itertools.product(tracks, range(n_t + 1)):
        yield "split", (tid, t), lambda a=tid, f=t: E.split_track(labels, lineage, a, f)
    for a, b in itertools.product(tracks, tracks):
        yield "join", (a, b), lambda a=a, b=b: E.join_tracks(labels, lineage, a, b)
        yield "parent", (a, b), lambda a=a, b=b: E.set_parent(labels, lineage, a, b)
    for tid in tracks:
        yield "unparent", (tid,), lambda a=tid: E.remove_parent(labels, lineage, a)
        yield "delete", (tid,), lambda a=tid: E.delete_track(labels, lineage, a)
    targets = [0, *tracks, max(tracks) + 5]
    for t in range(n_t):
        for old in np.unique(labels[t])[1:].tolist():
            for new in targets:
                if new != old:
                    yield (
                        "relabel",
                        (t, old, new),
                        lambda t=t, o=old, n=new: E.relabel_cell(labels, lineage, t, o, n),
                    )


@pytest.mark.parametrize("seed", range(12))
def test_every_edit_gives_a_valid_result_that_does_what_it_says(seed):
    labels, lineage = small_result(seed)
    before, lin_before = labels.copy(), lineage.copy()
    done = refused = 0
    for name, args, call in all_edits(labels, lineage):
        try:
            edit = call()
        except E.EditError as err:
            assert "\n" not in str(err)
            refused += 1
            continue
        done += 1
        new, lin = edit.labels, edit.lineage
        assert_valid(new, lin)
        assert np.array_equal(labels, before) and np.array_equal(lineage, lin_before)
        changed = [t for t in range(len(new)) if not np.array_equal(new[t], labels[t])]
        assert set(changed) <= set(edit.frames), (name, args)
        assert edit.message and "\n" not in edit.message
        if name not in ("delete", "relabel"):  # the same cells, other ids
            assert cells(new) == cells(labels), (name, args)
        if name == "split":
            tid, t = args
            a = label_at(new, t - 1, labels[t - 1] == tid)
            b = label_at(new, t, labels[t] == tid)
            assert a != b and row(lin, b)[3] == 0 and row(lin, b)[1] == t
            assert len(edit.pins) >= 2
        elif name == "join":
            a, b = args
            end, start = row(lineage, a)[2], row(lineage, b)[1]
            assert label_at(new, end, labels[end] == a) == label_at(new, start, labels[start] == b)
        elif name == "parent":
            child, parent = args
            s = row(lineage, child)[1]
            c = label_at(new, s, labels[s] == child)
            p = label_at(new, s - 1, labels[s - 1] == parent)
            if c != p:  # else the parent had no other daughter: c continues it
                assert row(lin, c)[3] == p and row(lin, p)[2] == s - 1
        elif name == "unparent":
            s = row(lineage, args[0])[1]
            assert row(lin, label_at(new, s, labels[s] == args[0]))[3] == 0
        elif name == "delete":
            assert not np.any(new[labels == args[0]])
            assert cells(new) == {c for c in cells(labels) if c not in cells(labels == args[0])}
        elif name == "relabel":
            t, old, target = args
            got = label_at(new, t, labels[t] == old)
            if target == 0:
                assert got == 0
            elif target in labels[t]:
                assert got == label_at(new, t, labels[t] == target)
            assert len(edit.pins) >= 1
    assert done > 20 and refused > 10, (done, refused)


def test_refusals_say_why():
    labels, lineage = small_result(0)
    tid, start, _end, _ = lineage[0].tolist()
    with pytest.raises(E.EditError, match="split it at a frame"):
        E.split_track(labels, lineage, tid, start)
    with pytest.raises(E.EditError, match="not in the labels"):
        E.delete_track(labels, lineage, 999)
    with pytest.raises(E.EditError, match="cannot be joined with itself"):
        E.join_tracks(labels, lineage, tid, tid)
    with pytest.raises(E.EditError, match=r"expected \(T, Y, X\) integer labels"):
        E.delete_track(labels.astype(float), lineage, tid)
    with pytest.raises(E.EditError, match="the mask is empty"):
        E.relabel_mask(labels, lineage, 0, np.zeros(labels.shape[1:], bool), 3)


@pytest.mark.parametrize("seed", range(6))
def test_undo_and_redo_restore_exactly(seed):
    labels, lineage = small_result(seed + 100, n_t=5)
    rng = np.random.default_rng(seed)
    stack, pins = E.UndoStack(), E.Pins()
    states = [(labels, lineage, 0)]
    edits = list(all_edits(labels, lineage))
    cur, lin = labels, lineage
    while len(states) < 8:
        name, args, _ = edits[rng.integers(len(edits))]
        call = {
            "split": E.split_track, "join": E.join_tracks, "parent": E.set_parent,
            "unparent": E.remove_parent, "delete": E.delete_track, "relabel": E.relabel_cell,
        }[name]  # fmt: skip
        try:
            edit = call(cur, lin, *args, pins=pins)
        except E.EditError:
            continue
        stack.record(cur, lin, edit, pins)
        cur, lin, pins = edit.labels, edit.lineage, edit.pins
        assert_valid(cur, lin)
        states.append((cur, lin, len(pins)))
    for want in reversed(states[:-1]):
        edit = stack.undo(cur, lin, pins)
        cur, lin, pins = edit.labels, edit.lineage, edit.pins
        assert np.array_equal(cur, want[0]) and np.array_equal(lin, want[1])
        assert len(pins) == want[2]
    assert not stack.can_undo
    with pytest.raises(E.EditError, match="nothing to undo"):
        stack.undo(cur, lin)
    for want in states[1:]:
        edit = stack.redo(cur, lin, pins)
        cur, lin, pins = edit.labels, edit.lineage, edit.pins
        assert np.array_equal(cur, want[0]) and np.array_equal(lin, want[1])


def two_cells() -> tuple[np.ndarray, np.ndarray]:
    """Tracks 1 (left) and 2 (right) in 4 frames of 12x12, and 3 below 1."""
    labels = np.zeros((4, 12, 12), np.uint16)
    labels[:, 2:6, 1:5] = 1
    labels[:, 2:6, 7:11] = 2
    labels[:, 8:11, 1:5] = 3
    return labels, lineage_from_labels(labels)


def test_pins_come_back_after_a_re_run():
    labels, lineage = two_cells()
    # a split track stays split when a re-run links it again
    edit = E.split_track(labels, lineage, 1, 2)
    again, lin, _ = E.impose_pins(labels, lineage, edit.pins)
    assert_valid(again, lin)
    assert np.array_equal(again, edit.labels) and np.array_equal(lin, edit.lineage)
    assert row(lin, 1)[2] == 1 and row(lin, again[2, 3, 3])[1:].tolist() == [2, 3, 0]

    # a deleted track stays deleted; a grown cell keeps its pixels against its neighbour
    edit = E.delete_track(edit.labels, edit.lineage, 3, pins=edit.pins)
    gap = np.zeros((12, 12), bool)
    gap[2:6, 5:7] = True
    edit = E.relabel_mask(edit.labels, edit.lineage, 1, gap, 1, pins=edit.pins)
    assert np.all(edit.labels[1][gap] == 1)
    rerun = labels.copy()
    rerun[1][gap] = 2  # the re-run gives the gap to the right cell
    again, lin, frames = E.impose_pins(rerun, lineage, edit.pins)
    assert_valid(again, lin)
    assert np.array_equal(again, edit.labels) and np.array_equal(lin, edit.lineage)
    assert not np.any(again[labels == 3]) and 1 in frames

    # a pinned cell the re-run lost comes back, in its track
    pins = E.pin_cell(labels, lineage, 2, 2)
    lost = labels.copy()
    lost[2][lost[2] == 2] = 0
    lost, lost_lin = consistent_tracks(lost, lineage)
    assert len(lost_lin) == 4  # track 2 broken in two
    back, lin, _ = E.impose_pins(lost, lost_lin, pins)
    assert_valid(back, lin)
    assert np.array_equal(back > 0, labels > 0)
    assert back[2, 3, 8] == back[1, 3, 8] == 2 and len(lin) == 3  # one track again

    # pins outside a shorter run are skipped; its frames shift by first_frame
    part, lin, _ = E.impose_pins(rerun[1:], lineage - [0, 1, 1, 0], edit.pins, first_frame=1)
    assert_valid(part, lin)
    assert np.array_equal(part, edit.labels[1:] * (edit.labels[1:] != 0))
    with pytest.raises(E.EditError, match="track 9 is not in the labels"):
        E.pin_cell(labels, lineage, 0, 9)


def score(labels, lineage, planted) -> dict:
    seg = {t: planted.truth[t] for t in range(planted.truth.shape[0])}
    gen = iter_evaluate(
        labels.astype(np.uint16), lineage, planted.truth, planted.truth_lineage, seg
    )
    return run(gen).scores


PERFECT = ("SEG", "DET", "TRA", "CT", "TF", "BC(1)", "CCA")


def test_planted_errors_corrected_to_a_perfect_score():
    planted = planted_movie(seed=3)
    before = score(planted.labels, planted.lineage, planted)
    assert min(before[k] for k in ("TRA", "CT", "BC(1)")) < 1.0
    state = {"labels": planted.labels, "lineage": planted.lineage, "pins": E.Pins()}
    ops = {
        "relabel_mask": E.relabel_mask, "relabel_cell": E.relabel_cell, "join": E.join_tracks,
    }  # fmt: skip

    def apply(name, *args):
        if name != "noop":
            edit = ops[name](state["labels"], state["lineage"], *args, pins=state["pins"])
            state.update(labels=edit.labels, lineage=edit.lineage, pins=edit.pins)
            assert_valid(edit.labels, edit.lineage)
        return state["labels"]

    correct_planted(planted, apply)
    scores = score(state["labels"], state["lineage"], planted)
    assert all(scores[k] == 1.0 for k in PERFECT), scores
    assert scores["tracks"] == scores["gt_tracks"] and scores["divisions_false"] == 0

    # the pins alone correct the uncorrected result again (what a re-run gets)
    again, lin, _ = E.impose_pins(planted.labels, planted.lineage, state["pins"])
    assert np.array_equal(again, state["labels"]) and np.array_equal(lin, state["lineage"])


def test_adopt_painted_frames():
    labels, lineage = two_cells()
    painted = labels.copy()
    painted[2][painted[2] == 3] = 0  # erased in frame 2: track 3 cut there
    painted[1, 2:6, 5:7] = 1  # cell 1 grown
    edit = E.adopt_frames(painted, lineage, [1, 2])
    assert_valid(edit.labels, edit.lineage)
    assert np.array_equal(edit.labels > 0, painted > 0)
    assert len(edit.lineage) == 4 and row(edit.lineage, edit.labels[3, 9, 2])[1:].tolist() == [
        3,
        3,
        0,
    ]
    again, _lin, _ = E.impose_pins(labels, lineage, edit.pins)
    assert np.array_equal(again[1] > 0, painted[1] > 0)  # the grown cell is pinned
    assert np.any(again[2] == 3)  # an erasure painted is not known (Delete track pins one)
