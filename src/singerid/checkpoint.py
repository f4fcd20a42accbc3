"""The checkpoint: the record that crosses from training to inference and evaluation.

A checkpoint file (`RUN/last.pt`, `RUN/best.pt`) is a dict of tensors and plain data, loadable with
`torch.load(..., weights_only=True)` (nothing is unpickled as code). `Checkpoint` is its typed form: what the
model is (config, log-mel and front-end settings, weights), what it was trained on (singers and the digests of
its train and val tracks), and the full training state that `train --resume` continues from. Files written by
older singerid versions load: a field they lack takes its default.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from singerid.config import TrainConfig, config_from_dict
from singerid.errors import SingerIdError
from singerid.features import FeatureConfig, FrontendConfig
from singerid.fileio import atomic_path, check_format, record_from_dict
from singerid.losses import LOSSES
from singerid.model import MODELS

CHECKPOINT_FORMAT = "singerid-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(SingerIdError):
    """A checkpoint that cannot be loaded or used; the message names the file and the reason."""


def build_model(config: TrainConfig, n_mels: int) -> nn.Module:
    """A freshly initialised network of `config.model` for `n_mels`-bin input."""
    options = MODELS.get(config.model.name).Options(**config.model.options)  # type: ignore[attr-defined]
    return MODELS.build(config.model.name, options, embedding_dim=config.model.embedding_dim, n_mels=n_mels)


def track_digests(track_ids: Sequence[str]) -> torch.Tensor:
    """64-bit digests of track ids (int64): a compact record of which tracks a checkpoint was trained on."""
    digests = [
        int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little", signed=True) for t in track_ids
    ]
    return torch.tensor(digests, dtype=torch.int64)


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A short hash of a model's weights: names cached embeddings, so a retrained model never reuses them."""
    digest = hashlib.sha1()
    for name, tensor in state.items():
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


@dataclass(eq=False)
class Checkpoint:
    """A trained (or training) model and everything needed to use it or to resume its training."""

    config: TrainConfig
    features: FeatureConfig
    frontend: FrontendConfig
    singers: list[str]  # the training singers, in the order of the loss's class indices
    model: dict[str, torch.Tensor]  # the network's state_dict
    trained_tracks: torch.Tensor | None = None  # int64 digests of the train and val track ids (None: not recorded)
    loss: dict[str, Any] = field(default_factory=dict)  # the loss's state_dict (learned scale and bias, ...)
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    seconds: float = 0.0  # seconds of training so far (what a train.minutes budget counts)
    best_eer: float = math.inf  # best validation EER so far
    val_eer: float = math.nan  # validation EER after this epoch (NaN: not validated)
    rng: dict[str, Any] = field(default_factory=dict)  # Python, numpy and torch RNG states
    source: str = ""  # the file it was read from (not stored)

    def to_payload(self) -> dict[str, Any]:
        """The file's dict: tensors and plain data only."""
        payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
        for name in self.__dataclass_fields__:
            payload[name] = getattr(self, name)
        del payload["source"]
        payload["config"] = self.config.to_dict()
        payload["features"] = asdict(self.features)
        payload["frontend"] = asdict(self.frontend)
        if self.trained_tracks is None:
            del payload["trained_tracks"]
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], source: str = "checkpoint") -> Checkpoint:
        """The typed checkpoint of a file's dict (of this or an older version); CheckpointError if it is none."""
        problem = check_format(payload, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "checkpoint", source)
        if problem:
            raise CheckpointError(problem)
        try:
            values = {name: payload[name] for name in cls.__dataclass_fields__ if name in payload}
            values["source"] = source
            values["config"] = config_from_dict(payload["config"], source, strict=False)
            values["features"] = record_from_dict(FeatureConfig, payload["features"], source)
            values["frontend"] = record_from_dict(FrontendConfig, payload["frontend"], source)
            return cls(**values)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: damaged checkpoint ({type(error).__name__}: {error})") from error

    def save(self, path: str | Path) -> None:
        """Writes the checkpoint atomically and durably (a crash leaves the previous file)."""
        with atomic_path(path, durable=True) as temporary:
            torch.save(self.to_payload(), temporary)

    def build_model(self) -> nn.Module:
        """The network with this checkpoint's weights, in eval mode."""
        model = build_model(self.config, self.features.n_mels)
        try:
            model.load_state_dict(self.model)  # float16 weights of a shipped model load into float32
        except RuntimeError as error:
            raise CheckpointError(f"{self.source}: weights do not fit the model of its config ({error})") from None
        return model.eval()

    @property
    def metric(self) -> str:
        """How embeddings of this model are compared: the distance its loss was trained with."""
        return LOSSES.get(self.config.loss.name).metric

    @property
    def trained_on(self) -> set[int]:
        """Digests of the train and val track ids (empty when the checkpoint did not record them)."""
        return set() if self.trained_tracks is None else set(self.trained_tracks.tolist())


BASE = "base"  # the name of the base encoder shipped with the package
BASE_FILE = Path(__file__).resolve().parent / "pretrained" / "base.pt"


def checkpoint_path(name: str | Path) -> Path:
    """A checkpoint file: `base` (the encoder shipped with singerid), or a path."""
    if str(name) != BASE:
        return Path(name)
    if not BASE_FILE.is_file():
        raise CheckpointError(f"this installation of singerid has no base encoder ({BASE_FILE} is missing)")
    return BASE_FILE


def inference_only(checkpoint: Checkpoint, half: bool = True) -> Checkpoint:
    """The checkpoint without what only training needs (loss, optimizer, scheduler and RNG states), its weights in
    float16 when `half` (a model to ship: they load back into float32)."""
    weights = {k: v.half() if half and v.is_floating_point() else v for k, v in checkpoint.model.items()}
    return replace(checkpoint, model=weights, loss={}, optimizer={}, scheduler={}, rng={})


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Loads a checkpoint file (weights_only=True: tensors and plain data only); `base` is the shipped encoder."""
    path = checkpoint_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path}: unreadable checkpoint ({error})") from error
    return Checkpoint.from_payload(payload, str(path))
