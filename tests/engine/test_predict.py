"""Tests of engine.predict: normalisation, TTA vector mapping, tiling, feature reuse, saving."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_embedtrack.engine.model import EmbedTrackNet
from napari_embedtrack.engine.predict import (
    auto_amp,
    auto_batch_size,
    auto_tile,
    blend_weights,
    cpu_has_native_bf16,
    fold_batchnorm,
    iter_outputs,
    load_outputs,
    normalize,
    outputs_to_arrays,
    resize_image,
    resolve_device,
    save_outputs,
    tile_starts,
    tta_transforms,
)

CROP = 32
GRID = 1 / (CROP - 1)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model() -> EmbedTrackNet:
    """A random EmbedTrackNet whose heads give non-trivial offsets (not the zero init)."""
    torch.manual_seed(0)
    net = EmbedTrackNet()
    with torch.no_grad():
        for dec in (net.seg_decoder, net.seed_decoder, net.track_decoder):
            dec.output_conv.reset_parameters()
            dec.output_conv.weight *= 4  # offsets of several pixels
    return net.eval()


class LocalNet(nn.Module):
    """A stand-in with a receptive field of one pixel: tiling must then be exact."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, 8)

    def decode_seg(self, f: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(f, 8)
        sig = [torch.sigmoid(k * x) for k in (1, 2, 3)]
        return torch.cat([torch.tanh(x), torch.tanh(-2 * x), *sig], 1)

    def decode_track(self, f: torch.Tensor, f_prev: torch.Tensor) -> torch.Tensor:
        d = F.pixel_shuffle(f - f_prev, 8)
        return torch.cat([torch.tanh(d), torch.tanh(3 * d)], 1)


def _movie(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth blobs plus noise, uint16."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for k in range(t):
        img = np.zeros((h, w))
        for cy, cx in rng.uniform([0, 0], [h, w], size=(6, 2)):
            img += 800 * np.exp(-((yy - cy - 2 * k) ** 2 + (xx - cx) ** 2) / 40)
        frames.append(img + rng.normal(100, 10, (h, w)))
    return np.clip(frames, 0, 65535).astype(np.uint16)


def _run(model, movie, **kw):
    """iter_outputs in tiles of CROP (the tiling tests' layout) unless ``tile_size`` is given;
    ``tile_size=None`` is the automatic (whole-frame) fast path."""
    kw = {
        "grid_spacing": GRID, "crop_size": CROP, "tile_size": CROP, "device": "cpu", "amp": False,
        "tta": True,
    } | kw  # fmt: skip
    return list(iter_outputs(model, movie, **kw))


def _close(a, b, atol):
    for name in ("seediness", "bandwidth", "offsets", "track_offsets"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=atol, err_msg=name)


# --------------------------------------------------------------------------- normalize
def test_normalize_percentiles_and_dtype():
    img = np.arange(1000, dtype=np.uint16).reshape(25, 40)
    out = normalize(img, (0, 100))
    assert out.dtype == np.float32
    assert out.min() == 0 and out.max() == 1
    # values beyond the percentiles are kept, not clipped
    out = normalize(img, (10, 90))
    assert out.min() < 0 and out.max() > 1
    np.testing.assert_array_equal(out, normalize(img.astype(np.float64), (10, 90)))


def test_normalize_constant_and_degenerate_percentiles():
    assert not normalize(np.full((7, 9), 5, np.uint8)).any()
    spiky = np.zeros((50, 50), np.float32)
    spiky[0, 0] = 10  # both percentiles are 0: fall back to min/max
    out = normalize(spiky)
    assert np.isfinite(out).all() and out.max() == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_normalize_rejects_non_finite(bad):
    img = np.ones((5, 5))
    img[2, 2] = bad
    with pytest.raises(ValueError, match="frame 3 contains NaN or infinite"):
        normalize(img, frame_index=3)


# --------------------------------------------------------------------------- device
def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# --------------------------------------------------------------------------- TTA
def _ideal_fields(marker: torch.Tensor, stripes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Ideal outputs computed from an image alone (in whatever frame it is given).

    offsets: from every pixel to the marker; bandwidths: 1 along the axis the stripes vary
    along, 0.25 along the other; seediness: the stripes. Returns seg (1, 5, H, W) and
    track (1, 2, H, W) (offsets to the marker, scaled).
    """
    h, w = marker.shape
    cy, cx = divmod(int(marker.argmax()), w)
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    off = torch.stack([cy - yy, cx - xx])
    varies_y = bool((stripes.diff(dim=0) != 0).any())
    varies_x = bool((stripes.diff(dim=1) != 0).any())
    assert varies_y != varies_x
    bw = torch.stack([torch.full((h, w), 1.0 if v else 0.25) for v in (varies_y, varies_x)])
    seg = torch.cat([off, bw, stripes[None]])[None]
    return seg, 0.5 * off[None]


@pytest.mark.parametrize("shape", [(10, 10), (10, 14)])
def test_tta_inverse_maps_vector_fields_back(shape):
    """Transform the image, build the ideal field there, invert: the ideal field of the original."""
    h, w = shape
    marker = torch.zeros(shape)
    marker[3, 8] = 1
    stripes = torch.arange(float(w)).expand(h, w) % 3  # varies along x only
    want_seg, want_track = _ideal_fields(marker, stripes)
    transforms = tta_transforms()
    assert len(transforms) == 8
    seen = set()
    for tf in transforms:
        t_marker, t_stripes = tf.forward(torch.stack([marker, stripes]))
        seen.add((*t_marker.shape, int(t_marker.argmax())))
        seg, track = _ideal_fields(t_marker, t_stripes)
        torch.testing.assert_close(tf.inverse_seg(seg), want_seg, rtol=0, atol=0)
        torch.testing.assert_close(tf.inverse_track(track), want_track, rtol=0, atol=0)
    assert len(seen) == 8  # all distinct symmetries
    assert tta_transforms(False) == transforms[:1]


def _flip_x(o):  # expected outputs of the x-flipped movie, written out by hand
    return dict(
        seediness=o.seediness[:, ::-1],
        bandwidth=o.bandwidth[:, :, ::-1],
        offsets=np.stack([o.offsets[0, :, ::-1], -o.offsets[1, :, ::-1]]),
        track_offsets=np.stack([o.track_offsets[0, :, ::-1], -o.track_offsets[1, :, ::-1]]),
    )


def _flip_y(o):
    return dict(
        seediness=o.seediness[::-1],
        bandwidth=o.bandwidth[:, ::-1],
        offsets=np.stack([-o.offsets[0, ::-1], o.offsets[1, ::-1]]),
        track_offsets=np.stack([-o.track_offsets[0, ::-1], o.track_offsets[1, ::-1]]),
    )


def _transpose(o):
    return dict(
        seediness=o.seediness.T,
        bandwidth=o.bandwidth[::-1].transpose(0, 2, 1),
        offsets=o.offsets[::-1].transpose(0, 2, 1),
        track_offsets=o.track_offsets[::-1].transpose(0, 2, 1),
    )


@pytest.mark.parametrize(
    ("move", "expected"),
    [
        (lambda m: m[..., ::-1], _flip_x),
        (lambda m: m[..., ::-1, :], _flip_y),
        (lambda m: m.transpose(0, 2, 1), _transpose),
    ],
    ids=["flip_x", "flip_y", "transpose"],
)
def test_tta_average_is_equivariant(model, move, expected):
    """TTA-averaged outputs of a moved movie = moved outputs, vector channels corrected.

    64 x 64 with tiles of 32 at 50 % overlap has tile starts 0, 16, 32 on both axes, a grid
    that maps onto itself, so the equality is exact up to float rounding.
    """
    movie = _movie(2, 64, 64)
    base = _run(model, movie, overlap=0.5)
    moved = _run(model, np.ascontiguousarray(move(movie)), overlap=0.5)
    for o, m in zip(base, moved, strict=True):
        for name, want in expected(o).items():
            np.testing.assert_allclose(getattr(m, name), want, atol=1e-4, err_msg=name)
    assert np.abs(base[1].track_offsets).max() > 1  # the check is not on zeros


# --------------------------------------------------------------------------- tiling
def test_tile_layout():
    assert tile_starts(20, 32, 8) == [0]
    assert tile_starts(64, 32, 16) == [0, 16, 32]
    starts = tile_starts(93, 32, 8)
    assert starts[0] == 0 and starts[-1] == 93 - 32
    assert max(np.diff(starts)) <= 32 - 8
    weights = blend_weights(starts, 32)
    assert weights[0][0] == 1 and weights[-1][-1] == 1  # full weight at the image border
    assert all((w > 0).all() for w in weights)


@pytest.mark.parametrize(("shape", "overlap"), [((70, 90), 0.25), ((67, 93), 0.5)])
def test_tiling_is_exact_for_a_local_network(shape, overlap):
    """With a receptive field of one pixel, tiled and whole-image outputs must agree exactly."""
    movie = _movie(2, *shape)
    tiled = _run(LocalNet(), movie, tta=False, overlap=overlap)
    whole = _run(LocalNet(), movie, tta=False, tile_size=None)
    for a, b in zip(tiled, whole, strict=True):
        _close(a, b, atol=1e-4)


@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_whole_non_square_frame_with_tta_is_exact_for_a_local_network(batch_size):
    """The fast path: a non-square frame in one job per transform (quarter turns give frames
    of another shape, batched apart) sums to the same TTA average as square tiles do."""
    movie = _movie(2, 67, 93)
    tiled = _run(LocalNet(), movie, overlap=0.5)
    whole = _run(LocalNet(), movie, tile_size=None, batch_size=batch_size)
    for a, b in zip(tiled, whole, strict=True):
        _close(a, b, atol=1e-4)
    assert whole[1].bandwidth.std() > 0.01  # (vector channels of LocalNet average to 0)


@pytest.mark.parametrize(
    ("move", "expected"),
    [(lambda m: m[..., ::-1], _flip_x), (lambda m: m.transpose(0, 2, 1), _transpose)],
    ids=["flip_x", "transpose"],
)
def test_tta_average_of_a_whole_non_square_frame_is_equivariant(model, move, expected):
    """The fast path's vector channels: the whole 40 x 56 frame, 8 transforms in two batches
    of different shapes, mapped back in one batched operation each."""
    movie = _movie(2, 40, 56)
    base = _run(model, movie, tile_size=None)
    moved = _run(model, np.ascontiguousarray(move(movie)), tile_size=None)
    for o, m in zip(base, moved, strict=True):
        for name, want in expected(o).items():
            np.testing.assert_allclose(getattr(m, name), want, atol=1e-4, err_msg=name)
    assert np.abs(base[1].track_offsets).max() > 1


def _randomise_batchnorm(net: EmbedTrackNet, seed: int = 1) -> EmbedTrackNet:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return net


def test_fold_batchnorm_keeps_outputs_and_leaves_the_model_alone():
    torch.manual_seed(0)
    net = _randomise_batchnorm(EmbedTrackNet()).eval()
    for dec in (net.seg_decoder, net.seed_decoder, net.track_decoder):
        dec.output_conv.reset_parameters()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 20  # original intact
    x, x_prev = torch.rand(2, 1, 1, 48, 64)
    with torch.inference_mode():
        want, got = net(x, x_prev), folded(x, x_prev)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=2e-5)


def test_reference_path_equals_fast_path_on_the_same_tiles(model):
    """Pairs encoded from scratch, one job at a time, BatchNorm unfolded (the benchmark's
    reference path) give the fast path's outputs on the same tiles."""
    movie = _movie(3, 40, 56)
    net = _randomise_batchnorm(copy.deepcopy(model)).eval()
    fast = _run(net, movie, overlap=0.5)
    ref = _run(net, movie, overlap=0.5, batch_size=1, fold_bn=False, reuse_features=False)
    for a, b in zip(fast, ref, strict=True):
        _close(a, b, atol=1e-3)
    assert np.abs(ref[2].track_offsets).max() > 1


def test_automatic_tile_and_batch_size():
    cpu = torch.device("cpu")
    assert auto_tile((512, 512), 256, cpu) == 512  # a laptop frame runs whole
    assert auto_tile((690, 628), 256, cpu) == 696  # padded to a multiple of 8
    big = auto_tile((40000, 40000), 256, cpu)
    assert big % 256 == 0 and 256 <= big < 40000  # too large for one job: tiles
    assert auto_batch_size(512 * 512, n_jobs=8, device=cpu) == 8
    assert auto_batch_size(256 * 256, n_jobs=3, device=cpu) == 3
    assert auto_batch_size(40000 * 40000, n_jobs=8, device=cpu) == 1


def test_amp_default_follows_the_cpu(model):
    """``amp=None`` is bf16 autocast exactly where the CPU has native bf16, fp32 elsewhere."""
    assert auto_amp(torch.device("cpu")) == cpu_has_native_bf16()
    movie = _movie(2, 24, 32)
    auto = _run(model, movie, tta=False, amp=None)
    want = _run(model, movie, tta=False, amp=cpu_has_native_bf16())
    for a, b in zip(auto, want, strict=True):
        _close(a, b, atol=0)


@pytest.mark.parametrize("shape", [(20, 27), (67, 93)])
def test_local_network_outputs_land_on_their_pixels(shape):
    """Padded (smaller than a tile) and tiled frames: each output belongs to its own pixel."""
    movie = _movie(2, *shape)
    outs = _run(LocalNet(), movie, tta=False)
    x = [normalize(f) for f in movie]
    np.testing.assert_allclose(outs[1].seediness, 1 / (1 + np.exp(-3 * x[1])), atol=1e-5)
    np.testing.assert_allclose(outs[1].offsets[1], np.tanh(-2 * x[1]) / GRID, atol=1e-4)
    np.testing.assert_allclose(outs[1].track_offsets[0], np.tanh(x[1] - x[0]) / GRID, atol=1e-4)


def test_tiled_close_to_untiled_for_erfnet(model):
    """ERFNet sees hundreds of pixels: tiles change outputs, but only a little.

    Tiles see less context than the whole image, so equality is not expected; the exact check of
    the tiling is the LocalNet test. Measured here: correlation >= 0.9994, mean |diff| 0.05 px
    (offsets spanning +-20 px), max 0.6 px (1.5 px tracking offsets).
    """
    movie = _movie(2, 64, 64)
    whole = _run(model, movie, tta=False, tile_size=None)
    tiled = _run(model, movie, tta=False, overlap=0.5)
    for name in ("offsets", "track_offsets", "seediness", "bandwidth"):
        a, b = getattr(whole[1], name).ravel(), getattr(tiled[1], name).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.99, name
    for name in ("offsets", "track_offsets"):
        diff = np.abs(getattr(whole[1], name) - getattr(tiled[1], name))
        assert diff.mean() < 0.25, name


# --------------------------------------------------------------------------- feature reuse
def test_single_pair_matches_model_forward(model):
    """One tile, no TTA: outputs equal EmbedTrackNet.forward on the normalised pair."""
    movie = _movie(2, 32, 32)
    outs = _run(model, movie, tta=False)
    x = [torch.from_numpy(normalize(f))[None, None] for f in movie]
    with torch.inference_mode():
        seg_t, seg_prev, track = model(x[1], x[0])
    np.testing.assert_allclose(outs[1].offsets, seg_t[0, :2].numpy() / GRID, atol=1e-3)
    np.testing.assert_allclose(outs[0].offsets, seg_prev[0, :2].numpy() / GRID, atol=1e-3)
    np.testing.assert_allclose(outs[1].seediness, seg_t[0, 4].numpy(), atol=1e-5)
    np.testing.assert_allclose(outs[1].bandwidth, seg_t[0, 2:4].numpy(), atol=1e-5)
    np.testing.assert_allclose(outs[1].track_offsets, track[0].numpy() / GRID, atol=1e-3)
    assert not outs[0].track_offsets.any()


class CountingNet(nn.Module):
    """Wraps a model and counts the samples each building block sees."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls = {"encode": 0, "decode_seg": 0, "decode_track": 0}

    def encode(self, x):
        self.calls["encode"] += x.shape[0]
        return self.inner.encode(x)

    def decode_seg(self, f):
        self.calls["decode_seg"] += f.shape[0]
        return self.inner.decode_seg(f)

    def decode_track(self, f, f_prev):
        self.calls["decode_track"] += f.shape[0]
        return self.inner.decode_track(f, f_prev)


def test_feature_reuse_equals_pairwise(model):
    """A 3-frame movie gives the same outputs as fresh runs on each pair (t-1, t)."""
    movie = _movie(3, 40, 48)
    counting = CountingNet(model)
    outs = _run(counting, movie, batch_size=5)
    n_tiles = len(tile_starts(40, CROP, 8)) * len(tile_starts(48, CROP, 8))
    jobs = n_tiles * 8
    assert counting.calls == {"encode": 3 * jobs, "decode_seg": 3 * jobs, "decode_track": 2 * jobs}
    for t in (1, 2):
        pair = _run(model, movie[t - 1 : t + 1], batch_size=5)
        _close(outs[t], pair[1], atol=1e-4)
    assert np.abs(outs[2].track_offsets).max() > 1


# --------------------------------------------------------------------------- inputs
def test_odd_sizes_and_small_images(model):
    for shape in [(67, 93), (20, 27)]:  # not multiples of 8; smaller than a tile
        outs = _run(model, _movie(2, *shape), tta=False)
        assert len(outs) == 2
        for o in outs:
            assert o.shape == shape
            assert np.isfinite(o.stack()).all()
        assert not outs[0].track_offsets.any() and outs[1].track_offsets.any()


def test_scale_gives_frame_size_outputs_in_frame_pixels(model):
    """At scale 0.5 the network sees the half-size frame; outputs come back at frame size
    with offsets in frame pixels (twice the half-size frame's). The end-to-end check (a
    shipped model on a movie at twice its resolution) is in tests/test_shipped_models.py."""
    movie = _movie(2, 64, 96)
    half = np.stack([resize_image(f.astype(np.float32), (32, 48)) for f in movie])
    outs = _run(model, movie, tta=False, scale=0.5)
    ref = _run(model, half, tta=False)
    for o, r in zip(outs, ref, strict=True):
        assert o.shape == (64, 96)
        for name, factor in (("offsets", 2), ("track_offsets", 2), ("seediness", 1)):
            got = getattr(o, name).mean(axis=(-2, -1))
            want = factor * getattr(r, name).mean(axis=(-2, -1))
            np.testing.assert_allclose(got, want, rtol=0.05, atol=0.02)
    assert outs[1].track_offsets.any()


def test_smoothing_is_a_gaussian_of_the_frame_in_network_pixels(model):
    """``smooth_sigma`` (network pixels) smooths each frame by ``sigma / scale`` frame
    pixels before normalisation: the outputs are those of the movie smoothed by hand, and
    they differ from the unsmoothed movie's."""
    from scipy import ndimage

    movie = _movie(2, 48, 64)
    for scale, sigma in ((1.0, 1.0), (0.5, 0.75)):
        by_hand = np.stack(
            [ndimage.gaussian_filter(f.astype(np.float32), sigma / scale) for f in movie]
        )
        got = _run(model, movie, tta=False, scale=scale, smooth_sigma=sigma)
        want = _run(model, by_hand, tta=False, scale=scale)
        plain = _run(model, movie, tta=False, scale=scale)
        for g, w, p in zip(got, want, plain, strict=True):
            _close(g, w, atol=1e-5)
            assert np.abs(g.stack() - p.stack()).max() > 1e-3
    zero = _run(model, movie, tta=False, smooth_sigma=0.0)
    for z, p in zip(zero, _run(model, movie, tta=False), strict=True):
        _close(z, p, atol=0)


def test_single_frame(model):
    frame = _movie(1, 30, 30)[0]
    (out,) = _run(model, frame, tta=False)
    assert out.shape == (30, 30) and not out.track_offsets.any()
    (out3,) = _run(model, frame[None], tta=False)
    _close(out, out3, atol=0)


def test_constant_frame_gives_finite_outputs(model):
    outs = _run(model, np.full((2, 24, 24), 7, np.uint8), tta=False)
    assert all(np.isfinite(o.stack()).all() for o in outs)


def test_nan_frame_raises_naming_the_frame(model):
    movie = _movie(3, 24, 24).astype(np.float32)
    movie[1, 5, 5] = np.nan
    it = iter_outputs(model, movie, grid_spacing=GRID, crop_size=CROP, tta=False, device="cpu")
    next(it)
    with pytest.raises(ValueError, match="frame 1 contains NaN"):
        next(it)


def test_int_and_float_inputs_agree(model):
    movie = _movie(2, 24, 24)
    a = _run(model, movie, tta=False)
    b = _run(model, movie.astype(np.float32), tta=False)
    for x, y in zip(a, b, strict=True):
        _close(x, y, atol=0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"crop_size": 30}, "crop_size"),
        ({"grid_spacing": 0.0}, "grid_spacing"),
        ({"overlap": 1.0}, "overlap"),
        ({"batch_size": 0}, "batch_size"),
        ({"percentiles": (99, 1)}, "percentiles"),
        ({"scale": 0.0}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"smooth_sigma": -1.0}, "smooth_sigma"),
        ({"smooth_sigma": float("inf")}, "smooth_sigma"),
        ({"smooth_sigma": "1"}, "smooth_sigma"),
    ],
)
def test_bad_arguments_raise_at_call(model, kw, match):
    args = {"grid_spacing": GRID, "crop_size": CROP, "device": "cpu", "tta": False} | kw
    with pytest.raises(ValueError, match=match):
        iter_outputs(model, np.zeros((2, 8, 8)), **args)
    for shape in [(1, 2, 8, 8), (0, 8, 8), (2, 0, 8)]:
        with pytest.raises(ValueError, match="movie must be"):
            iter_outputs(model, np.zeros(shape), grid_spacing=GRID, crop_size=CROP, tta=False)


def test_model_mode_restored(model):
    model.train()
    try:
        _run(model, _movie(1, 16, 16), tta=False)
        assert model.training
    finally:
        model.eval()


def test_threads_sharing_a_fresh_model_get_the_serial_outputs(model):
    """A dask worker's threads share one cached model and prepare it (device, channels_last,
    folded BatchNorm) on first use at the same time: before a lock guarded that, 6 of 120
    such runs differed from the serial outputs on a loaded machine (issue #16)."""
    import threading

    movie = _movie(3, 40, 48)
    want = _run(copy.deepcopy(model), movie, tta=False, tile_size=None)
    for _ in range(8):
        fresh = copy.deepcopy(model)  # contiguous, as load_model gives it
        got: list = [None] * 3

        def work(k: int, net=fresh, got=got) -> None:
            got[k] = _run(net, movie, tta=False, tile_size=None)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for outs in got:
            for a, b in zip(outs, want, strict=True):
                np.testing.assert_array_equal(a.offsets, b.offsets)
                np.testing.assert_array_equal(a.seediness, b.seediness)
                np.testing.assert_array_equal(a.track_offsets, b.track_offsets)


def test_bf16_runs(model):
    (out,) = _run(model, _movie(1, 16, 16), tta=False, amp=True)
    (ref,) = _run(model, _movie(1, 16, 16), tta=False)
    assert np.abs(out.offsets - ref.offsets).max() < 2.0


# --------------------------------------------------------------------------- saving
def test_save_load_roundtrip(model, tmp_path):
    outs = _run(model, _movie(2, 20, 28), tta=False)
    arrays = outputs_to_arrays(outs)
    assert arrays["offsets"].shape == (2, 2, 20, 28) and arrays["seediness"].shape == (2, 20, 28)
    path = tmp_path / "emb.bin"
    save_outputs(path, outs)
    assert path.exists()  # no suffix added
    back = load_outputs(path)
    assert len(back) == 2
    for a, b in zip(outs, back, strict=True):
        assert b.offsets.dtype == np.float32
        _close(a, b, atol=0.1)
    bad = tmp_path / "other.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a napari-embedtrack outputs file"):
        load_outputs(bad)


# --------------------------------------------------------------------------- prefetch
def test_prefetch_gives_the_same_frames_in_order(model):
    movie = _movie(4, 24, 32)
    serial = _run(model, movie, tta=False, prefetch=False)
    background = _run(model, movie, tta=False, prefetch=True)
    for a, b in zip(serial, background, strict=True):
        _close(a, b, atol=0)
    assert len(background) == 4


def test_prefetch_raises_the_networks_error_and_close_stops_it(model):
    movie = _movie(4, 24, 32).astype(np.float32)
    movie[2, 3, 3] = np.nan
    it = iter_outputs(
        model, movie, grid_spacing=GRID, crop_size=CROP, device="cpu", tta=False, prefetch=True
    )
    next(it)
    with pytest.raises(ValueError, match="frame 2"):
        next(it)
        next(it)
    model.train()
    it = iter_outputs(
        model, movie[:2], grid_spacing=GRID, crop_size=CROP, device="cpu", tta=False,
        prefetch=True,
    )  # fmt: skip
    try:
        next(it)
        it.close()  # stops the thread; the model's train/eval flag is restored
        assert model.training
        assert not it._thread.is_alive()
        with pytest.raises(StopIteration):
            next(it)
    finally:
        model.eval()
