"""Tests of engine.model: shapes, value ranges, building blocks, initialisation, padding."""

from __future__ import annotations

import pytest
import torch

from napari_embedtrack.engine.model import (
    ARCHITECTURE,
    SEG_CHANNELS,
    TRACK_CHANNELS,
    EmbedTrackNet,
    build_model,
    pad_to_multiple,
)


@pytest.fixture(scope="module")
def net() -> EmbedTrackNet:
    """A model with random (non-zero) heads, in eval mode."""
    torch.manual_seed(0)
    net = EmbedTrackNet()
    with torch.no_grad():
        for dec in (net.seg_decoder, net.seed_decoder, net.track_decoder):
            dec.output_conv.reset_parameters()
            dec.output_conv.weight *= 50  # saturate the activations somewhere
    return net.eval()


def test_odd_sizes_shapes_and_ranges(net):
    torch.manual_seed(1)
    a, b = torch.rand(2, 1, 37, 53), torch.rand(2, 1, 37, 53)
    with torch.no_grad():
        seg_t, seg_prev, track = net(a, b)
    assert seg_t.shape == seg_prev.shape == (2, SEG_CHANNELS, 37, 53)
    assert track.shape == (2, TRACK_CHANNELS, 37, 53)
    for seg in (seg_t, seg_prev):
        assert seg[:, :2].min() >= -1 and seg[:, :2].max() <= 1
        assert seg[:, 2:].min() >= 0 and seg[:, 2:].max() <= 1
        assert seg[:, :2].abs().max() > 0.5  # the heads are not trivially zero here
    assert track.min() >= -1 and track.max() <= 1
    assert torch.isfinite(seg_t).all() and torch.isfinite(track).all()
    # a single tiny image (smaller than the stride) works too
    with torch.no_grad():
        s, _, tr = net(torch.rand(1, 1, 5, 3), torch.rand(1, 1, 5, 3))
    assert s.shape == (1, 5, 5, 3) and tr.shape == (1, 2, 5, 3)


def test_forward_equals_building_blocks(net):
    torch.manual_seed(2)
    a, b = torch.rand(1, 1, 64, 48), torch.rand(1, 1, 64, 48)
    with torch.no_grad():
        seg_t, seg_prev, track = net(a, b)
        fa, fb = net.encode(a), net.encode(b)
        assert fa.shape == (1, 128, 8, 6)
        torch.testing.assert_close(net.decode_seg(fa), seg_t, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net.decode_seg(fb), seg_prev, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net.decode_track(fa, fb), track, atol=1e-5, rtol=1e-5)


def test_forward_rejects_different_shapes(net):
    with pytest.raises(ValueError, match="differ in shape"):
        net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 24))


def test_offsets_zero_at_init():
    torch.manual_seed(3)
    net = build_model(bandwidth_bias=0.0).eval()
    with torch.no_grad():
        seg_t, seg_prev, track = net(torch.rand(1, 1, 40, 40), torch.rand(1, 1, 40, 40))
    assert (seg_t[:, :2] == 0).all() and (seg_prev[:, :2] == 0).all()
    assert (track == 0).all()
    # bandwidth bias 0 -> sigmoid around 0.5 (a moderate kernel), not saturated
    bw = seg_t[:, 2:4]
    assert 0.2 < float(bw.mean()) < 0.8
    # the offset heads still learn: their gradient is not zero
    net.train()
    s, _, tr = net(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
    (s[:, :2].sum() + tr.sum()).backward()
    assert net.seg_decoder.output_conv.weight.grad[:, :2].abs().sum() > 0
    assert net.track_decoder.output_conv.weight.grad.abs().sum() > 0


def test_bandwidth_bias():
    net = build_model(bandwidth_bias=2.0).eval()
    with torch.no_grad():
        seg, _, _ = net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    # bias 2 shifts the pre-activation: mean bandwidth well above sigmoid(0)
    assert float(seg[:, 2:4].mean()) > 0.7


def test_build_model_unknown_architecture():
    assert isinstance(build_model(ARCHITECTURE), EmbedTrackNet)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("unet-v9")


def test_pad_to_multiple():
    x = torch.arange(2 * 1 * 13 * 19, dtype=torch.float32).reshape(2, 1, 13, 19)
    p = pad_to_multiple(x)
    assert p.shape == (2, 1, 16, 24)
    torch.testing.assert_close(p[..., :13, :19], x)
    # reflect: row 13 mirrors row 11, column 19 mirrors column 17
    torch.testing.assert_close(p[..., 13, :19], x[..., 11, :])
    torch.testing.assert_close(p[..., :13, 19], x[..., :, 17])
    assert pad_to_multiple(x, 1) is x
    same = torch.rand(1, 1, 16, 8)
    assert pad_to_multiple(same) is same
    # too small to reflect: replicate
    small = torch.rand(1, 1, 3, 2)
    ps = pad_to_multiple(small)
    assert ps.shape == (1, 1, 8, 8)
    torch.testing.assert_close(ps[..., 7, 7], small[..., 2, 1])
    torch.testing.assert_close(ps[..., :3, :2], small)
    assert pad_to_multiple(torch.rand(1, 1, 13, 19), 4).shape == (1, 1, 16, 20)
