"""Track editing that keeps a tracking result a valid CTC result, undo, and pins (issue #17,
part 2). Qt-free.

A result is ``labels`` (T, Y, X) (label = track id) and its ``lineage`` (N, 4)
``[id, start, end, parent]``. Every operation takes one and returns an :class:`Edit` whose
``labels`` / ``lineage`` are again a valid CTC result: contiguous tracks, unique ids, each
parent ending the frame before its daughters start (see :func:`check_result`). The
operations work on the *cell graph* of the result: one node per cell (frame, label), each
with at most one predecessor (the same track in the frame before, or the parent of a
track's first cell). After an edit the graph is cut back into tracks: a cell continues its
predecessor's track when it is that cell's only successor in the next frame, otherwise it
starts a new track whose parent is the predecessor (a division). Ids are kept where they
can be: a track keeps the id of its first cell, unless an earlier track took it first; the
others get new ids. So a parent with a single daughter right after it becomes one track with
it (the same cell), and a track whose cell in one frame is removed is cut in two.

Operations: :func:`split_track`, :func:`join_tracks`, :func:`set_parent`,
:func:`remove_parent`, :func:`delete_track`, :func:`relabel_mask` (and
:func:`relabel_cell`). :class:`UndoStack` undoes and redoes them (only the frames an edit
changed are stored).

Pins: every edit records the cells and links it fixed in a :class:`Pins` record (the masks,
by frame, and which pinned cell each one follows). :func:`impose_pins` puts them back into
a new result (after re-clustering or re-running the network): pinned masks overwrite what
is there (a new cell mostly under pins is replaced by them, its links taken over), pinned
links replace the new ones, and pinned deletions stay empty.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FREE",
    "NO_LINK",
    "Edit",
    "EditError",
    "PinnedCell",
    "Pins",
    "UndoStack",
    "adopt_frames",
    "check_result",
    "delete_track",
    "impose_pins",
    "join_tracks",
    "pin_cell",
    "relabel_cell",
    "relabel_mask",
    "remove_parent",
    "set_parent",
    "split_track",
]

Node = tuple[int, int]  # (frame, label in that frame)

#: PinnedCell.pred: the link to the frame before is not pinned (the tracker decides).
FREE = -2
#: PinnedCell.pred: pinned to have no predecessor (a track start without parent).
NO_LINK = -1


class EditError(ValueError):
    """An edit that cannot be made (one-line message saying why and what is expected)."""


# --------------------------------------------------------------------------- pins
@dataclass
class PinnedCell:
    """A cell the user fixed: its mask in one frame and how it links to the frame before.

    Attributes:
        frame: frame index (of the labels the pins were made on).
        y0, x0: top-left corner of ``mask`` in the frame.
        mask: (h, w) bool mask.
        label: the track id it had when pinned (kept after a re-run where that id is free).
        pred: key of the pinned cell it follows (same track or parent), :data:`NO_LINK`
            (starts a track without parent) or :data:`FREE` (the tracker decides).
        closed: its successors in later frames are exactly the pinned cells whose ``pred``
            names it (e.g. the end of a track split in two, the parent of a division).
        erased: a deleted cell: its pixels stay background.
    """

    frame: int
    y0: int
    x0: int
    mask: np.ndarray
    label: int = 0
    pred: int = FREE
    closed: bool = False
    erased: bool = False

    def region(self) -> tuple[slice, slice]:
        h, w = self.mask.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape, bool)
        out[self.region()] = self.mask
        return out


def _boxed(mask: np.ndarray) -> tuple[int, int, np.ndarray]:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return int(y0), int(x0), mask[y0:y1, x0:x1].copy()


@dataclass
class Pins:
    """The cells and links the user fixed (see the module docstring), keyed by an int."""

    cells: dict[int, PinnedCell] = field(default_factory=dict)
    next_key: int = 1

    def __len__(self) -> int:
        return len(self.cells)

    def copy(self) -> Pins:
        return Pins({k: dataclasses.replace(c) for k, c in self.cells.items()}, self.next_key)

    def at(self, frame: int) -> list[int]:
        return [k for k, c in self.cells.items() if c.frame == frame]

    def frames(self) -> list[int]:
        return sorted({c.frame for c in self.cells.values()})

    def key_of(self, frame: int, mask: np.ndarray) -> int | None:
        """The pin of ``frame`` covering most of ``mask`` (more than half), if any."""
        n = int(mask.sum())
        for k in self.at(frame):
            c = self.cells[k]
            if not c.erased and 2 * int(np.count_nonzero(mask[c.region()] & c.mask)) > n:
                return k
        return None

    def _add(self, cell: PinnedCell, shape: tuple[int, int]) -> int:
        """Add ``cell``, updating the pin it mostly covers (same key), and take its pixels
        from the other pins of the frame (the newest pin wins); emptied pins are dropped."""
        full = cell.full_mask(shape)
        key = None if cell.erased else self.key_of(cell.frame, full)
        for k in self.at(cell.frame):
            if k == key:
                continue
            other = self.cells[k]
            sl = other.region()
            keep = other.mask & ~full[sl]
            if not keep.any():
                self._drop(k)
            elif not np.array_equal(keep, other.mask):
                y0, x0, m = _boxed(keep)
                self.cells[k] = dataclasses.replace(
                    other, y0=other.y0 + y0, x0=other.x0 + x0, mask=m
                )
        if key is None:
            key = self.next_key
            self.next_key += 1
        self.cells[key] = cell
        return key

    def _drop(self, key: int) -> None:
        del self.cells[key]
        for k, c in self.cells.items():
            if c.pred == key:
                self.cells[k] = dataclasses.replace(c, pred=FREE)

    def pin(
        self,
        labels: np.ndarray,
        frame: int,
        label: int,
        *,
        pred: int | None = None,
        closed: bool | None = None,
    ) -> int:
        """Pin cell ``label`` of ``frame`` (its current mask). ``pred`` / ``closed``: None
        keeps those of the pin it replaces (default :data:`FREE` / False)."""
        mask = np.asarray(labels[frame]) == label
        if not mask.any():
            raise EditError(f"frame {frame} has no cell {label} to pin")
        old = self.key_of(frame, mask)
        before = self.cells.get(old) if old is not None else None
        y0, x0, m = _boxed(mask)
        cell = PinnedCell(
            frame=int(frame), y0=y0, x0=x0, mask=m, label=int(label),
            pred=(before.pred if before else FREE) if pred is None else int(pred),
            closed=(before.closed if before else False) if closed is None else bool(closed),
        )  # fmt: skip
        return self._add(cell, mask.shape)

    def erase(self, frame: int, mask: np.ndarray) -> int | None:
        """Pin ``mask`` of ``frame`` as background (a deleted cell)."""
        mask = np.asarray(mask, bool)
        if not mask.any():
            return None
        y0, x0, m = _boxed(mask)
        return self._add(PinnedCell(int(frame), y0, x0, m, erased=True), mask.shape)

    def unpin(self, frame: int, mask: np.ndarray) -> bool:
        """Forget the pins of ``frame`` overlapping ``mask``; True if there was one."""
        hit = [
            k for k in self.at(frame) if (mask[self.cells[k].region()] & self.cells[k].mask).any()
        ]
        for k in hit:
            self._drop(k)
        return bool(hit)

    def refresh(self, labels: np.ndarray, frames: Iterable[int] | None = None) -> None:
        """Update the ids the pins remember from ``labels`` (after ids changed)."""
        wanted = None if frames is None else set(frames)
        for k, c in list(self.cells.items()):
            if c.erased or (wanted is not None and c.frame not in wanted):
                continue
            if c.frame >= labels.shape[0]:
                continue
            under = np.asarray(labels[c.frame])[c.region()][c.mask]
            under = under[under > 0]
            if under.size:
                ids, counts = np.unique(under, return_counts=True)
                self.cells[k] = dataclasses.replace(c, label=int(ids[np.argmax(counts)]))

    def clear(self) -> None:
        self.cells.clear()


# --------------------------------------------------------------------------- cell graph
class _Graph:
    """Cells (frame, label) of a working copy of the labels, each with at most one
    predecessor; cut back into tracks by :meth:`result`."""

    def __init__(self, labels: np.ndarray, lineage: np.ndarray | None, *, copy: bool = True):
        if labels.ndim != 3 or labels.dtype.kind not in "ui":
            raise EditError(
                f"labels: {labels.dtype} array of shape {labels.shape}; expected (T, Y, X) "
                "integer labels"
            )
        self.labels = np.array(labels, copy=True) if copy else labels
        self.touched: set[int] = set()  # frames whose pixels changed
        self.present: list[set[int]] = []
        frames_of: dict[int, list[int]] = defaultdict(list)
        for t in range(self.labels.shape[0]):
            ids = np.unique(np.asarray(self.labels[t]))
            ids = {int(i) for i in ids if i > 0}
            self.present.append(ids)
            for i in sorted(ids):
                frames_of[i].append(t)
        self.pred: dict[Node, Node | None] = {}
        for i, frames in frames_of.items():
            prev = None
            for t in frames:
                self.pred[(t, i)] = None if prev is None else (prev, i)
                prev = t
        lin = np.zeros((0, 4), np.int64) if lineage is None else np.asarray(lineage, np.int64)
        lin = lin.reshape(-1, 4)
        for tid, _s, _e, par in lin.tolist():
            if par and tid in frames_of and par in frames_of:
                first = frames_of[tid][0]
                before = [t for t in frames_of[par] if t < first]
                if before:
                    self.pred[(first, tid)] = (before[-1], par)
        self.top = max([0, *frames_of, *lin[:, 0].tolist()])
        self.out: dict[Node, int] = {}

    # ---------------------------------------------------------------- queries
    def frames_of(self, label: int) -> list[int]:
        return [t for t, ids in enumerate(self.present) if label in ids]

    def track(self, label: int, what: str = "track") -> list[int]:
        frames = self.frames_of(int(label))
        if int(label) <= 0 or not frames:
            raise EditError(f"{what} {label} is not in the labels; expected a track id > 0")
        return frames

    def successors(self, node: Node) -> list[Node]:
        return [n for n, p in self.pred.items() if p == node]

    def fresh(self) -> int:
        self.top += 1
        return self.top

    # ---------------------------------------------------------------- changes
    def remove(self, node: Node) -> None:
        """Drop a cell (its pixels must be gone already); its successors lose their link."""
        self.pred.pop(node, None)
        self.present[node[0]].discard(node[1])
        for n, p in self.pred.items():
            if p == node:
                self.pred[n] = None

    def result(self, hints: dict[Node, int] | None = None, first: set[Node] | None = None):
        """Cut the graph into tracks: (labels, lineage, changed frames). ``hints``: the id a
        cell's track should keep (default: its label); tracks holding a cell of ``first``
        choose their id first."""
        hints = hints or {}
        first = first or set()
        n_succ: Counter = Counter(p for p in self.pred.values() if p is not None)
        nodes = sorted(self.pred)
        chain_of: dict[Node, int] = {}
        chains: list[list[Node]] = []
        for n in nodes:
            p = self.pred[n]
            if p is not None and p[0] == n[0] - 1 and n_succ[p] == 1:
                chain_of[n] = chain_of[p]
                chains[chain_of[n]].append(n)
            else:
                chain_of[n] = len(chains)
                chains.append([n])
        top = max([self.top, *hints.values(), *(n[1] for n in nodes)])
        ids = [0] * len(chains)
        used: set[int] = set()
        order = sorted(
            range(len(chains)),
            key=lambda c: (not any(n in first for n in chains[c]), chains[c][0]),
        )
        for c in order:
            want = hints.get(chains[c][0], chains[c][0][1])
            if want in used or want <= 0:
                top += 1
                want = top
            used.add(want)
            ids[c] = want
        self.out = {n: ids[chain_of[n]] for n in nodes}
        rows = []
        for c, chain in enumerate(chains):
            p = self.pred[chain[0]]
            parent = ids[chain_of[p]] if p is not None else 0
            rows.append([ids[c], chain[0][0], chain[-1][0], parent])
        lineage = np.array(sorted(rows), np.int64).reshape(-1, 4)
        changed = set(self.touched)
        by_frame: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for (t, lab), new in self.out.items():
            if lab != new:
                by_frame[t].append((lab, new))
        if lineage.size and lineage[:, 0].max() > np.iinfo(self.labels.dtype).max:
            raise EditError(
                f"track id {lineage[:, 0].max()} does not fit the labels' dtype "
                f"{self.labels.dtype}; convert the labels to a larger integer type"
            )
        for t, pairs in by_frame.items():
            frame = np.asarray(self.labels[t])
            old, new = np.array(pairs, np.int64).T
            lut = np.arange(max(int(frame.max()), int(old.max())) + 1, dtype=np.int64)
            lut[old] = new
            self.labels[t] = lut[frame].astype(self.labels.dtype)
            changed.add(t)
        return self.labels, lineage, sorted(changed)


# --------------------------------------------------------------------------- edits
@dataclass
class Edit:
    """The outcome of an edit: the new result, the frames whose labels changed, what was
    done (one line) and the pins after it."""

    labels: np.ndarray
    lineage: np.ndarray
    frames: list[int]
    message: str
    pins: Pins


def _start(labels, lineage) -> _Graph:
    return _Graph(np.asarray(labels), lineage)


def _finish(g: _Graph, message: str, pins: Pins | None, todo: list) -> Edit:
    """Cut ``g`` into tracks and carry out the pin instructions ``todo``:
    ``("pin", node, pred, closed)`` with ``pred`` a node, "none", "free" or "keep";
    ``("erase", frame, mask)``."""
    labels, lineage, frames = g.result()
    pins = Pins() if pins is None else pins.copy()
    keys: dict[Node, int] = {}

    def key(node: Node) -> int:
        if node not in keys:
            keys[node] = pins.pin(labels, node[0], g.out[node])
        return keys[node]

    for item in sorted(todo, key=lambda it: it[1] if it[0] == "erase" else it[1][0]):
        if item[0] == "erase":
            pins.erase(item[1], item[2])
            continue
        _, node, pred, closed = item
        if node not in g.out:
            continue
        if isinstance(pred, tuple):
            p = key(pred) if pred in g.out else NO_LINK
        else:
            p = {"none": NO_LINK, "free": FREE, "keep": None}[pred]
        keys[node] = pins.pin(labels, node[0], g.out[node], pred=p, closed=closed)
    pins.refresh(labels, frames)
    return Edit(labels, lineage, frames, message, pins)


def split_track(labels, lineage, track: int, frame: int, *, pins: Pins | None = None) -> Edit:
    """Cut ``track`` before ``frame``: its cells from ``frame`` on become a new track
    without parent (its daughters follow them)."""
    g = _start(labels, lineage)
    frames = g.track(track)
    if not frames[0] < frame <= frames[-1]:
        raise EditError(
            f"track {track} spans frames {frames[0]}-{frames[-1]}; split it at a frame in "
            f"{frames[0] + 1}-{frames[-1]}"
        )
    node, before = (frame, track), g.pred[(frame, track)]
    g.pred[node] = None
    todo = [("pin", node, "none", None)]
    if before is not None:
        todo.append(("pin", before, "keep", True))
    edit = _finish(g, "", pins, todo)
    edit.message = (
        f"track {track} split before frame {frame}: frames {frame}- are track {g.out[node]}"
    )
    return edit


def join_tracks(labels, lineage, track: int, other: int, *, pins: Pins | None = None) -> Edit:
    """``other`` continues ``track``: it must start right after ``track`` ends. Other
    daughters of ``track`` lose their parent; ``other``'s parent link is replaced."""
    g = _start(labels, lineage)
    a, b = g.track(track), g.track(other, "other track")
    if track == other:
        raise EditError(f"track {track} cannot be joined with itself; choose two tracks")
    if a[-1] + 1 != b[0]:
        raise EditError(
            f"track {other} starts at frame {b[0]}, not right after track {track} ends (frame "
            f"{a[-1]}); expected consecutive tracks (split one first, or set a parent)"
        )
    end, start = (a[-1], track), (b[0], other)
    lost = [n for n in g.successors(end) if n != start]
    for n in lost:
        g.pred[n] = None
    g.pred[start] = end
    todo = [("pin", end, "keep", True), ("pin", start, end, None)]
    todo += [("pin", n, "none", None) for n in lost]
    edit = _finish(g, "", pins, todo)
    msg = f"track {other} joined to track {g.out[end]}"
    if lost:
        msg += f"; track(s) {', '.join(str(g.out[n]) for n in lost)} lost their parent"
    edit.message = msg
    return edit


def set_parent(labels, lineage, child: int, parent: int, *, pins: Pins | None = None) -> Edit:
    """``parent`` divides into ``child`` (and its other daughters): ``parent`` must be present
    in the frame before ``child`` starts; if it goes on after that, its later part becomes
    a second daughter. A parent ending there without other daughters is continued by
    ``child`` (one track: a cell with a single daughter is the same cell)."""
    g = _start(labels, lineage)
    c, p = g.track(child, "child track"), g.track(parent, "parent track")
    s = c[0]
    if child == parent or (s - 1) not in p:
        raise EditError(
            f"track {parent} (frames {p[0]}-{p[-1]}) is not in frame {s - 1}, the frame before "
            f"track {child} starts; a parent must be there"
        )
    end = (s - 1, parent)
    g.pred[(s, child)] = end
    todo = [("pin", end, "keep", True)]
    todo += [("pin", n, end, None) for n in g.successors(end)]
    edit = _finish(g, "", pins, todo)
    daughters = sorted(g.out[n] for n in g.successors(end))
    if len(daughters) == 1:  # the only cell after the parent's last one: the same cell
        edit.message = f"track {child} continues track {g.out[end]} (no other daughter)"
        return edit
    edit.message = f"track {g.out[end]} divides into {', '.join(map(str, daughters))}"
    if len(daughters) > 2:
        edit.message += f" ({len(daughters)} daughters)"
    return edit


def remove_parent(labels, lineage, child: int, *, pins: Pins | None = None) -> Edit:
    """``child`` starts without parent."""
    g = _start(labels, lineage)
    c = g.track(child, "child track")
    node = (c[0], child)
    if g.pred[node] is None:
        raise EditError(f"track {child} has no parent; nothing to remove")
    g.pred[node] = None
    edit = _finish(g, "", pins, [("pin", node, "none", None)])
    edit.message = f"track {g.out[node]} has no parent now"
    return edit


def delete_track(labels, lineage, track: int, *, pins: Pins | None = None) -> Edit:
    """Erase ``track`` in every frame; its daughters lose their parent. Pinned as erased (a
    re-run does not bring it back)."""
    g = _start(labels, lineage)
    todo = []
    for t in g.track(track):
        mask = np.asarray(g.labels[t]) == track
        g.labels[t][mask] = 0
        g.touched.add(t)
        g.remove((t, track))
        todo.append(("erase", t, mask))
    edit = _finish(g, f"track {track} deleted", pins, todo)
    return edit


def relabel_mask(
    labels, lineage, frame: int, mask, label: int, *, pins: Pins | None = None
) -> Edit:
    """Give the pixels of ``mask`` in ``frame`` the label ``label`` (0 erases them).

    ``label`` is a track present in ``frame`` (the pixels join that cell), a track ending
    the frame before or starting the frame after (it is extended; a track extended past its
    end loses its daughters there, one extended before its start its parent), or a new id
    (a new track). Cells that lose all their pixels are removed (their tracks cut there).
    The cells of ``frame`` changed are pinned with their links.
    """
    g = _start(labels, lineage)
    t, label = int(frame), int(label)
    if not 0 <= t < g.labels.shape[0]:
        raise EditError(f"frame {frame} is outside the movie (0-{g.labels.shape[0] - 1})")
    mask = np.asarray(mask, bool)
    if mask.shape != g.labels.shape[1:]:
        raise EditError(f"mask of shape {mask.shape}; expected {g.labels.shape[1:]}")
    if not mask.any():
        raise EditError("the mask is empty; expected some pixels to relabel")
    if label < 0:
        raise EditError(f"label {label}; expected 0 (erase) or a track id > 0")
    frames = g.frames_of(label) if label else []
    node = (t, label)
    if label and frames and t not in frames:
        if t == frames[-1] + 1:
            end = (frames[-1], label)
            for n in g.successors(end):
                g.pred[n] = None
            g.pred[node] = end
        elif t == frames[0] - 1:
            first = (frames[0], label)
            old = g.pred[first]
            g.pred[node] = old if old is not None and old[0] < t else None
            g.pred[first] = node
        else:
            raise EditError(
                f"track {label} spans frames {frames[0]}-{frames[-1]}; a cell of it in frame "
                f"{t} would leave a gap (use a new id, or a track ending or starting next to it)"
            )
    elif label and not frames:
        g.pred[node] = None
    fr = np.asarray(g.labels[t])
    before = set(np.unique(fr[mask]).tolist()) - {0, label}
    fr[mask] = label
    g.labels[t] = fr
    g.touched.add(t)
    if label:
        g.present[t].add(label)
    gone = [(t, i) for i in before if not np.any(fr == i)]
    for n in gone:
        g.remove(n)
    todo: list = []
    if label == 0:
        todo.append(("erase", t, mask))
    changed = [(t, i) for i in (before | {label}) if i and (t, i) not in gone]
    for n in changed:
        p = g.pred.get(n)
        if p is not None:
            todo.append(("pin", p, "keep", None))
        todo.append(("pin", n, p if p is not None else "none", None))
        todo += [("pin", s, n, None) for s in g.successors(n)]
    edit = _finish(g, "", pins, todo)
    if label:
        edit.message = f"frame {t}: {int(mask.sum())} pixel(s) now track {g.out[node]}"
    else:
        edit.message = f"frame {t}: {int(mask.sum())} pixel(s) erased"
    return edit


def relabel_cell(
    labels, lineage, frame: int, old: int, new: int, *, pins: Pins | None = None
) -> Edit:
    """Give cell ``old`` of ``frame`` the label ``new`` (see :func:`relabel_mask`)."""
    mask = np.asarray(labels[frame]) == old
    if old <= 0 or not mask.any():
        raise EditError(f"frame {frame} has no cell {old}; expected a label present there")
    return relabel_mask(labels, lineage, frame, mask, new, pins=pins)


def adopt_frames(labels, lineage, frames, *, pins: Pins | None = None) -> Edit:
    """Make ``lineage`` agree with ``labels`` painted by hand and pin the cells of ``frames``
    (the frames painted) with their links: a label painted into a frame next to its track
    extends it, a new label is a new track, a track whose cell was erased in a frame is cut
    there (its later part a new track without parent). Pixels erased by painting are not
    pinned (the painted labels do not say what was there): delete cells with
    :func:`delete_track` or :func:`relabel_mask` to 0 to keep them deleted."""
    g = _start(labels, lineage)
    for n, p in list(g.pred.items()):
        if p is not None and p[0] < n[0] - 1:
            g.pred[n] = None
    todo: list = []
    frames = sorted({int(t) for t in frames if 0 <= int(t) < g.labels.shape[0]})
    for t in frames:
        for i in sorted(g.present[t]):
            n, p = (t, i), g.pred[(t, i)]
            if p is not None:
                todo.append(("pin", p, "keep", None))
            todo.append(("pin", n, p if p is not None else "none", None))
    edit = _finish(g, "", pins, todo)
    edit.message = f"{len(edit.lineage)} tracks agree with the labels; frame(s) {frames} pinned"
    return edit


def pin_cell(labels, lineage, frame: int, label: int, pins: Pins | None = None) -> Pins:
    """Pin cell ``label`` of ``frame`` and its link to the frame before as they are."""
    g = _start(labels, lineage)
    g.track(label)
    node = (int(frame), int(label))
    if node not in g.pred:
        raise EditError(f"frame {frame} has no cell {label} to pin")
    p = g.pred[node]
    return _finish(g, "", pins, [
        *([("pin", p, "keep", None)] if p is not None else []),
        ("pin", node, p if p is not None else "none", None),
    ]).pins  # fmt: skip


# --------------------------------------------------------------------------- pins back
def impose_pins(
    labels, lineage, pins: Pins, *, first_frame: int = 0, in_place: bool = False
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Put pinned cells and links back into a new result (after re-clustering or re-running).

    Pinned masks overwrite the pixels there; a new cell left with less than half of its
    pixels is replaced by the pin that took most of them (its links go to that pin; its
    remaining pixels are cleared), other cells keep what remains. A pinned cell's link is
    the pinned one (or, where not pinned, that of the cell it replaced); a closed pinned
    cell keeps only its pinned successors. Pinned tracks keep their ids where they can.

    Args:
        labels: (T, Y, X) new labels (numpy, or an array-like written frame by frame when
            ``in_place``).
        lineage: their lineage.
        pins: the pins, in frames of the labels they were made on.
        first_frame: the frame of those labels that ``labels[0]`` is (pins outside are
            skipped).
        in_place: write into ``labels`` instead of a copy.

    Returns:
        (labels, lineage, frames changed): a valid CTC result.
    """
    arr = labels if in_place else np.array(labels, copy=True)
    g = _Graph(arr, lineage, copy=False)
    n_t = arr.shape[0]
    by_frame: dict[int, list[int]] = defaultdict(list)
    for k, c in pins.cells.items():
        if 0 <= c.frame - first_frame < n_t:
            by_frame[c.frame - first_frame].append(k)
    if not by_frame:
        lab, lin, frames = g.result()
        return lab, lin, frames
    top = max(g.top, max(c.label for c in pins.cells.values()))
    pin_node: dict[int, Node] = {}
    hints: dict[Node, int] = {}
    repl: dict[Node, Node | None] = {}
    old_pred: dict[Node, Node | None] = {}
    inherit: dict[int, tuple[int, Node]] = {}
    for t, keys in sorted(by_frame.items()):
        frame = np.array(arr[t])
        ids, areas = np.unique(frame, return_counts=True)
        area = dict(zip(ids.tolist(), areas.tolist(), strict=True))
        taken: dict[int, Counter] = defaultdict(Counter)
        for k in sorted(keys):
            c = pins.cells[k]
            sl = c.region()
            region = frame[sl]
            under, counts = np.unique(region[c.mask], return_counts=True)
            for lab, n in zip(under.tolist(), counts.tolist(), strict=True):
                if lab:
                    taken[lab][k] += n
            if c.erased:
                region[c.mask] = 0
            else:
                top += 1
                region[c.mask] = top
                pin_node[k] = (t, top)
                hints[(t, top)] = c.label
                g.present[t].add(top)
                g.pred[(t, top)] = None
        for lab, by_pin in taken.items():
            if (
                lab not in area
                or lab > g.top
                or 2 * (area[lab] - sum(by_pin.values())) >= area[lab]
            ):
                continue  # another pin of this frame, or a cell that keeps most of itself
            frame[frame == lab] = 0
            node = (t, lab)
            old_pred[node] = g.pred.pop(node, None)
            g.present[t].discard(lab)
            best = max(((n, k) for k, n in by_pin.items() if k in pin_node), default=(0, None))
            repl[node] = pin_node[best[1]] if best[1] is not None else None
            if best[1] is not None and best[0] > inherit.get(best[1], (0, None))[0]:
                inherit[best[1]] = (best[0], node)
        arr[t] = frame
        g.touched.add(t)
    g.top = top

    def resolve(p: Node | None) -> Node | None:
        return repl.get(p, p) if p is not None and p in repl else p

    for n, p in list(g.pred.items()):
        g.pred[n] = resolve(p)
    for k, node in pin_node.items():
        c = pins.cells[k]
        if c.pred == FREE:
            src = inherit.get(k)
            p = resolve(old_pred.get(src[1])) if src else None
        elif c.pred == NO_LINK:
            p = None
        else:
            p = pin_node.get(c.pred)
        g.pred[node] = p if p is not None and p[0] < node[0] and p in g.pred else None
    # a link across frames where the new result lost the cell (a gap) that a pinned cell
    # now fills goes through the pinned cell
    pinned_succ: dict[Node, list[Node]] = defaultdict(list)
    for node in pin_node.values():
        if g.pred[node] is not None:
            pinned_succ[g.pred[node]].append(node)
    for n, p in list(g.pred.items()):
        while p is not None and p[0] < n[0] - 1:
            nxt = [q for q in pinned_succ.get(p, ()) if q[0] < n[0] and q != n]
            if not nxt:
                break
            p = g.pred[n] = min(nxt)
    closed = {node: k for k, node in pin_node.items() if pins.cells[k].closed}
    pinned_pred = {node: pins.cells[k].pred for k, node in pin_node.items()}
    for n, p in list(g.pred.items()):
        if p in closed and pinned_pred.get(n) != closed[p]:
            g.pred[n] = None
    return g.result(hints, set(pin_node.values()))


# --------------------------------------------------------------------------- undo
@dataclass
class _Step:
    frames: dict[int, np.ndarray]  # frame -> labels of that frame on the other side
    lineage: np.ndarray
    pins: Pins | None
    message: str


class UndoStack:
    """Undo and redo of edits: stores, per edit, the frames it changed as they were, the
    lineage and the pins before it."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._undo: list[_Step] = []
        self._redo: list[_Step] = []

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def record(self, labels, lineage, edit: Edit, pins: Pins | None = None) -> None:
        """Remember the state before ``edit`` (``labels`` / ``lineage`` / ``pins`` as they
        were; only ``edit.frames`` are copied)."""
        frames = {t: np.array(labels[t]) for t in edit.frames}
        self._undo.append(_Step(frames, np.array(lineage), pins, edit.message))
        del self._undo[: -self.limit]
        self._redo.clear()

    def _swap(self, src: list[_Step], dst: list[_Step], labels, lineage, pins, verb) -> Edit:
        if not src:
            raise EditError(f"nothing to {verb}")
        step = src.pop()
        out = np.array(labels, copy=True)
        back = {t: np.array(labels[t]) for t in step.frames}
        for t, frame in step.frames.items():
            out[t] = frame
        dst.append(_Step(back, np.array(lineage), pins, step.message))
        return Edit(
            out, step.lineage, sorted(step.frames), f"{verb}: {step.message}",
            step.pins if step.pins is not None else Pins(),
        )  # fmt: skip

    def undo(self, labels, lineage, pins: Pins | None = None) -> Edit:
        """The state before the last edit, as an :class:`Edit` of the current one."""
        return self._swap(self._undo, self._redo, labels, lineage, pins, "undo")

    def redo(self, labels, lineage, pins: Pins | None = None) -> Edit:
        return self._swap(self._redo, self._undo, labels, lineage, pins, "redo")

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()


# --------------------------------------------------------------------------- checks
def check_result(labels, lineage) -> None:
    """Raise ValueError unless ``labels`` / ``lineage`` are a valid CTC result: unique ids,
    every track present in every frame of [start, end] and nowhere else, parents listed and
    ending before their daughters start (the CTC reader's checks)."""
    from ..io import ctc
    from ..io.tracks import _present_ids

    labels = np.asarray(labels)
    lineage = np.asarray(lineage, np.int64).reshape(-1, 4)
    ctc._check_lineage_table(lineage, "lineage", exc=ValueError)
    ctc._check_masks_against_lineage(
        [_present_ids(f) for f in labels], lineage, lambda t: f"frame {t}", "lineage",
        require_full=True, exc=ValueError,
    )  # fmt: skip
