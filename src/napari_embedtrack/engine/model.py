"""Branched ERFNet for EmbedTrack.

Löffler & Mikut, "EmbedTrack - Simultaneous Cell Segmentation and Tracking Through Learning
Offsets and Clustering Bandwidths" (IEEE Access 2022), built on the ERFNet of Romera et al.
(IEEE T-ITS 2018) and the branched instance-segmentation decoder of Neven et al. (CVPR 2019).

One encoder is shared by frames t and t-1. Per frame, two segmentation decoders predict
segmentation offsets (dy, dx) + bandwidths (y, x) and the seediness; a tracking decoder on the
concatenated features of t and t-1 predicts tracking offsets (dy, dx) from pixels at t to their
cell's centre at t-1. Offsets are on the normalised coordinate grid (see docs/architecture.md).

Channel order of :meth:`EmbedTrackNet.decode_seg`: ``[off_y, off_x, bw_y, bw_x, seed]``
(tanh on offsets, sigmoid on bandwidths and seediness); of :meth:`decode_track`:
``[toff_y, toff_x]`` (tanh).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURE = "embedtrack-erfnet-v1"
SEG_CHANNELS = 5
TRACK_CHANNELS = 2
STRIDE = 8


# --------------------------------------------------------------------------- building blocks
class DownsamplerBlock(nn.Module):
    """3x3 stride-2 convolution concatenated with 2x2 max pooling (ERFNet)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out - c_in, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1D(nn.Module):
    """Factorised residual block: (3x1, 1x3) twice, the second pair dilated (ERFNet)."""

    def __init__(self, c: int, dropout: float, dilation: int):
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(c, c, (3, 1), padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(c, c, (1, 3), padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(c, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(c, c, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(c, c, (1, 3), padding=(0, d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(c, eps=1e-3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv3x1_1(x))
        y = F.relu(self.bn1(self.conv1x3_1(y)))
        y = F.relu(self.conv3x1_2(y))
        y = self.dropout(self.bn2(self.conv1x3_2(y)))
        return F.relu(y + x)


class UpsamplerBlock(nn.Module):
    """3x3 stride-2 transposed convolution, batch norm, ReLU (ERFNet)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    """ERFNet encoder: (B, C_in, H, W) -> (B, 128, H/8, W/8)."""

    def __init__(self, in_channels: int = 1, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = [DownsamplerBlock(in_channels, 16), DownsamplerBlock(16, 64)]
        layers += [NonBottleneck1D(64, dropout / 10, 1) for _ in range(5)]
        layers.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            layers += [NonBottleneck1D(128, dropout, d) for d in (2, 4, 8, 16)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """ERFNet decoder: (B, C_in, H/8, W/8) -> (B, n_out, H, W), no activation."""

    def __init__(self, c_in: int, n_out: int):
        super().__init__()
        self.layers = nn.Sequential(
            UpsamplerBlock(c_in, 64),
            NonBottleneck1D(64, 0.0, 1),
            NonBottleneck1D(64, 0.0, 1),
            UpsamplerBlock(64, 16),
            NonBottleneck1D(16, 0.0, 1),
            NonBottleneck1D(16, 0.0, 1),
        )
        self.output_conv = nn.ConvTranspose2d(16, n_out, 2, stride=2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_conv(self.layers(x))


# --------------------------------------------------------------------------- the model
class EmbedTrackNet(nn.Module):
    """Branched ERFNet with a shared encoder, two segmentation decoders and a tracking decoder.

    Inputs are normalised images of shape (B, 1, H, W) with H and W multiples of 8 when the
    building blocks are called directly (:meth:`encode`, :meth:`decode_seg`,
    :meth:`decode_track`); :meth:`forward` pads any size internally and crops back.
    """

    def __init__(self, in_channels: int = 1, dropout: float = 0.3, bandwidth_bias: float = 0.0):
        super().__init__()
        self.in_channels = in_channels
        self.encoder = Encoder(in_channels, dropout)
        self.seg_decoder = Decoder(128, 4)  # offsets y/x, bandwidths y/x
        self.seed_decoder = Decoder(128, 1)  # seediness
        self.track_decoder = Decoder(256, TRACK_CHANNELS)  # tracking offsets y/x
        self._init_heads(bandwidth_bias)

    def _init_heads(self, bandwidth_bias: float) -> None:
        """Zero offset heads (start at "no shift"), moderate initial bandwidth."""
        with torch.no_grad():
            head = self.seg_decoder.output_conv
            head.weight[:, :2].zero_()
            head.bias[:2].zero_()
            head.bias[2:4].fill_(bandwidth_bias)
            self.track_decoder.output_conv.weight.zero_()
            self.track_decoder.output_conv.bias.zero_()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features of one frame: (B, 1, H, W) -> (B, 128, H/8, W/8)."""
        return self.encoder(x)

    def decode_seg(self, features: torch.Tensor) -> torch.Tensor:
        """Segmentation outputs of one frame: (B, 5, H, W) = offsets y/x, bandwidths y/x, seed."""
        a = self.seg_decoder(features)
        b = self.seed_decoder(features)
        return torch.cat([torch.tanh(a[:, :2]), torch.sigmoid(a[:, 2:4]), torch.sigmoid(b)], 1)

    def decode_track(self, features_t: torch.Tensor, features_prev: torch.Tensor) -> torch.Tensor:
        """Tracking offsets (B, 2, H, W) from pixels at t to their cell's centre at t-1."""
        return torch.tanh(self.track_decoder(torch.cat([features_t, features_prev], 1)))

    def forward(
        self, image_t: torch.Tensor, image_prev: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict (seg_t, seg_prev, track) for a pair of frames of any size.

        Args:
            image_t, image_prev: (B, 1, H, W) normalised frames t and t-1.

        Returns:
            seg_t (B, 5, H, W), seg_prev (B, 5, H, W), track (B, 2, H, W).
        """
        if image_t.shape != image_prev.shape:
            raise ValueError(
                f"frames t and t-1 differ in shape: {tuple(image_t.shape)} vs "
                f"{tuple(image_prev.shape)}"
            )
        h, w = image_t.shape[-2:]
        both = pad_to_multiple(torch.cat([image_t, image_prev], 0))
        feats = self.encode(both)
        seg = self.decode_seg(feats)[..., :h, :w]
        n = image_t.shape[0]
        track = self.decode_track(feats[:n], feats[n:])[..., :h, :w]
        return seg[:n], seg[n:], track


def pad_to_multiple(x: torch.Tensor, multiple: int = STRIDE) -> torch.Tensor:
    """Pad the last two dims at bottom/right to a multiple of ``multiple`` (reflect if possible)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def build_model(architecture: str = ARCHITECTURE, **kwargs) -> EmbedTrackNet:
    """Build a model by architecture name (the name stored in model cards)."""
    if architecture != ARCHITECTURE:
        raise ValueError(
            f"unknown architecture {architecture!r}; this version supports {ARCHITECTURE!r}"
        )
    return EmbedTrackNet(**kwargs)
