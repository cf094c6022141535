"""Deterministic synthetic time-lapse movies of dividing cells, with exact ground truth.

:func:`make_movie` simulates cells as irregular ellipses that grow, drift in a random walk,
touch without overlapping (each pixel belongs to the cell it is "deepest" in) and divide. The
result holds the image, exact instance masks whose label is the track id, and the CTC lineage.
:func:`write_ctc` writes it in the Cell Tracking Challenge layout so that
:func:`napari_embedtrack.io.ctc.evaluate` and the training code can use it like real data.

Choices: cells never leave the frame (centres are reflected at a margin of one cell radius),
so a track ends only when its cell divides or the movie ends. A division at frame t means the
parent's last frame is t-1 and both daughters (new ids) start at t, each with about half the
parent's area, side by side along the parent's long axis. The default movie always contains a
division (one is forced half-way through if chance produced none).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from .io.ctc import PathLike, _atomic_folder, frame_digits, write_ground_truth

log = logging.getLogger(__name__)

__all__ = ["SyntheticMovie", "make_movie", "write_ctc"]


@dataclass
class SyntheticMovie:
    """A synthetic movie with exact ground truth.

    Attributes
    ----------
    image : numpy.ndarray
        ``(T, Y, X)`` float32; background about ``background`` with Gaussian noise, cells
        brighter (values roughly in [0, 1.5]).
    labels : numpy.ndarray
        ``(T, Y, X)`` uint16 instance masks, label = track id, 0 = background.
    lineage : numpy.ndarray
        ``(N, 4)`` int64 ``[id, start, end, parent]`` sorted by id, consistent with ``labels``.
    """

    image: np.ndarray
    labels: np.ndarray
    lineage: np.ndarray

    @property
    def n_divisions(self) -> int:
        """Number of parent tracks with two daughters."""
        parents = self.lineage[:, 3]
        _, counts = np.unique(parents[parents > 0], return_counts=True)
        return int(np.count_nonzero(counts == 2))


@dataclass
class _Cell:
    id: int
    y: float
    x: float
    a: float  # semi-axis along the angle (long), pixels
    b: float  # semi-axis across (short), pixels
    angle: float
    brightness: float
    wobble_amp: float
    wobble_phase: float
    age: int = 0


def make_movie(
    n_frames: int = 10,
    shape: tuple[int, int] = (128, 128),
    n_cells: int = 6,
    seed: int = 0,
    division_rate: float = 0.1,
    radius: tuple[float, float] = (6.0, 10.0),
    speed: float = 1.5,
    growth: float = 1.03,
    min_division_age: int = 3,
    noise: float = 0.04,
    background: float = 0.1,
    blur: float = 1.0,
    force_division: bool = True,
) -> SyntheticMovie:
    """Simulate a movie of moving, touching and dividing cells.

    Parameters
    ----------
    n_frames : int
        Number of frames T.
    shape : (int, int)
        Frame size (Y, X).
    n_cells : int
        Cells in the first frame.
    seed : int
        Random seed; the same arguments always give the same movie.
    division_rate : float
        Probability per frame that a cell at least ``min_division_age`` frames old divides.
    radius : (float, float)
        Range of the initial mean cell radius in pixels (semi-axes vary around it).
    speed : float
        Standard deviation of the random-walk step per frame, pixels.
    growth : float
        Per-frame growth factor of the semi-axes (capped at 1.3 x ``radius[1]``).
    min_division_age : int
        Frames a cell lives before it may divide.
    noise : float
        Standard deviation of the additive Gaussian noise.
    background : float
        Background intensity.
    blur : float
        Gaussian blur sigma (pixels) applied to the noise-free image (0: none).
    force_division : bool
        If no division happened by frame ``n_frames // 2``, divide the largest cell there
        (needs ``n_frames >= 2``).

    Returns
    -------
    SyntheticMovie
    """
    if n_frames < 1 or n_cells < 1:
        raise ValueError(f"n_frames={n_frames}, n_cells={n_cells}; expected both >= 1")
    ny, nx = (int(s) for s in shape)
    if min(ny, nx) < 4 * radius[1]:
        raise ValueError(f"shape {shape} is too small for cells of radius up to {radius[1]}")
    rng = np.random.default_rng(seed)
    max_axis = 1.3 * radius[1]
    min_daughter_axis = 3.0

    cells = _initial_cells(rng, n_cells, (ny, nx), radius)
    next_id = len(cells) + 1
    start = {c.id: 0 for c in cells}
    end: dict[int, int] = {}
    parent_of = {c.id: 0 for c in cells}
    n_div = 0

    labels = np.zeros((n_frames, ny, nx), dtype=np.uint16)
    image = np.zeros((n_frames, ny, nx), dtype=np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx]

    for t in range(n_frames):
        if t > 0:
            # divisions: parent's last frame is t-1, daughters start at t
            forced = force_division and n_div == 0 and t == n_frames // 2
            area_frac = sum(np.pi * c.a * c.b for c in cells) / (ny * nx)
            new_cells: list[_Cell] = []
            candidates = sorted(cells, key=lambda c: -c.a * c.b) if forced else cells
            for c in candidates:
                can = c.b * 0.85 >= min_daughter_axis and c.a * 0.6 >= min_daughter_axis
                chance = c.age >= min_division_age and rng.random() < division_rate
                if can and area_frac < 0.35 and (chance or forced):
                    forced = False
                    n_div += 1
                    end[c.id] = t - 1
                    for sign in (-1.0, 1.0):
                        d = _daughter(rng, c, sign, next_id)
                        start[d.id], parent_of[d.id] = t, c.id
                        next_id += 1
                        new_cells.append(d)
                else:
                    new_cells.append(c)
            cells = new_cells
            # motion and growth
            for c in cells:
                c.y += rng.normal(0.0, speed)
                c.x += rng.normal(0.0, speed)
                c.angle += rng.normal(0.0, 0.1)
                c.a = min(c.a * growth, max_axis)
                c.b = min(c.b * growth, max_axis)
                c.age += 1
        _separate(cells)
        for c in cells:
            m = max(c.a, c.b) + 1.0
            c.y = _reflect(c.y, m, ny - 1 - m)
            c.x = _reflect(c.x, m, nx - 1 - m)
        labels[t], image[t] = _render(rng, cells, yy, xx, background, noise, blur)

    for c in cells:
        end[c.id] = n_frames - 1
    lineage = np.array(
        [[i, start[i], end[i], parent_of[i]] for i in sorted(start)], dtype=np.int64
    ).reshape(-1, 4)
    log.debug("synthetic movie: %s frames, %s tracks, %s divisions", n_frames, len(lineage), n_div)
    return SyntheticMovie(image=image, labels=labels, lineage=lineage)


def _initial_cells(
    rng: np.random.Generator, n: int, shape: tuple[int, int], radius: tuple[float, float]
) -> list[_Cell]:
    ny, nx = shape
    cells: list[_Cell] = []
    for i in range(n):
        r = rng.uniform(*radius)
        elong = rng.uniform(1.0, 1.6)
        a, b = r * np.sqrt(elong), r / np.sqrt(elong)
        m = a + 1.0
        best = None
        for _ in range(50):  # keep some spacing if possible
            y, x = rng.uniform(m, ny - 1 - m), rng.uniform(m, nx - 1 - m)
            gap = min((np.hypot(y - c.y, x - c.x) - c.a - a for c in cells), default=np.inf)
            if best is None or gap > best[0]:
                best = (gap, y, x)
            if gap > 2.0:
                break
        _, y, x = best
        cells.append(
            _Cell(
                id=i + 1,
                y=y,
                x=x,
                a=a,
                b=b,
                angle=rng.uniform(0, np.pi),
                brightness=rng.uniform(0.35, 1.0),
                wobble_amp=rng.uniform(0.0, 0.12),
                wobble_phase=rng.uniform(0, 2 * np.pi),
                age=int(rng.integers(0, 4)),
            )
        )
    return cells


def _daughter(rng: np.random.Generator, c: _Cell, sign: float, new_id: int) -> _Cell:
    """One of two daughters: half the area, placed along the parent's long axis."""
    shift = 0.5 * c.a
    return _Cell(
        id=new_id,
        y=c.y + sign * shift * np.sin(c.angle),
        x=c.x + sign * shift * np.cos(c.angle),
        a=0.6 * c.a,
        b=0.85 * c.b,
        angle=c.angle + np.pi / 2 + rng.normal(0.0, 0.2),
        brightness=float(np.clip(c.brightness * rng.uniform(0.9, 1.1), 0.25, 1.1)),
        wobble_amp=c.wobble_amp,
        wobble_phase=rng.uniform(0, 2 * np.pi),
        age=0,
    )


def _separate(cells: list[_Cell], iterations: int = 5) -> None:
    """Push apart cells whose centres are closer than 0.8 x the sum of their mean radii."""
    if len(cells) < 2:
        return
    for _ in range(iterations):
        pos = np.array([[c.y, c.x] for c in cells])
        r = np.array([np.sqrt(c.a * c.b) for c in cells])
        diff = pos[:, None, :] - pos[None, :, :]
        dist = np.hypot(diff[..., 0], diff[..., 1])
        np.fill_diagonal(dist, np.inf)
        overlap = 0.8 * (r[:, None] + r[None, :]) - dist
        if not np.any(overlap > 0):
            return
        push = np.where(overlap > 0, overlap / 2.0, 0.0)
        direction = diff / np.maximum(dist, 1e-6)[..., None]
        # coincident centres: push apart along y, the lower index upwards
        same = dist < 1e-6
        upper = np.triu(np.ones_like(same), k=1)
        direction[same & upper] = (-1.0, 0.0)
        direction[same & ~upper] = (1.0, 0.0)
        move = (push[..., None] * direction).sum(axis=1)
        for c, (dy, dx) in zip(cells, move, strict=True):
            c.y += dy
            c.x += dx


def _reflect(v: float, lo: float, hi: float) -> float:
    if hi <= lo:
        return (lo + hi) / 2.0
    if v < lo:
        v = 2 * lo - v
    if v > hi:
        v = 2 * hi - v
    return float(min(max(v, lo), hi))


def _render(
    rng: np.random.Generator,
    cells: list[_Cell],
    yy: np.ndarray,
    xx: np.ndarray,
    background: float,
    noise: float,
    blur: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise cells (labels) and draw the image of one frame.

    Each pixel goes to the cell with the smallest normalised distance (< 1 = inside), so cells
    touch without overlapping and every cell keeps the pixels around its centre.
    """
    ny, nx = yy.shape
    best = np.full((ny, nx), np.inf)
    lab = np.zeros((ny, nx), dtype=np.uint16)
    signal = np.zeros((ny, nx))
    for c in cells:
        m = int(np.ceil(max(c.a, c.b) * 1.2)) + 1
        y0, y1 = max(int(c.y) - m, 0), min(int(c.y) + m + 1, ny)
        x0, x1 = max(int(c.x) - m, 0), min(int(c.x) + m + 1, nx)
        dy, dx = yy[y0:y1, x0:x1] - c.y, xx[y0:y1, x0:x1] - c.x
        ca, sa = np.cos(c.angle), np.sin(c.angle)
        u, v = dx * ca + dy * sa, -dx * sa + dy * ca
        theta = np.arctan2(v, u)
        wobble = 1.0 + c.wobble_amp * np.cos(3 * theta + c.wobble_phase)
        d = np.sqrt((u / c.a) ** 2 + (v / c.b) ** 2) / wobble
        take = (d < 1.0) & (d < best[y0:y1, x0:x1])
        best[y0:y1, x0:x1][take] = d[take]
        lab[y0:y1, x0:x1][take] = c.id
        # dome-shaped intensity, brighter in the middle
        signal[y0:y1, x0:x1][take] = c.brightness * (1.0 - 0.35 * d[take] ** 2)
    # texture: smooth multiplicative noise inside cells
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (ny, nx)), 1.5)
    texture /= max(float(texture.std()), 1e-6)
    img = background + signal * (1.0 + 0.12 * texture)
    if blur > 0:
        img = ndimage.gaussian_filter(img, blur)
    img = img + rng.normal(0.0, noise, (ny, nx))
    return lab, img.astype(np.float32)


def write_ctc(
    movie: SyntheticMovie, root: PathLike, seq: str = "01", overwrite: bool = False
) -> tuple[Path, Path]:
    """Write a synthetic movie in the Cell Tracking Challenge layout.

    Writes ``root/<seq>/tNNN.tif`` (uint16 image, ``round(1000 * clip(image, 0, 65.5))``) and
    ``root/<seq>_GT/TRA`` (markers = full masks, ``man_track.txt``) plus ``root/<seq>_GT/SEG``
    (complete masks for every frame). Each folder is written atomically.

    Parameters
    ----------
    movie : SyntheticMovie
    root : path
        Dataset folder (created if needed).
    seq : str
        Sequence name, e.g. ``"01"``.
    overwrite : bool
        Replace existing non-empty sequence folders.

    Returns
    -------
    (Path, Path)
        The image sequence folder and the ground-truth folder.
    """
    root = Path(root)
    seq_dir, gt_dir = root / seq, root / f"{seq}_GT"
    nd = frame_digits(movie.image.shape[0])
    frames = np.round(np.clip(movie.image, 0.0, 65.5) * 1000.0).astype(np.uint16)
    with _atomic_folder(seq_dir, overwrite) as tmp:
        for t, frame in enumerate(frames):
            tifffile.imwrite(tmp / f"t{t:0{nd}d}.tif", frame)
    write_ground_truth(
        gt_dir,
        movie.labels,
        movie.lineage,
        seg={t: movie.labels[t] for t in range(movie.labels.shape[0])},
        ndigits=nd,
        overwrite=overwrite,
    )
    return seq_dir, gt_dir
