"""LOSSES registry: the paper's metric-learning losses (section II-B) behind one contract.

Every loss takes a batch of N singers x M segments, `(N, M, D)` embeddings, and returns a `LossOutput`
with a scalar loss and a scalar accuracy in [0, 1] for the training log. Classification losses also take
`labels`, the `(N,)` global training-singer indices. Losses compute in float32 whatever the input dtype.

Every distance or similarity matrix is built explicitly (`torch.cdist` or a matrix product of unit vectors)
and has the shape its comment states: voxceleb_trainer's prototypical and triplet losses broke when a
distance call that once broadcast to N x N started returning N x D (its issue #169).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from singerid.registry import Registry

# Smallest learnable similarity scale w: w is clamped so that the similarity stays increasing in cos.
MIN_SCALE = 1e-6


@dataclass
class LossOutput:
    """What every loss returns."""

    loss: Tensor  # scalar, differentiable
    accuracy: Tensor  # scalar in [0, 1], detached; each loss's docstring says what it counts


class MetricLoss(nn.Module):
    """Base of every loss: checks the batch, then calls `compute` on float32 embeddings.

    Subclasses set `Options` (a frozen dataclass of the YAML keys they accept), `min_segments` (smallest M),
    `min_singers` (smallest N), `needs_labels` and `metric`, and implement `compute`.
    """

    Options: ClassVar[type]
    min_segments: ClassVar[int] = 2
    min_singers: ClassVar[int] = 2
    needs_labels: ClassVar[bool] = False
    # how embeddings trained with this loss are compared at evaluation: "cosine" (also right for Euclidean distance
    # between unit vectors, which ranks the same) or "sqeuclidean" (raw embeddings, eq. 3 of the paper)
    metric: ClassVar[str] = "cosine"

    def __init__(self, options: Any = None, *, embedding_dim: int = 512, num_classes: int = 0) -> None:
        super().__init__()
        if options is None:
            options = self.Options()
        if not isinstance(options, self.Options):
            raise TypeError(
                f"{type(self).__name__} takes {self.Options.__qualname__} options, got {type(options).__name__}"
            )
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.options = options
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> LossOutput:
        """(N singers, M segments, D) embeddings [+ (N,) labels] -> LossOutput."""
        self.check_batch(embeddings, labels)
        return self.compute(embeddings.float(), labels)

    def compute(self, embeddings: Tensor, labels: Tensor | None) -> LossOutput:
        """The loss on a checked float32 batch."""
        raise NotImplementedError

    def check_batch(self, embeddings: Tensor, labels: Tensor | None) -> None:
        """Raise ValueError unless `embeddings` is (N, M, D) with N, M large enough (and labels fit)."""
        name = type(self).__name__
        if embeddings.dim() != 3:
            raise ValueError(
                f"{name} expects embeddings of shape (singers, segments, dim), got {tuple(embeddings.shape)}"
            )
        singers, segments, dim = embeddings.shape
        if segments < self.min_segments:
            raise ValueError(f"{name} needs at least {self.min_segments} segments per singer, got {segments}")
        if singers < self.min_singers:
            raise ValueError(f"{name} needs at least {self.min_singers} singers per batch, got {singers}")
        if dim < 1:
            raise ValueError(f"{name} got embeddings of dimension 0")
        if self.needs_labels:
            check_labels(labels, singers, self.num_classes, name)


def check_labels(labels: Tensor | None, singers: int, num_classes: int, name: str) -> None:
    """Raise ValueError unless `labels` holds `singers` integer class indices in [0, num_classes)."""
    if labels is None:
        raise ValueError(f"{name} needs labels: the (N,) training-singer index of each singer in the batch")
    if labels.shape != (singers,):
        raise ValueError(f"{name} expects labels of shape ({singers},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{name} expects integer labels, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{name} labels must lie in [0, {num_classes}), got {labels.tolist()}")


def accuracy_of(logits: Tensor, targets: Tensor) -> Tensor:
    """Fraction of rows of (rows, classes) `logits` whose argmax is the target class."""
    return (logits.argmax(dim=1) == targets).float().mean().detach()


def cosine_matrix(rows: Tensor, columns: Tensor) -> Tensor:
    """(A, D), (B, D) -> (A, B) cosine similarities."""
    return F.normalize(rows, dim=-1) @ F.normalize(columns, dim=-1).T


def euclidean_matrix(rows: Tensor, columns: Tensor) -> Tensor:
    """(A, D), (B, D) -> (A, B) Euclidean distances, exact (no matrix-product shortcut)."""
    return torch.cdist(rows, columns, compute_mode="donot_use_mm_for_euclid_dist")


class LearnableAffine(nn.Module):
    """S = w * similarity + b with learnable w (clamped to stay > 0) and b.

    The clamp passes gradients straight through, so a scale pushed below the floor can still recover (a plain
    clamp would give it zero gradient forever)."""

    def __init__(self, init_scale: float, init_bias: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    def forward(self, similarity: Tensor) -> Tensor:
        scale = self.scale + (self.scale.clamp(min=MIN_SCALE) - self.scale).detach()
        return scale * similarity + self.bias


def check_scale_options(init_scale: float) -> None:
    if init_scale <= 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}")


def check_aam_options(margin: float, scale: float) -> None:
    if not 0 <= margin < math.pi / 2:
        raise ValueError(f"AAM margin must lie in [0, pi/2) radians, got {margin}")
    if scale <= 0:
        raise ValueError(f"AAM scale must be positive, got {scale}")


LOSSES: Registry[MetricLoss] = Registry("loss")


@dataclass(frozen=True)
class TripletOptions:
    margin: float = 0.1  # alpha of eq. 1, in units of distance between unit vectors (paper: 0.1, 0.2)
    mining: str = "semihard"  # hard-negative mining: semihard (FaceNet; default) | hardest (collapses from scratch)

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ValueError(f"triplet margin must be >= 0, got {self.margin}")
        if self.mining not in ("semihard", "hardest"):
            raise ValueError(f"triplet mining must be 'semihard' or 'hardest', got '{self.mining}'")


@LOSSES.register("triplet")
class TripletLoss(MetricLoss):
    """Triplet loss with hard-negative mining, eq. 1: max(0, ||a - p|| - ||a - n|| + alpha).

    Distances are Euclidean (not squared) between L2-normalised embeddings, so they lie in [0, 2].
    Every ordered (anchor, positive) pair of distinct segments of one singer forms a triplet. Its negative is
    mined among the other singers' segments in the batch: with `mining="hardest"` the one closest to the anchor;
    with `mining="semihard"` (FaceNet, Schroff et al. 2015) the closest one that is still farther from the anchor
    than the positive, or, when every negative is closer than the positive, the farthest of them (the rule of
    TensorFlow's triplet_semihard_loss). Hardest-negative mining from a random start maps
    every segment to one point (the loss sticks at alpha; seen on the demo corpus), semi-hard mining does not.
    The loss is the mean over all N * M * (M - 1) triplets. Accuracy: the fraction of triplets whose positive
    is closer to the anchor than the hardest negative (whatever the mining, so it means the same in both modes).
    """

    Options = TripletOptions

    def compute(self, embeddings: Tensor, labels: Tensor | None) -> LossOutput:
        singers, segments, _ = embeddings.shape
        flat = F.normalize(embeddings.reshape(singers * segments, -1), dim=-1)
        distances = euclidean_matrix(flat, flat)  # (N*M, N*M)
        singer_of = torch.arange(singers, device=flat.device).repeat_interleave(segments)
        same_singer = singer_of[:, None] == singer_of[None, :]  # (N*M, N*M)
        negatives = distances.masked_fill(same_singer, math.inf)  # (N*M, N*M), inf for the anchor's own singer
        is_positive = same_singer & ~torch.eye(len(flat), dtype=torch.bool, device=flat.device)
        anchor_index, positive_index = is_positive.nonzero(as_tuple=True)  # N*M*(M-1) ordered pairs
        positive_distance = distances[anchor_index, positive_index]
        hardest = negatives.amin(dim=1)[anchor_index]
        if self.options.mining == "hardest":
            negative_distance = hardest
        else:
            rows = negatives[anchor_index]  # (pairs, N*M), inf for the anchor's own singer
            farther = rows.masked_fill(rows <= positive_distance[:, None], math.inf).amin(dim=1)
            farthest = rows.masked_fill(torch.isinf(rows), -math.inf).amax(dim=1)
            negative_distance = torch.where(torch.isfinite(farther), farther, farthest)
        loss = F.relu(positive_distance - negative_distance + self.options.margin).mean()
        accuracy = (positive_distance < hardest).float().mean().detach()
        return LossOutput(loss, accuracy)


@dataclass(frozen=True)
class ScaledCosineOptions:
    init_scale: float = 10.0  # initial w of S = w * cos + b (learned, kept > 0)
    init_bias: float = -5.0  # initial b of S = w * cos + b (learned)

    def __post_init__(self) -> None:
        check_scale_options(self.init_scale)


@LOSSES.register("ge2e")
class GE2ELoss(MetricLoss):
    """Generalised end-to-end loss, softmax variant (Wan et al., 2018).

    Every segment e_ji is compared with every singer's centroid c_k by S = w * cos(e_ji, c_k) + b; for its own
    singer the centroid leaves e_ji out: c_j^(-i) = (sum_m e_jm - e_ji) / (M - 1). The loss is the mean
    cross-entropy over singers of all N * M segments. Accuracy: the fraction of segments whose highest
    similarity is to their own singer.
    """

    Options = ScaledCosineOptions

    def __init__(self, options: Any = None, *, embedding_dim: int = 512, num_classes: int = 0) -> None:
        super().__init__(options, embedding_dim=embedding_dim, num_classes=num_classes)
        self.affine = LearnableAffine(self.options.init_scale, self.options.init_bias)

    def compute(self, embeddings: Tensor, labels: Tensor | None) -> LossOutput:
        singers, segments, dim = embeddings.shape
        totals = embeddings.sum(dim=1)  # (N, D)
        centroids = totals / segments  # (N, D)
        exclusive_centroids = (totals[:, None, :] - embeddings) / (segments - 1)  # (N, M, D)
        flat = embeddings.reshape(singers * segments, dim)
        cosine = cosine_matrix(flat, centroids).reshape(singers, segments, singers)  # (N, M, N)
        own_cosine = F.cosine_similarity(embeddings, exclusive_centroids, dim=-1)  # (N, M)
        own = torch.eye(singers, dtype=torch.bool, device=embeddings.device)[:, None, :]  # (N, 1, N)
        cosine = torch.where(own, own_cosine[:, :, None], cosine)
        logits = self.affine(cosine).reshape(singers * segments, singers)
        targets = torch.arange(singers, device=embeddings.device).repeat_interleave(segments)
        return LossOutput(F.cross_entropy(logits, targets), accuracy_of(logits, targets))


def split_query_support(embeddings: Tensor) -> tuple[Tensor, Tensor]:
    """(N, M, D) -> queries (N, D), the M-th segments, and prototypes (N, D), the means of the first M - 1."""
    return embeddings[:, -1, :], embeddings[:, :-1, :].mean(dim=1)


@dataclass(frozen=True)
class PrototypicalOptions:
    """The prototypical loss has no options."""


@LOSSES.register("proto")
class PrototypicalLoss(MetricLoss):
    """Prototypical network loss (PNL), eq. 2-3.

    The query of each singer is its M-th segment; the prototype is the mean of its first M - 1 segments.
    Logits are minus the squared Euclidean distances from each query to the N prototypes (embeddings are
    not normalised); the loss is the mean softmax cross-entropy over singers of the N queries (the paper sums;
    the mean keeps the scale independent of N). Accuracy: the fraction of queries whose nearest prototype is
    their own singer's.
    """

    Options = PrototypicalOptions
    metric = "sqeuclidean"

    def compute(self, embeddings: Tensor, labels: Tensor | None) -> LossOutput:
        queries, prototypes = split_query_support(embeddings)
        logits = -euclidean_matrix(queries, prototypes).pow(2)  # (N, N)
        targets = torch.arange(len(queries), device=embeddings.device)
        return LossOutput(F.cross_entropy(logits, targets), accuracy_of(logits, targets))


@LOSSES.register("angleproto")
class AngularPrototypicalLoss(MetricLoss):
    """Angular prototypical loss (A-PNL), eq. 4: as `proto` with logits w * cos(query, prototype) + b.

    w and b are learned; w is clamped to stay > 0. Accuracy: the fraction of queries whose most similar
    prototype is their own singer's.
    """

    Options = ScaledCosineOptions

    def __init__(self, options: Any = None, *, embedding_dim: int = 512, num_classes: int = 0) -> None:
        super().__init__(options, embedding_dim=embedding_dim, num_classes=num_classes)
        self.affine = LearnableAffine(self.options.init_scale, self.options.init_bias)

    def compute(self, embeddings: Tensor, labels: Tensor | None) -> LossOutput:
        queries, prototypes = split_query_support(embeddings)
        logits = self.affine(cosine_matrix(queries, prototypes))  # (N, N)
        targets = torch.arange(len(queries), device=embeddings.device)
        return LossOutput(F.cross_entropy(logits, targets), accuracy_of(logits, targets))


@dataclass(frozen=True)
class AAMSoftmaxOptions:
    margin: float = 0.2  # additive angular margin m in radians: the target logit is s * cos(theta + m)
    scale: float = 30.0  # logit scale s

    def __post_init__(self) -> None:
        check_aam_options(self.margin, self.scale)


@LOSSES.register("aamsoftmax")
class AAMSoftmaxLoss(MetricLoss):
    """Additive angular margin softmax (ArcFace; Deng et al., 2019) over the training singers.

    A (num_classes, embedding_dim) weight matrix holds one learned class vector per training singer; every
    one of the N * M segments is classified with logits s * cos(theta_k), where the target class's angle gets
    the margin: s * cos(theta_y + m). Where theta_y + m would pass pi the target logit becomes
    s * (cos(theta_y) - m * sin(m)), which keeps it decreasing in theta_y. Needs `labels` and
    `num_classes`. Accuracy: the fraction of segments whose nearest class vector (by cosine, without the
    margin) is their singer's.
    """

    Options = AAMSoftmaxOptions
    min_segments = 1
    min_singers = 1
    needs_labels = True

    def __init__(self, options: Any = None, *, embedding_dim: int = 512, num_classes: int = 0) -> None:
        super().__init__(options, embedding_dim=embedding_dim, num_classes=num_classes)
        if num_classes < 1:
            raise ValueError(
                f"{type(self).__name__} classifies training singers: num_classes must be positive, got {num_classes}"
            )
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_normal_(self.weight)

    def compute(self, embeddings: Tensor, labels: Tensor | None) -> LossOutput:
        assert labels is not None  # checked by check_batch
        singers, segments, dim = embeddings.shape
        if dim != self.embedding_dim:
            raise ValueError(f"{type(self).__name__} expects embedding dim {self.embedding_dim}, got {dim}")
        flat = embeddings.reshape(singers * segments, dim)
        targets = labels.to(flat.device, torch.long).repeat_interleave(segments)
        cosine = cosine_matrix(flat, self.weight.float())  # (N*M, num_classes)
        margin = self.options.margin
        sine = (1.0 - cosine.pow(2)).clamp(min=1e-12).sqrt()
        shifted = cosine * math.cos(margin) - sine * math.sin(margin)  # cos(theta + m)
        shifted = torch.where(cosine > math.cos(math.pi - margin), shifted, cosine - margin * math.sin(margin))
        is_target = F.one_hot(targets, self.num_classes).bool()
        logits = self.options.scale * torch.where(is_target, shifted, cosine)
        return LossOutput(F.cross_entropy(logits, targets), accuracy_of(cosine, targets))


@dataclass(frozen=True)
class AngleProtoAAMOptions:
    init_scale: float = 10.0  # initial w of the angular prototypical part (learned, kept > 0)
    init_bias: float = -5.0  # initial b of the angular prototypical part (learned)
    aam_margin: float = 0.2  # additive angular margin of the AAM-softmax part, in radians
    aam_scale: float = 30.0  # logit scale of the AAM-softmax part

    def __post_init__(self) -> None:
        check_scale_options(self.init_scale)
        check_aam_options(self.aam_margin, self.aam_scale)


@LOSSES.register("angleproto_aam")
class AngleProtoAAMLoss(MetricLoss):
    """Sum of the angular prototypical loss and the AAM-softmax loss on the same batch.

    Needs `labels` and `num_classes`. Accuracy: that of the angular prototypical part.
    """

    Options = AngleProtoAAMOptions
    needs_labels = True

    def __init__(self, options: Any = None, *, embedding_dim: int = 512, num_classes: int = 0) -> None:
        super().__init__(options, embedding_dim=embedding_dim, num_classes=num_classes)
        self.angleproto = AngularPrototypicalLoss(
            ScaledCosineOptions(self.options.init_scale, self.options.init_bias), embedding_dim=embedding_dim
        )
        self.aamsoftmax = AAMSoftmaxLoss(
            AAMSoftmaxOptions(self.options.aam_margin, self.options.aam_scale),
            embedding_dim=embedding_dim,
            num_classes=num_classes,
        )

    def compute(self, embeddings: Tensor, labels: Tensor | None) -> LossOutput:
        prototypical = self.angleproto.compute(embeddings, labels)
        classification = self.aamsoftmax.compute(embeddings, labels)
        return LossOutput(prototypical.loss + classification.loss, prototypical.accuracy)
