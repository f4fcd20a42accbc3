"""Tests of singerid.losses against slow, loop-by-loop references of the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from singerid.losses import (
    LOSSES,
    AAMSoftmaxLoss,
    AngleProtoAAMLoss,
    LossOutput,
    MetricLoss,
    TripletLoss,
)

NUM_CLASSES = 10
SINGERS, SEGMENTS, DIM = 4, 3, 8


def build(name: str, embedding_dim: int = DIM) -> MetricLoss:
    return LOSSES.build(name, embedding_dim=embedding_dim, num_classes=NUM_CLASSES)


def random_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(SINGERS, SEGMENTS, DIM, generator=generator)
    labels = torch.tensor([7, 2, 9, 0])
    return embeddings, labels


# ---- slow references: python loops over singers and segments, float64 ----


def norm(vector: np.ndarray) -> float:
    return math.sqrt(sum(float(value) ** 2 for value in vector))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b)) / (norm(a) * norm(b))


def cross_entropy(logits: list[float], target: int) -> float:
    largest = max(logits)
    return -(logits[target] - largest - math.log(sum(math.exp(value - largest) for value in logits)))


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda index: values[index])


def reference_triplet(x: np.ndarray, margin: float, mining: str = "semihard") -> tuple[float, float]:
    n, m, _ = x.shape
    unit = [[x[i, j] / norm(x[i, j]) for j in range(m)] for i in range(n)]
    losses, correct = [], []
    for i in range(n):
        for a in range(m):
            others = [norm(unit[i][a] - unit[k][s]) for k in range(n) if k != i for s in range(m)]
            for p in range(m):
                if p == a:
                    continue
                positive = norm(unit[i][a] - unit[i][p])
                farther = [d for d in others if d > positive]
                # semi-hard: the closest negative farther than the positive, else the farthest negative
                semihard = min(farther) if farther else max(others)
                negative = min(others) if mining == "hardest" else semihard
                losses.append(max(0.0, positive - negative + margin))
                correct.append(positive < min(others))
    return float(np.mean(losses)), float(np.mean(correct))


def reference_ge2e(x: np.ndarray, w: float, b: float) -> tuple[float, float]:
    n, m, _ = x.shape
    losses, correct = [], []
    for j in range(n):
        for i in range(m):
            logits = []
            for k in range(n):
                if k == j:
                    centroid = sum(x[k, s] for s in range(m) if s != i) / (m - 1)
                else:
                    centroid = sum(x[k, s] for s in range(m)) / m
                logits.append(w * cosine(x[j, i], centroid) + b)
            losses.append(cross_entropy(logits, j))
            correct.append(argmax(logits) == j)
    return float(np.mean(losses)), float(np.mean(correct))


def reference_proto_logits(x: np.ndarray, w: float | None, b: float | None) -> list[list[float]]:
    """Rows: queries (last segment); columns: prototypes (mean of the others). Angular when w is given."""
    n, m, _ = x.shape
    prototypes = [sum(x[k, s] for s in range(m - 1)) / (m - 1) for k in range(n)]
    rows = []
    for j in range(n):
        query = x[j, m - 1]
        if w is None:
            rows.append([-(norm(query - prototypes[k]) ** 2) for k in range(n)])
        else:
            rows.append([w * cosine(query, prototypes[k]) + b for k in range(n)])
    return rows


def reference_proto(x: np.ndarray, w: float | None = None, b: float | None = None) -> tuple[float, float]:
    rows = reference_proto_logits(x, w, b)
    losses = [cross_entropy(row, j) for j, row in enumerate(rows)]
    correct = [argmax(row) == j for j, row in enumerate(rows)]
    return float(np.mean(losses)), float(np.mean(correct))


def reference_aam(
    x: np.ndarray, labels: list[int], weight: np.ndarray, margin: float, scale: float
) -> tuple[float, float]:
    n, m, _ = x.shape
    losses, correct = [], []
    for j in range(n):
        for i in range(m):
            cosines = [cosine(x[j, i], weight[c]) for c in range(len(weight))]
            logits = [scale * value for value in cosines]
            theta = math.acos(cosines[labels[j]])
            if theta + margin <= math.pi:
                logits[labels[j]] = scale * math.cos(theta + margin)
            else:
                logits[labels[j]] = scale * (cosines[labels[j]] - margin * math.sin(margin))
            losses.append(cross_entropy(logits, labels[j]))
            correct.append(argmax(cosines) == labels[j])
    return float(np.mean(losses)), float(np.mean(correct))


def reference(loss: MetricLoss, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy of `loss`, recomputed from its formula with its current parameters."""
    x = embeddings.double().numpy()
    name = type(loss).registry_name  # type: ignore[attr-defined]
    if name == "triplet":
        return reference_triplet(x, loss.options.margin, loss.options.mining)
    if name == "ge2e":
        return reference_ge2e(x, loss.affine.scale.item(), loss.affine.bias.item())
    if name == "proto":
        return reference_proto(x)
    if name == "angleproto":
        return reference_proto(x, loss.affine.scale.item(), loss.affine.bias.item())
    if name == "aamsoftmax":
        weight = loss.weight.detach().double().numpy()
        return reference_aam(x, labels.tolist(), weight, loss.options.margin, loss.options.scale)
    if name == "angleproto_aam":
        angular = loss.angleproto.affine
        proto_loss, proto_accuracy = reference_proto(x, angular.scale.item(), angular.bias.item())
        weight = loss.aamsoftmax.weight.detach().double().numpy()
        options = loss.options
        aam_loss, _ = reference_aam(x, labels.tolist(), weight, options.aam_margin, options.aam_scale)
        return proto_loss + aam_loss, proto_accuracy
    raise AssertionError(f"no reference for loss '{name}'; add one")


def perturb_parameters(loss: MetricLoss) -> None:
    """Move learnable scalars off their defaults so the reference sees values the code must really read."""
    with torch.no_grad():
        for name, parameter in loss.named_parameters():
            if parameter.dim() == 0:
                parameter.add_(0.37 if name.endswith("scale") else -0.21)


def test_registered_names() -> None:
    assert LOSSES.names() == ["aamsoftmax", "angleproto", "angleproto_aam", "ge2e", "proto", "triplet"]


@pytest.mark.parametrize("name", LOSSES.names())
def test_matches_slow_reference(name: str) -> None:
    embeddings, labels = random_batch()
    loss = build(name)
    perturb_parameters(loss)
    output = loss(embeddings, labels)
    assert isinstance(output, LossOutput)
    assert output.loss.shape == () and output.accuracy.shape == ()
    expected_loss, expected_accuracy = reference(loss, embeddings, labels)
    assert output.loss.item() == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
    assert output.accuracy.item() == pytest.approx(expected_accuracy, abs=1e-6)
    assert output.loss.item() > 0


@pytest.mark.parametrize("mining", ["semihard", "hardest"])
def test_triplet_matches_reference_with_other_margin(mining: str) -> None:
    embeddings, labels = random_batch(seed=3)
    loss = TripletLoss(TripletLoss.Options(margin=0.2, mining=mining))
    output = loss(embeddings)
    expected_loss, expected_accuracy = reference_triplet(embeddings.double().numpy(), 0.2, mining)
    assert output.loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert output.accuracy.item() == pytest.approx(expected_accuracy)


def test_semihard_and_hardest_mining_differ_on_a_constructed_case() -> None:
    # one singer's positive is farther than another singer's segment: hardest picks that segment, semi-hard a
    # farther one
    x = torch.tensor([[[1.0, 0.0], [0.6, 0.8]], [[0.8, 0.6], [-1.0, 0.0]]])
    hardest = TripletLoss(TripletLoss.Options(margin=0.1, mining="hardest"))(x)
    semihard = TripletLoss(TripletLoss.Options(margin=0.1, mining="semihard"))(x)
    assert hardest.loss.item() > semihard.loss.item()


def test_aam_margin_fallback_past_pi_matches_reference() -> None:
    # Embeddings opposite their class vector: theta near pi, so theta + m passes pi.
    loss = AAMSoftmaxLoss(AAMSoftmaxLoss.Options(margin=0.5, scale=10.0), embedding_dim=DIM, num_classes=4)
    embeddings = -loss.weight.detach()[:, None, :].repeat(1, 2, 1) + 0.01 * torch.randn(4, 2, DIM)
    labels = torch.arange(4)
    output = loss(embeddings, labels)
    weight = loss.weight.detach().double().numpy()
    expected_loss, _ = reference_aam(embeddings.double().numpy(), labels.tolist(), weight, 0.5, 10.0)
    assert output.loss.item() == pytest.approx(expected_loss, rel=1e-5)


@pytest.mark.parametrize("name", LOSSES.names())
def test_invariant_to_permuting_singers(name: str) -> None:
    embeddings, labels = random_batch(seed=5)
    loss = build(name)
    output = loss(embeddings, labels)
    order = torch.tensor([2, 0, 3, 1])
    permuted = loss(embeddings[order], labels[order])
    assert permuted.loss.item() == pytest.approx(output.loss.item(), rel=1e-5)
    assert permuted.accuracy.item() == pytest.approx(output.accuracy.item())


@pytest.mark.parametrize("name", LOSSES.names())
def test_gradients_are_finite_and_non_zero(name: str) -> None:
    embeddings, labels = random_batch(seed=7)
    embeddings.requires_grad_(True)
    loss = build(name)
    loss(embeddings, labels).loss.backward()
    assert embeddings.grad is not None
    assert torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0
    for parameter_name, parameter in loss.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


def test_learnable_parameters_are_the_expected_ones() -> None:
    counts = {name: sum(p.numel() for p in build(name).parameters()) for name in LOSSES.names()}
    assert counts == {
        "triplet": 0,
        "proto": 0,
        "ge2e": 2,
        "angleproto": 2,
        "aamsoftmax": NUM_CLASSES * DIM,
        "angleproto_aam": 2 + NUM_CLASSES * DIM,
    }


def test_scale_is_clamped_positive() -> None:
    embeddings, labels = random_batch()
    loss = build("angleproto")
    with torch.no_grad():
        loss.affine.scale.fill_(-3.0)
    output = loss(embeddings, labels)
    # With w clamped to ~0 every logit equals the bias: loss = log(N).
    assert output.loss.item() == pytest.approx(math.log(SINGERS), rel=1e-4)
    # ... yet w still gets a gradient (growing w lowers the loss), so it can climb back above the floor
    output.loss.backward()
    assert loss.affine.scale.grad is not None and loss.affine.scale.grad.item() < 0


@pytest.mark.parametrize("name", LOSSES.names())
def test_training_a_projection_on_clusters_lowers_the_loss(name: str) -> None:
    generator = torch.Generator().manual_seed(11)
    singers, segments, input_dim, output_dim = 8, 3, 16, 8
    centres = torch.randn(singers, input_dim, generator=generator)
    offset = 4.0 * torch.randn(input_dim, generator=generator)  # shared nuisance direction to learn away
    inputs = offset + centres[:, None, :] + 0.3 * torch.randn(singers, segments, input_dim, generator=generator)
    labels = torch.arange(singers)
    torch.manual_seed(0)
    projection = nn.Linear(input_dim, output_dim)
    loss = LOSSES.build(name, embedding_dim=output_dim, num_classes=singers)
    optimiser = torch.optim.Adam([*projection.parameters(), *loss.parameters()], lr=0.03)
    first = None
    for _ in range(40):
        output = loss(projection(inputs), labels)
        first = output.loss.item() if first is None else first
        optimiser.zero_grad()
        output.loss.backward()
        optimiser.step()
    final = loss(projection(inputs), labels)
    assert final.loss.item() < 0.5 * first
    assert final.accuracy.item() == 1.0


def one_hot_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Singer k's segments all equal the unit vector e_k."""
    embeddings = torch.zeros(SINGERS, SEGMENTS, DIM)
    for singer in range(SINGERS):
        embeddings[singer, :, singer] = 1.0
    return embeddings, torch.arange(SINGERS)


def align_class_vectors(loss: MetricLoss) -> None:
    """Point class vector k of any AAM weight at e_k."""
    for module in loss.modules():
        if isinstance(module, AAMSoftmaxLoss):
            with torch.no_grad():
                module.weight.copy_(torch.eye(NUM_CLASSES, DIM))


@pytest.mark.parametrize("name", LOSSES.names())
def test_accuracy_is_one_on_separated_singers(name: str) -> None:
    embeddings, labels = one_hot_batch()
    loss = build(name)
    align_class_vectors(loss)
    assert loss(embeddings, labels).accuracy.item() == 1.0


@pytest.mark.parametrize("name", LOSSES.names())
def test_accuracy_below_one_when_a_segment_sounds_like_another_singer(name: str) -> None:
    embeddings, labels = one_hot_batch()
    embeddings[0, -1] = embeddings[1, 0]  # singer 0's last segment is singer 1's voice
    loss = build(name)
    align_class_vectors(loss)
    accuracy = loss(embeddings, labels).accuracy.item()
    assert 0.0 < accuracy < 1.0


def test_proto_accuracy_counts_queries() -> None:
    embeddings, labels = one_hot_batch()
    embeddings[0, -1] = embeddings[1, 0]
    assert build("proto")(embeddings, labels).accuracy.item() == 0.75


@pytest.mark.parametrize("name", LOSSES.names())
def test_rejects_inputs_that_are_not_three_dimensional(name: str) -> None:
    loss = build(name)
    with pytest.raises(ValueError, match="shape"):
        loss(torch.randn(SINGERS * SEGMENTS, DIM), torch.arange(SINGERS * SEGMENTS))
    with pytest.raises(ValueError, match="shape"):
        loss(torch.randn(2, SINGERS, SEGMENTS, DIM), torch.arange(2))


@pytest.mark.parametrize("name", LOSSES.names())
def test_rejects_too_few_segments_or_singers(name: str) -> None:
    loss = build(name)
    too_few = loss.min_segments - 1
    if too_few >= 1:
        with pytest.raises(ValueError, match="segments"):
            loss(torch.randn(SINGERS, too_few, DIM), torch.arange(SINGERS))
    if loss.min_singers > 1:
        with pytest.raises(ValueError, match="singers"):
            loss(torch.randn(1, SEGMENTS, DIM), torch.arange(1))


def test_min_segments() -> None:
    assert {name: LOSSES.get(name).min_segments for name in LOSSES.names()} == {
        "triplet": 2,
        "ge2e": 2,
        "proto": 2,
        "angleproto": 2,
        "aamsoftmax": 1,
        "angleproto_aam": 2,
    }
    output = build("aamsoftmax")(torch.randn(2, 1, DIM), torch.tensor([0, 1]))
    assert torch.isfinite(output.loss)


@pytest.mark.parametrize("name", ["aamsoftmax", "angleproto_aam"])
def test_classification_losses_need_classes_and_labels(name: str) -> None:
    assert LOSSES.get(name).needs_labels
    with pytest.raises(ValueError, match="num_classes"):
        LOSSES.build(name, embedding_dim=DIM)
    loss = build(name)
    embeddings, _ = random_batch()
    with pytest.raises(ValueError, match="needs labels"):
        loss(embeddings)
    with pytest.raises(ValueError, match="labels of shape"):
        loss(embeddings, torch.arange(SINGERS * SEGMENTS))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        loss(embeddings, torch.tensor([0, 1, 2, NUM_CLASSES]))
    with pytest.raises(ValueError, match="integer"):
        loss(embeddings, torch.zeros(SINGERS))
    with pytest.raises(ValueError, match="embedding dim"):
        loss(torch.randn(SINGERS, SEGMENTS, DIM + 1), torch.arange(SINGERS))


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="margin"):
        TripletLoss.Options(margin=-0.1)
    with pytest.raises(ValueError, match="init_scale"):
        LOSSES.get("ge2e").Options(init_scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        AngleProtoAAMLoss.Options(aam_scale=-1.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        LOSSES.get("angleproto").Options(margin=0.1)  # not a key of angleproto
    with pytest.raises(TypeError, match="TripletOptions"):
        LOSSES.build("ge2e", TripletLoss.Options())


def test_half_precision_input_gives_float32_loss() -> None:
    embeddings, labels = random_batch()
    loss = build("angleproto")
    full = loss(embeddings, labels)
    half = loss(embeddings.half(), labels)
    assert half.loss.dtype == torch.float32
    assert half.loss.item() == pytest.approx(full.loss.item(), rel=1e-2)
