"""MODELS registry and the paper's Thin ResNet34 with self-attentive pooling (Table I).

(B, frames, n_mels) log-mel -> (B, embedding_dim) embedding, not normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from singerid.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")

# (frequency, time) stride of the first block of each stage, from Table I.
INPUT_NORMS = ("segment", "bin", "none")  # per-segment input normalisations, see ThinResNet34
STAGE_STRIDES: tuple[tuple[int, int], ...] = ((1, 2), (2, 2), (2, 2), (1, 2))


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters in `model` (trainable or not)."""
    return sum(parameter.numel() for parameter in model.parameters())


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and ReLU, plus a residual shortcut.

    The stride applies to the first convolution; a 1x1 convolution + batch norm projects the
    shortcut when the stride or the channel count changes the shape.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != (1, 1) or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, inputs: Tensor) -> Tensor:
        hidden = self.relu(self.bn1(self.conv1(inputs)))
        hidden = self.bn2(self.conv2(hidden))
        return self.relu(hidden + self.shortcut(inputs))


class SelfAttentivePooling(nn.Module):
    """Self-attentive pooling over time (Cai et al., 2018; Chung et al., 2020).

    Each frame h_t gets a score u^T tanh(W h_t + b) with a learned context vector u; the softmax of the
    scores over time weights the mean of the frames.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.projection = nn.Linear(channels, channels)
        self.context = nn.Parameter(torch.empty(channels, 1))
        nn.init.xavier_normal_(self.context)

    def attention_weights(self, frames: Tensor) -> Tensor:
        """(B, channels, T) -> (B, T) weights that sum to 1 over time."""
        scores = torch.tanh(self.projection(frames.transpose(1, 2))) @ self.context
        return torch.softmax(scores.squeeze(-1).float(), dim=1).to(frames.dtype)

    def forward(self, frames: Tensor) -> Tensor:
        """(B, channels, T) -> (B, channels)."""
        weights = self.attention_weights(frames)
        return torch.einsum("bct,bt->bc", frames, weights)


@dataclass(frozen=True)
class ThinResNetOptions:
    """The YAML keys of `model:` that ThinResNet34 accepts besides `name` and `embedding_dim`."""

    channels: tuple[int, ...] = (16, 32, 64, 128)  # channels of the four residual stages (Table I)
    blocks: tuple[int, ...] = (3, 4, 6, 3)  # basic blocks per stage (ResNet34 layout)
    input_norm: str = "segment"  # per-segment input normalisation: segment (keeps the spectral envelope) | bin | none

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if len(self.channels) != len(STAGE_STRIDES) or len(self.blocks) != len(STAGE_STRIDES):
            raise ValueError(
                f"channels and blocks need {len(STAGE_STRIDES)} entries (one per stage), "
                f"got channels={self.channels} and blocks={self.blocks}"
            )
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got '{self.input_norm}'")
        if min(self.blocks) < 1 or min(self.channels) < 1:
            raise ValueError(f"every stage needs at least one block and channel, got {self.blocks}, {self.channels}")


@MODELS.register("thin_resnet34")
class ThinResNet34(nn.Module):
    """Thin ResNet34 + SAP of the paper's Table I: (B, frames, n_mels) log-mel -> (B, embedding_dim).

    Conv 7x7 stride (2, 1), max pool 3x3 stride (2, 1), four stages of basic blocks with first-block
    strides (1, 2), (2, 2), (2, 2), (1, 2) as (frequency, time), a mean over frequency, self-attentive
    pooling over time and a linear layer. For 64 mels x 350 frames the stage outputs are 32x350, 16x350,
    16x175, 8x88, 4x44 and 4x22 (frequency x time). Any number of frames works; the output is not
    normalised.

    `input_norm` normalises each segment on its own: "bin" subtracts each mel bin's mean over the segment's
    frames (instance normalisation over time, as voxceleb_trainer; a fixed equaliser curve does not change the
    embedding, but neither does the long-term spectral envelope); "segment" subtracts the segment's mean over all
    bins and frames and divides by its standard deviation (a gain does not change the embedding; the spectral
    envelope, a strong singer cue, is kept); "none" leaves the log-mel as it is.
    """

    Options = ThinResNetOptions

    def __init__(
        self,
        options: ThinResNetOptions | None = None,
        *,
        embedding_dim: int = 512,
        n_mels: int = 64,
        **settings: object,
    ) -> None:
        """`options`, or its fields as keywords (`ThinResNet34(channels=(8, 16, 32, 64))`)."""
        super().__init__()
        if options is None:
            options = ThinResNetOptions(**settings)  # type: ignore[arg-type]
        elif settings:
            raise TypeError(f"pass options or settings, not both: {sorted(settings)}")
        channels, blocks, input_norm = options.channels, options.blocks, options.input_norm
        self.options = options
        self.embedding_dim = embedding_dim
        self.n_mels = n_mels
        self.input_norm = input_norm
        self.conv1 = nn.Conv2d(1, channels[0], 7, stride=(2, 1), padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=(2, 1), padding=1)
        self.stages = nn.ModuleList()
        in_channels = channels[0]
        for out_channels, count, stride in zip(channels, blocks, STAGE_STRIDES, strict=True):
            stage = [BasicBlock(in_channels, out_channels, stride)]
            stage += [BasicBlock(out_channels, out_channels) for _ in range(count - 1)]
            self.stages.append(nn.Sequential(*stage))
            in_channels = out_channels
        self.pooling = SelfAttentivePooling(in_channels)
        self.fc = nn.Linear(in_channels, embedding_dim)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def stage_outputs(self, features: Tensor) -> dict[str, Tensor]:
        """Every intermediate output, in order: conv1, maxpool, stage1..stage4 as (B, C, freq, time),
        frequency_mean (B, C, time), pooled (B, C) and embedding (B, embedding_dim)."""
        if features.ndim != 3 or features.shape[-1] != self.n_mels:
            raise ValueError(f"expected features of shape (batch, frames, {self.n_mels}), got {tuple(features.shape)}")
        if self.input_norm == "bin":
            features = features - features.mean(dim=1, keepdim=True)
        elif self.input_norm == "segment":
            mean = features.mean(dim=(1, 2), keepdim=True)
            features = (features - mean) / (features.std(dim=(1, 2), keepdim=True) + 1e-5)
        hidden = features.transpose(1, 2).unsqueeze(1)  # (B, 1, n_mels, frames)
        outputs: dict[str, Tensor] = {}
        hidden = outputs["conv1"] = self.relu(self.bn1(self.conv1(hidden)))
        hidden = outputs["maxpool"] = self.maxpool(hidden)
        for index, stage in enumerate(self.stages, start=1):
            hidden = outputs[f"stage{index}"] = stage(hidden)
        frames = outputs["frequency_mean"] = hidden.mean(dim=2)
        pooled = outputs["pooled"] = self.pooling(frames)
        outputs["embedding"] = self.fc(pooled)
        return outputs

    def forward(self, features: Tensor) -> Tensor:
        """(B, frames, n_mels) log-mel -> (B, embedding_dim), not normalised."""
        return self.stage_outputs(features)["embedding"]
