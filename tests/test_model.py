"""Tests for singerid.model: Table I shapes, parameter count, input normalisation, SAP."""

from __future__ import annotations

import pytest
import torch

from singerid.model import MODELS, SelfAttentivePooling, ThinResNet34, count_parameters

SMALL = {"channels": (4, 8, 16, 32), "blocks": (1, 1, 1, 1), "embedding_dim": 32}
DEFAULT_PARAMETERS = 1_416_656


def features(batch: int = 2, frames: int = 350, n_mels: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, n_mels, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def default_model() -> ThinResNet34:
    torch.manual_seed(0)
    return ThinResNet34().eval()


def small_model(**options: object) -> ThinResNet34:
    torch.manual_seed(0)
    return ThinResNet34(**{**SMALL, **options}).eval()


def expected_parameters(channels: tuple[int, ...], blocks: tuple[int, ...], embedding_dim: int) -> int:
    """Closed-form count: 3x3 convs without bias, BN (2 per channel), 1x1 projection shortcuts."""
    total = 7 * 7 * channels[0] + 2 * channels[0]
    in_channels = channels[0]
    for out_channels, count in zip(channels, blocks, strict=True):
        total += 9 * in_channels * out_channels + 9 * out_channels**2 + 4 * out_channels  # first block
        total += in_channels * out_channels + 2 * out_channels  # every stage's first block is strided
        total += (count - 1) * (2 * 9 * out_channels**2 + 4 * out_channels)
        in_channels = out_channels
    sap = in_channels * in_channels + in_channels + in_channels
    return total + sap + in_channels * embedding_dim + embedding_dim


def test_stage_shapes_match_table_one(default_model: ThinResNet34) -> None:
    with torch.no_grad():
        outputs = default_model.stage_outputs(features())
    # Table I lists frequency x time x channels; tensors are (B, channels, frequency, time).
    expected = {
        "conv1": (2, 16, 32, 350),
        "maxpool": (2, 16, 16, 350),
        "stage1": (2, 16, 16, 175),
        "stage2": (2, 32, 8, 88),
        "stage3": (2, 64, 4, 44),
        "stage4": (2, 128, 4, 22),
        "frequency_mean": (2, 128, 22),
        "pooled": (2, 128),
        "embedding": (2, 512),
    }
    assert {name: tuple(tensor.shape) for name, tensor in outputs.items()} == expected


def test_forward_is_the_last_stage_output(default_model: ThinResNet34) -> None:
    inputs = features(seed=3)
    with torch.no_grad():
        assert torch.equal(default_model(inputs), default_model.stage_outputs(inputs)["embedding"])


def test_parameter_count(default_model: ThinResNet34) -> None:
    assert count_parameters(default_model) == DEFAULT_PARAMETERS
    assert expected_parameters((16, 32, 64, 128), (3, 4, 6, 3), 512) == DEFAULT_PARAMETERS
    assert count_parameters(small_model()) == expected_parameters(SMALL["channels"], SMALL["blocks"], 32)


def test_output_depends_on_input(default_model: ThinResNet34) -> None:
    with torch.no_grad():
        first = default_model(features(seed=1))
        second = default_model(features(seed=2))
    assert not torch.allclose(first, second, atol=1e-3)
    assert not torch.allclose(first[0], first[1], atol=1e-3)  # batch items are embedded separately


def test_input_normalisations() -> None:
    inputs = features(seed=4)
    shifted = inputs.clone()
    shifted[:, :, 10] += 5.0  # an equaliser boost of one mel bin
    louder = inputs + 3.0  # a gain: the same offset on every bin
    with torch.no_grad():
        per_bin, per_segment, raw = (small_model(input_norm=n) for n in ("bin", "segment", "none"))
        assert torch.allclose(per_bin(inputs), per_bin(shifted), atol=1e-4)
        assert not torch.allclose(per_segment(inputs), per_segment(shifted), atol=1e-3)  # spectral shape is kept
        assert torch.allclose(per_segment(inputs), per_segment(louder), atol=1e-4)
        assert not torch.allclose(raw(inputs), raw(louder), atol=1e-3)
    with pytest.raises(ValueError, match="input_norm"):
        small_model(input_norm="batch")


@pytest.mark.parametrize(("frames", "stage4_frames"), [(32, 2), (200, 13), (500, 32)])
def test_other_segment_lengths(default_model: ThinResNet34, frames: int, stage4_frames: int) -> None:
    with torch.no_grad():
        outputs = default_model.stage_outputs(features(frames=frames))
    assert outputs["stage4"].shape == (2, 128, 4, stage4_frames)
    assert outputs["embedding"].shape == (2, 512)
    assert torch.isfinite(outputs["embedding"]).all()


def test_small_configuration_built_by_name() -> None:
    model = MODELS.build("thin_resnet34", **SMALL)
    assert isinstance(model, ThinResNet34)
    outputs = model.eval().stage_outputs(features(batch=3))
    assert outputs["stage4"].shape == (3, 32, 4, 22)
    assert outputs["embedding"].shape == (3, 32)
    assert "thin_resnet34" in MODELS.names()


def test_gradient_reaches_first_convolution() -> None:
    model = small_model().train()
    model(features(batch=3)).pow(2).sum().backward()
    gradient = model.conv1.weight.grad
    assert gradient is not None
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def test_channels_last_gives_the_same_embedding() -> None:
    model = small_model()
    inputs = features(seed=5)
    with torch.no_grad():
        reference = model(inputs)
        model.to(memory_format=torch.channels_last)
        assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(model(inputs), reference, atol=1e-5)


def test_bfloat16_autocast_on_cpu() -> None:
    model = small_model()
    inputs = features(seed=6)
    with torch.no_grad():
        reference = model(inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_precision = model(inputs)
    assert low_precision.shape == reference.shape and torch.isfinite(low_precision).all()
    cosine = torch.nn.functional.cosine_similarity(low_precision.float(), reference, dim=1)
    assert (cosine > 0.98).all()


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="frames, 64"):
        small_model()(torch.zeros(2, 350, 40))
    with pytest.raises(ValueError, match="frames, 64"):
        small_model()(torch.zeros(350, 64))
    with pytest.raises(ValueError, match="one per stage"):
        ThinResNet34(channels=(16, 32, 64))


def test_sap_weights_sum_to_one_and_weight_the_mean() -> None:
    torch.manual_seed(0)
    pooling = SelfAttentivePooling(8)
    frames = torch.randn(3, 8, 17)
    weights = pooling.attention_weights(frames)
    assert weights.shape == (3, 17)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3), atol=1e-6)
    assert (weights > 0).all()
    assert weights.std(dim=1).min() > 0  # not a plain mean
    expected = (frames * weights.unsqueeze(1)).sum(dim=2)
    assert torch.allclose(pooling(frames), expected, atol=1e-6)
    constant = torch.arange(8.0).view(1, 8, 1).expand(2, 8, 5)
    assert torch.allclose(pooling(constant), torch.arange(8.0).expand(2, 8), atol=1e-5)
