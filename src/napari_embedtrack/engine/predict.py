"""Network outputs for a movie: normalisation, tiling, test-time augmentation, feature reuse.

:func:`iter_outputs` turns a movie ``(T, Y, X)`` into one :class:`FrameOutput` per frame, in
pixel units (see docs/architecture.md):

- every frame is normalised on its own with percentiles over the whole frame (:func:`normalize`);
- the frame is cut into square tiles of the model's crop size with overlap, the same tile
  positions for every frame; a frame smaller than a tile is reflect-padded, never cropped;
- each tile is run under the 8 symmetries of the square (test-time augmentation, TTA); the
  outputs are mapped back, including the vector channels (:func:`tta_transforms`), and averaged;
- overlapping tiles are blended with a cosine ramp over the overlap that keeps full weight at
  the image border;
- the encoder features of frame t (per tile and transform) are kept and reused as the t-1
  features of the next pair, so a frame costs one encode, one segmentation decode and one
  tracking decode per tile and transform.

Network offsets are on the normalised grid (pixel i has coordinate ``i * grid_spacing``) and are
relative vectors, so tile origins need no correction; they become pixels by dividing by the grid
spacing.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from .model import STRIDE
from .outputs import FrameOutput
from .resources import available_memory, cpu_has_native_bf16

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_PERCENTILES",
    "DihedralTransform",
    "FrameOutput",
    "auto_amp",
    "cpu_has_native_bf16",
    "fold_batchnorm",
    "iter_outputs",
    "load_outputs",
    "normalize",
    "outputs_to_arrays",
    "resolve_device",
    "save_outputs",
    "tta_transforms",
]

log = logging.getLogger(__name__)

DEFAULT_PERCENTILES = (1.0, 99.8)
DEFAULT_OVERLAP = 0.25
OUTPUT_FIELDS = ("seediness", "bandwidth", "offsets", "track_offsets")
FILE_FORMAT = "napari-embedtrack-outputs-v1"


# --------------------------------------------------------------------------- normalisation
def normalize(
    frame: np.ndarray,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    *,
    frame_index: int | None = None,
) -> np.ndarray:
    """Percentile-normalise one frame over its whole area.

    Parameters
    ----------
    frame : (Y, X) array of any integer or float dtype.
    percentiles : (low, high) percentiles mapped to 0 and 1; values beyond are kept (not
        clipped). If the two percentiles coincide, the frame's min and max are used; a
        constant frame gives zeros.
    frame_index : index named in error messages.

    Returns
    -------
    (Y, X) float32 array.

    Raises
    ------
    ValueError
        for a non-2-D or non-numeric frame, bad percentiles, or NaN / infinite pixels.
    """
    where = "image" if frame_index is None else f"frame {frame_index}"
    arr = np.asarray(frame)
    if arr.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D (Y, X) image, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{where}: expected an integer or float image, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{where}: image is empty (shape {arr.shape})")
    lo_p, hi_p = (float(p) for p in percentiles)
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    x = arr.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{where} contains NaN or infinite pixels; replace them before prediction")
    lo, hi = np.percentile(x, [lo_p, hi_p])
    if hi <= lo:
        lo, hi = x.min(), x.max()
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


# --------------------------------------------------------------------------- device
def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"mps"`` into a device.

    ``"auto"`` picks CUDA, then MPS, then CPU.

    Raises
    ------
    ValueError
        if the name is unknown or the device is not available in this PyTorch.
    """
    if isinstance(name, torch.device):
        dev = name
    else:
        key = str(name).strip().lower()
        if key == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            return torch.device("mps") if _mps_available() else torch.device("cpu")
        try:
            dev = torch.device(key)
        except RuntimeError:
            raise ValueError(
                f"unknown device {name!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but CUDA is not available to this PyTorch "
                f"({torch.__version__}); use 'cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {name!r} requested but Apple MPS is not available")
        return dev
    raise ValueError(f"unsupported device {name!r}; expected 'auto', 'cpu', 'cuda' or 'mps'")


def _amp_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.float16 if device.type == "mps" else torch.bfloat16


# --------------------------------------------------------------------------- TTA
@dataclass(frozen=True)
class DihedralTransform:
    """One of the 8 symmetries of the square: an optional flip along x, then quarter turns.

    A pixel at ``p = (y, x)`` moves to ``p' = A p + b`` with the signed permutation matrix
    :attr:`matrix` ``A``; a vector (an offset) ``v`` becomes ``A v``; the bandwidths (y, x)
    swap when ``A`` swaps the axes. The inverses map outputs of the transformed image back to
    the original frame, vector channels included.

    Attributes
    ----------
    rotations : number of quarter turns as in ``torch.rot90(..., dims=(-2, -1))``.
    flip : flip along x (``x -> W - 1 - x``) before rotating.
    """

    rotations: int
    flip: bool

    @property
    def matrix(self) -> np.ndarray:
        """(2, 2) int array ``A`` acting on (y, x) coordinates and vectors."""
        turn = np.array([[0, -1], [1, 0]])  # torch.rot90 k=1: (y, x) -> (W - 1 - x, y)
        mirror = np.diag([1, -1]) if self.flip else np.eye(2, dtype=int)
        return np.linalg.matrix_power(turn, self.rotations % 4) @ mirror

    @property
    def swaps_axes(self) -> bool:
        return self.rotations % 2 == 1

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Transform images (..., H, W) -> (..., H', W')."""
        x = image.flip(-1) if self.flip else image
        return torch.rot90(x, self.rotations, dims=(-2, -1))

    def _inverse_spatial(self, t: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(t, -self.rotations, dims=(-2, -1))
        return x.flip(-1) if self.flip else x

    def _inverse_vectors(self, v: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) vectors (y, x) of the transformed frame -> original: ``A^T v``."""
        a_t = self.matrix.T
        parts = []
        for i in range(2):
            j = int(np.flatnonzero(a_t[i])[0])
            parts.append(v[:, j] * float(a_t[i, j]))
        return torch.stack(parts, 1)

    def inverse_seg(self, seg: torch.Tensor) -> torch.Tensor:
        """Map (B, 5, H', W') ``[off_y, off_x, bw_y, bw_x, seed]`` back to the original frame."""
        s = self._inverse_spatial(seg)
        bw = s[:, 2:4].flip(1) if self.swaps_axes else s[:, 2:4]
        return torch.cat([self._inverse_vectors(s[:, 0:2]), bw, s[:, 4:5]], 1)

    def inverse_track(self, track: torch.Tensor) -> torch.Tensor:
        """Map (B, 2, H', W') ``[toff_y, toff_x]`` back to the original frame."""
        return self._inverse_vectors(self._inverse_spatial(track))


def tta_transforms(enabled: bool = True) -> tuple[DihedralTransform, ...]:
    """The 8 dihedral transforms (identity first), or only the identity if not ``enabled``.

    Rotated inputs keep their shape only for square images, which tiles are.
    """
    if not enabled:
        return (DihedralTransform(0, False),)
    return tuple(DihedralTransform(k, f) for f in (False, True) for k in range(4))


# --------------------------------------------------------------------------- speed settings
#: bytes of activations per input pixel of one network job (encode + seg and track decode),
#: measured in fp32 on CPU (benchmarks/README: 1024 x 1024 took ~250 MB); used to size tiles
#: and batches.
JOB_BYTES_PER_PIXEL = 300
#: largest memory the CPU path plans to use for one batch of jobs
CPU_BATCH_BYTES = 2 * 1024**3


def auto_amp(device: torch.device) -> bool:
    """Whether mixed precision pays on ``device``: CUDA, or a CPU with native bf16."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_native_bf16()


def _memory_budget(device: torch.device) -> int:
    """Bytes one batch of network jobs may use on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    avail = available_memory()
    if avail is None:
        avail = 8 * CPU_BATCH_BYTES
    return int(min(CPU_BATCH_BYTES, avail // 4))


def auto_tile(shape: tuple[int, int], crop_size: int, device: torch.device) -> int:
    """Tile side for a frame of ``shape`` (network pixels): the whole frame when one job of it
    fits the device's memory budget, else the largest multiple of ``crop_size`` that does."""
    budget = _memory_budget(device)
    side = max(_ceil8(shape[0]), _ceil8(shape[1]))
    if shape[0] * shape[1] * JOB_BYTES_PER_PIXEL <= budget:
        return side
    n = max(1, math.isqrt(budget // JOB_BYTES_PER_PIXEL) // crop_size)
    return n * crop_size


def auto_batch_size(tile_pixels: int, n_jobs: int, device: torch.device) -> int:
    """Jobs per network call: as many as fit the memory budget, at most 64 on a GPU; on a CPU
    at most 8 (batching does not speed up a CPU's convolutions, it only saves call overhead)."""
    cap = 64 if device.type == "cuda" else 8
    fit = _memory_budget(device) // max(1, tile_pixels * JOB_BYTES_PER_PIXEL)
    return int(max(1, min(cap, n_jobs, fit)))


def _ceil8(n: int) -> int:
    return -(-int(n) // STRIDE) * STRIDE


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of an :class:`EmbedTrackNet` with every BatchNorm folded into the
    convolution before it (outputs equal to ~1e-6; ~5 % faster on CPU). The model given is not
    changed. Models of other classes are returned as they are."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from .model import DownsamplerBlock, EmbedTrackNet, NonBottleneck1D, UpsamplerBlock

    if not isinstance(model, EmbedTrackNet):
        return model
    net = copy.deepcopy(model).eval()
    for mod in list(net.modules()):
        if isinstance(mod, NonBottleneck1D):
            mod.conv1x3_1 = fuse_conv_bn_eval(mod.conv1x3_1, mod.bn1)
            mod.conv1x3_2 = fuse_conv_bn_eval(mod.conv1x3_2, mod.bn2)
            mod.bn1, mod.bn2 = nn.Identity(), nn.Identity()
        elif isinstance(mod, UpsamplerBlock):
            mod.conv = fuse_conv_bn_eval(mod.conv, mod.bn, transpose=True)
            mod.bn = nn.Identity()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DownsamplerBlock):
                setattr(parent, name, _FoldedDownsampler(child))
    return net


class _FoldedDownsampler(nn.Module):
    """DownsamplerBlock with its BatchNorm folded: into the convolution for the convolution's
    channels, into a per-channel scale and shift for the pooled ones."""

    def __init__(self, block: nn.Module):
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        super().__init__()
        n, bn = block.conv.out_channels, block.bn
        conv_bn = nn.BatchNorm2d(n, eps=bn.eps).eval()
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(conv_bn, name).copy_(getattr(bn, name)[:n])
            scale = bn.weight[n:] / torch.sqrt(bn.running_var[n:] + bn.eps)
            shift = bn.bias[n:] - bn.running_mean[n:] * scale
        self.conv = fuse_conv_bn_eval(block.conv.eval(), conv_bn)
        self.pool = block.pool
        self.register_buffer("pool_scale", scale.detach().reshape(1, -1, 1, 1).clone())
        self.register_buffer("pool_shift", shift.detach().reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x) * self.pool_scale + self.pool_shift
        return F.relu(torch.cat([self.conv(x), pooled], 1))


# --------------------------------------------------------------------------- tiling
def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start indices of tiles of size ``tile`` covering ``length`` pixels, evenly spread.

    Neighbours overlap by at least ``overlap`` pixels; the last tile ends at ``length``.
    ``length <= tile`` gives one tile (the caller pads).
    """
    if length <= tile:
        return [0]
    step = tile - overlap
    n = math.ceil((length - tile) / step) + 1
    return [i * (length - tile) // (n - 1) for i in range(n)]


def blend_weights(starts: list[int], tile: int) -> list[np.ndarray]:
    """1-D blending weights (tile,) float32 for each tile start along one axis.

    A raised-cosine ramp over the smallest overlap between neighbours on every side that faces
    another tile; sides at the image border keep weight 1, and no weight is exactly zero.
    """
    n = len(starts)
    ramp_len = tile - max(np.diff(starts), default=tile)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(max(ramp_len, 0)) + 0.5) / max(ramp_len, 1))
    weights = []
    for i in range(n):
        w = np.ones(tile)
        if ramp_len > 0 and i > 0:
            w[:ramp_len] *= ramp
        if ramp_len > 0 and i < n - 1:
            w[tile - ramp_len :] *= ramp[::-1]
        weights.append(w.astype(np.float32))
    return weights


class _TiledPredictor:
    """Tiled, TTA-averaged outputs of one frame after another, reusing encoder features.

    The jobs (tile, transform) are in a fixed order and batched the same way for every frame,
    so batch ``b`` of frame t-1 holds the features that batch ``b`` of frame t pairs with.
    Jobs whose transformed tiles differ in shape (quarter turns of a non-square tile) go to
    different batches. A batch's outputs are mapped back to the frame (inverse transform,
    vector channels, blending weights) and added to the frame's sums in one batched operation
    (a channel-mixing matrix product and one ``index_add_``), not one small operation per job.
    """

    def __init__(
        self,
        model: nn.Module,
        shape: tuple[int, int],
        tile: int,
        overlap_px: int,
        transforms: tuple[DihedralTransform, ...],
        device: torch.device,
        batch_size: int | None,
        amp_dtype: torch.dtype | None,
        reuse_features: bool = True,
    ):
        self.model = model
        self.shape = shape
        self.transforms = transforms
        self.device = device
        self.amp_dtype = amp_dtype
        self.reuse_features = reuse_features
        th, tw = (min(int(tile), _ceil8(s)) for s in shape)
        self.tile_hw = (th, tw)
        self.padded = (max(shape[0], th), max(shape[1], tw))
        extra = [p - s for s, p in zip(shape, self.padded, strict=True)]
        self.pad = [(e // 2, e - e // 2) for e in extra]  # reflect, centred
        starts = [
            tile_starts(p, t, min(overlap_px, t - 1))
            for p, t in zip(self.padded, self.tile_hw, strict=True)
        ]
        weights = [blend_weights(s, t) for s, t in zip(starts, self.tile_hw, strict=True)]
        self.tiles = [(y, x) for y in starts[0] for x in starts[1]]
        tile_weights = [np.outer(wy, wx) for wy in weights[0] for wx in weights[1]]
        total = np.zeros(self.padded, np.float32)
        for (y, x), wt in zip(self.tiles, tile_weights, strict=True):
            total[y : y + th, x : x + tw] += wt * len(transforms)
        self.inv_total = torch.from_numpy(1.0 / total).to(device)
        jobs = [(i, j) for i in range(len(self.tiles)) for j in range(len(transforms))]
        swapped = {jb: transforms[jb[1]].swaps_axes and th != tw for jb in jobs}
        groups = [[jb for jb in jobs if swapped[jb] == s] for s in (False, True)]
        if batch_size is None:
            batch_size = auto_batch_size(th * tw, len(jobs), device)
        self.batch_size = int(batch_size)
        self.batches = [
            g[k : k + self.batch_size] for g in groups for k in range(0, len(g), self.batch_size)
        ]
        self.trivial = len(jobs) == 1 and self.padded == self.tile_hw
        self.plans = None if self.trivial else [self._plan(b, tile_weights) for b in self.batches]
        self.prev_features: list[torch.Tensor] | None = None
        self.prev_frame: torch.Tensor | None = None
        log.debug(
            "frame %s padded to %s: %d tiles of %s px x %d transforms in %d batches of <= %d",
            shape, self.padded, len(self.tiles), self.tile_hw, len(transforms),
            len(self.batches), self.batch_size,
        )  # fmt: skip

    def _plan(self, jobs: list[tuple[int, int]], tile_weights: list[np.ndarray]):
        """Where a batch's output pixels land in the padded frame, their blending weights and
        the per-job matrices that map vector channels back (``A^T``; bandwidths ``|A^T|``)."""
        width = self.padded[1]
        th, tw = self.tile_hw
        base = torch.arange(th)[:, None] * width + torch.arange(tw)[None, :]
        index, weight, m_seg, m_track = [], [], [], []
        for i, j in jobs:
            y, x = self.tiles[i]
            tf = self.transforms[j]
            index.append(tf.forward(base + (y * width + x)).reshape(-1))
            weight.append(tf.forward(torch.from_numpy(tile_weights[i])).reshape(1, -1))
            a_t = torch.from_numpy(tf.matrix.T.astype(np.float32))
            m_seg.append(torch.block_diag(a_t, a_t.abs(), torch.ones(1, 1)))
            m_track.append(a_t)
        dev = self.device
        return (
            torch.cat(index).to(dev),
            torch.stack(weight).to(dev),
            torch.stack(m_seg).to(dev),
            torch.stack(m_track).to(dev),
        )

    def reset(self) -> None:
        """Forget the previous frame (the next frame gets zero tracking offsets)."""
        self.prev_features = None
        self.prev_frame = None

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Outputs of the next frame of the movie.

        Parameters
        ----------
        image : (Y, X) float32 normalised frame.

        Returns
        -------
        seg : (5, Y, X) float32 ``[off_y, off_x, bw_y, bw_x, seed]``, grid units.
        track : (2, Y, X) float32 tracking offsets in grid units, or None for the first frame.
        """
        padded = np.pad(image, self.pad, mode="reflect") if any(map(any, self.pad)) else image
        has_track = self.prev_features is not None or self.prev_frame is not None
        with torch.inference_mode():
            frame = torch.from_numpy(np.ascontiguousarray(padded)).to(self.device)
            seg_acc = torch.zeros((5, *self.padded), device=self.device)
            track_acc = torch.zeros((2, *self.padded), device=self.device)
            features = []
            for b, jobs in enumerate(self.batches):
                prev = None if self.prev_features is None else self.prev_features[b]
                feats, seg, track = self._run_batch(frame, jobs, prev)
                if self.reuse_features:
                    features.append(feats)
                plan = None if self.plans is None else self.plans[b]
                self._accumulate(seg_acc, seg, plan, 2)
                if track is not None:
                    self._accumulate(track_acc, track, plan, 3)
            if self.reuse_features:
                self.prev_features = features
            else:
                self.prev_frame = frame
            (y0, _), (x0, _) = self.pad
            crop = (slice(None), slice(y0, y0 + self.shape[0]), slice(x0, x0 + self.shape[1]))
            if self.trivial:
                seg_out = seg_acc[crop].cpu().numpy()
                track_out = track_acc[crop].cpu().numpy() if has_track else None
            else:
                seg_out = (seg_acc * self.inv_total)[crop].cpu().numpy()
                track_out = (track_acc * self.inv_total)[crop].cpu().numpy() if has_track else None
        return seg_out, track_out

    def _crops(self, frame: torch.Tensor, jobs: list[tuple[int, int]]) -> torch.Tensor:
        th, tw = self.tile_hw
        crops = []
        for i, j in jobs:
            y, x = self.tiles[i]
            crops.append(self.transforms[j].forward(frame[y : y + th, x : x + tw]))
        return torch.stack(crops)[:, None].contiguous(memory_format=torch.channels_last)

    def _run_batch(
        self, frame: torch.Tensor, jobs: list[tuple[int, int]], prev: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        batch = self._crops(frame, jobs)
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            feats = self.model.encode(batch)
            seg = self.model.decode_seg(feats)
            if prev is None and self.prev_frame is not None:  # reference: encode t-1 again
                prev = self.model.encode(self._crops(self.prev_frame, jobs))
            track = None if prev is None else self.model.decode_track(feats, prev)
        return feats, seg.float(), None if track is None else track.float()

    def _accumulate(self, acc: torch.Tensor, out: torch.Tensor, plan, which: int) -> None:
        """Add a batch's outputs (B, C, h, w) into the frame sums ``acc`` (C, H, W)."""
        if plan is None:  # one job, identity, the whole padded frame
            acc += out[0]
            return
        index, weight, matrices = plan[0], plan[1], plan[which]
        b, c = out.shape[:2]
        vals = torch.bmm(matrices, out.reshape(b, c, -1)) * weight
        acc.view(c, -1).index_add_(1, index, vals.permute(1, 0, 2).reshape(c, -1))


# --------------------------------------------------------------------------- main API
def _check_args(
    movie, grid_spacing, crop_size, percentiles, overlap, batch_size, tile_size
) -> None:
    shape = tuple(movie.shape)
    if movie.ndim not in (2, 3) or 0 in shape:
        raise ValueError(f"movie must be a non-empty (T, Y, X) or (Y, X) array, got shape {shape}")
    try:
        spacing = float(grid_spacing)
    except (TypeError, ValueError):
        spacing = float("nan")
    if not (math.isfinite(spacing) and spacing > 0):
        raise ValueError(f"grid_spacing must be a positive number, got {grid_spacing!r}")
    if int(crop_size) != crop_size or crop_size < STRIDE or crop_size % STRIDE:
        raise ValueError(f"crop_size must be a positive multiple of {STRIDE}, got {crop_size!r}")
    lo, hi = percentiles
    if not 0.0 <= lo < hi <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if tile_size is not None and (
        int(tile_size) != tile_size or tile_size < STRIDE or tile_size % STRIDE
    ):
        raise ValueError(
            f"tile_size must be a positive multiple of {STRIDE} or None, got {tile_size!r}"
        )


def iter_outputs(
    model: nn.Module,
    movie: np.ndarray,
    *,
    grid_spacing: float,
    crop_size: int,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    tta: bool,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    amp: bool | None = None,
    overlap: float = DEFAULT_OVERLAP,
    scale: float = 1.0,
    tile_size: int | None = None,
    fold_bn: bool = True,
    reuse_features: bool = True,
    prefetch: bool | None = None,
    smooth_sigma: float = 0.0,
) -> Iterator[FrameOutput]:
    """Network outputs of every frame of a movie, in pixel units, one frame at a time.

    Parameters
    ----------
    model : an :class:`~napari_embedtrack.engine.model.EmbedTrackNet` (anything with
        ``encode`` / ``decode_seg`` / ``decode_track``). It is moved to ``device``, converted
        to channels-last and put in eval mode while iterating (its train/eval flag is restored
        when the iterator finishes or is closed).
    movie : (T, Y, X) or (Y, X) array of any integer or float dtype; frames are read one at a
        time (``movie[t]``), so memory maps and lazy arrays work.
    grid_spacing : the model card's grid spacing, ``1 / (training crop size - 1)``.
    crop_size : the model's training crop size (a multiple of 8): the unit of ``overlap`` and
        the smallest tile.
    percentiles : per-frame normalisation percentiles, see :func:`normalize`.
    tta : average over the 8 flips / quarter turns (8x the cost). Required: whether it helps
        depends on the model (its card's ``tta``), so the caller decides.
    device : ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``, see :func:`resolve_device`.
    batch_size : tiles (x transforms) per network call; ``None`` (default): as many as fit the
        device's memory budget (at most 8 on a CPU, 64 on a GPU), see :func:`auto_batch_size`.
    amp : mixed precision (bf16 autocast; fp16 on GPUs without bf16 and on MPS). ``None``
        (default): on where it pays, i.e. on CUDA and on CPUs with native bf16
        (AVX512-BF16 / AMX, :func:`cpu_has_native_bf16`); fp32 elsewhere (on AVX2-only CPUs
        bf16 is ~9x slower). docs/performance.md gives what it changes in SEG and TRA.
    overlap : minimum overlap of neighbouring tiles as a fraction of ``crop_size`` (tiles are
        only used when a frame does not fit in one job).
    scale : the model card's image scale: frames are resized by this factor before the network
        (bilinear, anti-aliased) and the outputs resized back to the frame size, so offsets
        are in frame pixels whatever the scale (a frame pixel is ``grid_spacing * scale`` on
        the network's grid: pass that to clustering, see :meth:`ModelCard.pixel_spacing`).

    tile_size : tile side in network pixels (a multiple of 8). ``None`` (default): the whole
        frame in one job when it fits the device's memory budget (:func:`auto_tile`), else the
        largest multiple of ``crop_size`` that fits. ``crop_size`` gives the original tiling.
    fold_bn : run a copy of the model with BatchNorm folded into the convolutions
        (:func:`fold_batchnorm`; same outputs to ~1e-6, a few percent faster).
    reuse_features : encode each frame once and reuse its features as t-1 of the next pair
        (default); ``False`` encodes both frames of every pair (the reference path of
        ``embedtrack benchmark``).
    prefetch : run the network in a background thread up to :data:`PREFETCH_FRAMES` frames
        ahead, so that what the caller does with frame t (clustering, linking, writing)
        overlaps the network on frame t+1; the frames and their order are unchanged.
        ``None`` (default): on for CUDA and MPS, off on CPU (where both would share the same
        cores). The iterator's ``close()`` stops the thread.
    smooth_sigma : the model card's Gaussian pre-filter, SD in network pixels (0: off): each
        frame is smoothed with SD ``smooth_sigma / scale`` frame pixels before it is
        normalised (on dim, noisy movies this lifts what the network finds, see
        docs/models.md).

    Yields
    ------
    FrameOutput
        one per frame, in order, float32, frame size; ``track_offsets`` are zeros for frame 0.

    Raises
    ------
    ValueError
        for bad arguments (at call time) and for frames with NaN / infinite pixels (when that
        frame is reached; the message names the frame index).
    """
    if not hasattr(movie, "ndim"):
        movie = np.asarray(movie)
    _check_args(movie, grid_spacing, crop_size, percentiles, overlap, batch_size, tile_size)
    scale = check_scale(scale)
    sigma = check_smooth_sigma(smooth_sigma) / scale
    dev = resolve_device(device)
    use_amp = auto_amp(dev) if amp is None else bool(amp)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the same tile shapes come back every frame
    frames = [movie] if movie.ndim == 2 else movie
    n_frames = 1 if movie.ndim == 2 else movie.shape[0]
    shape = tuple(movie.shape[-2:])
    net_shape = scaled_shape(shape, scale)
    tile = auto_tile(net_shape, int(crop_size), dev) if tile_size is None else int(tile_size)
    predictor = _TiledPredictor(
        model,
        net_shape,
        max(tile, int(crop_size)) if tile_size is None else tile,
        round(float(overlap) * int(crop_size)),
        tta_transforms(tta),
        dev,
        None if batch_size is None else int(batch_size),
        _amp_dtype(dev) if use_amp else None,
        reuse_features=bool(reuse_features),
    )
    spacing = float(grid_spacing) * scale  # grid size of one frame pixel
    it = _iterate(
        model, frames, n_frames, predictor, spacing, percentiles, shape, bool(fold_bn), sigma
    )
    if prefetch is None:
        prefetch = dev.type in ("cuda", "mps")
    return _Background(it) if prefetch else it


PREFETCH_FRAMES = 2


class _Background:
    """Iterate over ``it`` in a background thread, at most ``depth`` items ahead.

    Items come out in order; an exception raised by ``it`` is raised by ``next()``;
    ``close()`` stops the thread and closes ``it`` (its ``finally`` blocks run there).
    """

    def __init__(
        self, it: Iterator, depth: int = PREFETCH_FRAMES, name: str = "embedtrack-network"
    ):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(it,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, it: Iterator) -> None:
        end: tuple = (False, None)
        try:
            for item in it:
                if not self._put((True, item)):
                    break
        except BaseException as e:  # handed to the consumer
            end = (False, e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        self._put(end)

    def __iter__(self) -> _Background:
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        ok, item = self._queue.get()
        if ok:
            return item
        self._done = True
        self._thread.join()
        if item is None:
            raise StopIteration
        raise item

    def close(self) -> None:
        self._done = True
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()


SCALE_RANGE = (0.05, 4.0)
#: Largest Gaussian pre-filter SD (network pixels) a card or a caller may ask for.
MAX_SMOOTH_SIGMA = 8.0


def check_scale(scale) -> float:
    """A model's image scale as a float; ValueError unless a number in :data:`SCALE_RANGE`."""
    lo, hi = SCALE_RANGE
    ok = isinstance(scale, (int, float)) and math.isfinite(scale) and lo <= scale <= hi
    if not ok:
        raise ValueError(f"scale must be a number in [{lo:g}, {hi:g}], got {scale!r}")
    return float(scale)


def check_smooth_sigma(sigma) -> float:
    """A pre-filter SD as a float; ValueError unless a number in [0, MAX_SMOOTH_SIGMA]."""
    ok = isinstance(sigma, (int, float)) and not isinstance(sigma, bool)
    if not (ok and math.isfinite(sigma) and 0.0 <= sigma <= MAX_SMOOTH_SIGMA):
        raise ValueError(
            f"smooth_sigma must be a number in [0, {MAX_SMOOTH_SIGMA:g}] (network pixels), "
            f"got {sigma!r}"
        )
    return float(sigma)


def scaled_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """Frame size the network sees at image ``scale`` (at least 2 x 2)."""
    return tuple(max(2, round(n * scale)) for n in shape)  # type: ignore[return-value]


def resize_image(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bilinear resize of a (Y, X) or (C, Y, X) float array (anti-aliased when shrinking)."""
    if tuple(image.shape[-2:]) == tuple(shape):
        return image
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    t = t[None, None] if image.ndim == 2 else t[None]
    shrink = shape[0] < image.shape[-2] or shape[1] < image.shape[-1]
    out = F.interpolate(
        t, size=tuple(shape), mode="bilinear", align_corners=False, antialias=shrink
    )
    return out[0, 0].numpy() if image.ndim == 2 else out[0].numpy()


#: Held while a model is moved to its device / memory format and its BatchNorm folded: two
#: threads preparing one model at once (a dask worker's threads sharing a cached model) got
#: wrong outputs now and then under load; once prepared, runs share the model safely.
_PREPARE_LOCK = threading.Lock()


def _iterate(
    model, frames, n_frames, predictor, pixel_spacing, percentiles, shape, fold_bn, sigma=0.0
):
    was_training = model.training
    with _PREPARE_LOCK:
        model.to(predictor.device, memory_format=torch.channels_last).eval()
        if fold_bn:
            predictor.model = fold_batchnorm(model).to(memory_format=torch.channels_last)
    try:
        for t in range(n_frames):
            image = normalize(_smooth(frames[t], sigma), percentiles, frame_index=t)
            seg, track = predictor(resize_image(image, predictor.shape))
            seg = resize_image(seg, shape)
            track = None if track is None else resize_image(track, shape)
            yield _frame_output(seg, track, pixel_spacing)
    finally:
        predictor.reset()
        model.train(was_training)


def _smooth(frame, sigma: float):
    """``frame`` smoothed by a Gaussian of SD ``sigma`` pixels (float32), or as it is (0)."""
    if sigma <= 0:
        return frame
    return ndimage.gaussian_filter(np.asarray(frame, dtype=np.float32), sigma, mode="reflect")


def _frame_output(seg: np.ndarray, track: np.ndarray | None, pixel_spacing: float) -> FrameOutput:
    offsets = seg[0:2] / pixel_spacing
    track_px = np.zeros_like(offsets) if track is None else track / pixel_spacing
    return FrameOutput(
        seediness=np.ascontiguousarray(seg[4]),
        bandwidth=np.ascontiguousarray(seg[2:4]),
        offsets=offsets.astype(np.float32, copy=False),
        track_offsets=track_px.astype(np.float32, copy=False),
    )


# --------------------------------------------------------------------------- saving
def outputs_to_arrays(outputs: Iterable[FrameOutput]) -> dict[str, np.ndarray]:
    """Stack frame outputs into arrays.

    Returns
    -------
    dict with ``seediness`` (T, Y, X), ``bandwidth``, ``offsets`` and ``track_offsets``
    (T, 2, Y, X), all float32.
    """
    outs = list(outputs)
    if not outs:
        raise ValueError("no frame outputs to stack")
    shapes = {o.shape for o in outs}
    if len(shapes) > 1:
        raise ValueError(f"frame outputs differ in size: {sorted(shapes)}")
    return {
        name: np.stack([getattr(o, name) for o in outs]).astype(np.float32, copy=False)
        for name in OUTPUT_FIELDS
    }


def save_outputs(
    path: str | os.PathLike, outputs: Iterable[FrameOutput], *, dtype=np.float16
) -> None:
    """Save frame outputs to an uncompressed ``.npz`` file at exactly ``path``.

    Parameters
    ----------
    path : file to write (no suffix is added).
    outputs : the frames' outputs, all of one size.
    dtype : storage dtype; float16 (default) keeps offsets to ~0.1 px below 256 px.
    """
    arrays = {k: v.astype(dtype) for k, v in outputs_to_arrays(outputs).items()}
    with open(path, "wb") as f:
        np.savez(f, format=np.array(FILE_FORMAT), **arrays)


def load_outputs(path: str | os.PathLike) -> list[FrameOutput]:
    """Read frame outputs written by :func:`save_outputs` (as float32).

    Raises
    ------
    ValueError
        if the file is not a napari-embedtrack outputs file.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz outputs file ({e})") from None
    with data:
        if "format" not in data.files or str(data["format"]) != FILE_FORMAT:
            raise ValueError(f"{path}: not a napari-embedtrack outputs file ({FILE_FORMAT})")
        missing = [k for k in OUTPUT_FIELDS if k not in data.files]
        if missing:
            raise ValueError(f"{path}: outputs file lacks {', '.join(missing)}")
        arrays = {k: data[k].astype(np.float32) for k in OUTPUT_FIELDS}
    try:
        return [
            FrameOutput(*(arrays[k][t] for k in OUTPUT_FIELDS))
            for t in range(arrays["seediness"].shape[0])
        ]
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path}: inconsistent array shapes in outputs file ({e})") from None
