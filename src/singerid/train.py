"""Training (section II and III-A of the paper): Thin ResNet34 + SAP on N singers x M crops with a metric loss.

One `train()` runs on a CPU, on one GPU, or under torchrun on many GPUs and nodes (DistributedDataParallel). With
several processes, every process embeds its share of the global batch and the embeddings are gathered with their
gradients, so the loss sees all N singers (as on one device), not only the local share.

A run folder holds config.yaml (the resolved config), last.pt (every epoch), best.pt (best validation EER),
log.csv and tensorboard/ events. `resume=True` continues from last.pt exactly: model, loss parameters, optimiser,
scheduler, epoch and RNG states (batches and crops are seeded by (seed, epoch), so they repeat too).
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from singerid.catalog import TRAINING_SPLITS
from singerid.config import TrainConfig, dump_config
from singerid.losses import LOSSES, MetricLoss
from singerid.metrics import equal_error_rate
from singerid.model import MODELS
from singerid.sampler import CropDataset, SingerBatchSampler
from singerid.store import FeatureStore

CHECKPOINT_FORMAT = "singerid-checkpoint"
CHECKPOINT_VERSION = 1
LOG_COLUMNS = ("epoch", "step", "loss", "accuracy", "lr", "segments_per_second", "val_eer", "val_top1", "seconds")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message names the file and the reason."""


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> tuple[Distributed, torch.device]:
    """Reads torchrun's environment; starts the process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(int(os.environ.get("RANK", "0")), world, local), device


def build_model(config: TrainConfig, n_mels: int) -> nn.Module:
    m = config.model
    return MODELS.build(
        m.name,
        embedding_dim=m.embedding_dim,
        n_mels=n_mels,
        channels=m.channels,
        blocks=m.blocks,
        input_norm=m.input_norm,
    )


def build_loss(config: TrainConfig, num_classes: int) -> MetricLoss:
    options_class = LOSSES.get(config.loss.name).Options
    return LOSSES.build(
        config.loss.name,
        options_class(**config.loss.options),
        embedding_dim=config.model.embedding_dim,
        num_classes=num_classes,
    )


class GatherWithGradient(torch.autograd.Function):
    """All processes' tensors concatenated in rank order; the backward pass sums every process's gradient and
    hands each process the part for its own rows (all_reduce, so it works on gloo as well as NCCL)."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        ctx.rows = local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place: leave autograd's tensor alone
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_embeddings(local: torch.Tensor, world: Distributed) -> torch.Tensor:
    """All processes' embeddings, in rank order, keeping the gradient path to the local ones."""
    return local if world.world_size == 1 else GatherWithGradient.apply(local)


def check_same_start(epoch: int, device: torch.device) -> None:
    """Every process must resume from the same epoch: the run folder has to be on a filesystem all nodes share."""
    low = torch.tensor([epoch], device=device)
    high = low.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise CheckpointError(
            f"processes would resume from epochs {low.item()} to {high.item()}: put the run folder on a filesystem "
            "that every node shares"
        )


def gather_labels(local: torch.Tensor, world: Distributed) -> torch.Tensor:
    if world.world_size == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world.world_size)]
    dist.all_gather(parts, local)
    return torch.cat(parts)


def training_singers(store: FeatureStore) -> tuple[list[str], list[list[int]]]:
    """The singers with train tracks, sorted, and the store indices of each singer's train tracks."""
    tracks: dict[str, list[int]] = {}
    for i, t in enumerate(store.tracks):
        if t.split == "train":
            tracks.setdefault(t.singer_id, []).append(i)
    singers = sorted(tracks)
    return singers, [tracks[s] for s in singers]


def track_digests(track_ids: Sequence[str]) -> torch.Tensor:
    """64-bit digests of track ids (int64): a compact record of which tracks a checkpoint was trained on."""
    digests = [
        int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little", signed=True) for t in track_ids
    ]
    return torch.tensor(digests, dtype=torch.int64)


def evenly_spaced_crops(frames: int, crop: int, count: int) -> list[int]:
    if frames <= crop:
        return [0]
    return sorted({int(round(x)) for x in np.linspace(0, frames - crop, count)})


@torch.no_grad()
def embed_crops(
    model: nn.Module,
    store: FeatureStore,
    crops: list[tuple[int, int]],
    crop_frames: int,
    device: torch.device,
    batch_size: int = 64,
) -> torch.Tensor:
    """Unit-norm embeddings of (track, start) crops, in eval mode."""
    outputs = []
    for i in range(0, len(crops), batch_size):
        chunk = np.stack([store.crop(t, s, crop_frames) for t, s in crops[i : i + batch_size]])
        outputs.append(nn.functional.normalize(model(torch.from_numpy(chunk).to(device)).float(), dim=1).cpu())
    return torch.cat(outputs)


def validate(
    model: nn.Module, store: FeatureStore, singers: list[str], config: TrainConfig, device: torch.device
) -> tuple[float, float]:
    """EER and top-1 of val-track segments against each training singer's prototype (from its train tracks)."""
    crop, count = config.batch.crop_frames, config.train.val_segments
    index = {s: i for i, s in enumerate(singers)}
    val = [(i, t) for i, t in enumerate(store.tracks) if t.split == "val" and t.singer_id in index]
    if not val:
        return float("nan"), float("nan")
    proto_crops, proto_labels = [], []
    per_singer: dict[str, int] = {}
    for i, t in enumerate(store.tracks):
        if t.split == "train" and t.singer_id in index and per_singer.get(t.singer_id, 0) < 3:
            per_singer[t.singer_id] = per_singer.get(t.singer_id, 0) + 1
            for s in evenly_spaced_crops(t.frames, crop, count):
                proto_crops.append((i, s))
                proto_labels.append(index[t.singer_id])
    was_training = model.training
    model.eval()
    protos = embed_crops(model, store, proto_crops, crop, device)
    prototypes = torch.zeros(len(singers), protos.shape[1]).index_add_(0, torch.tensor(proto_labels), protos)
    prototypes = nn.functional.normalize(prototypes, dim=1)
    query_crops = [(i, s) for i, t in val for s in evenly_spaced_crops(t.frames, crop, count)]
    query_labels = torch.tensor([index[store.tracks[i].singer_id] for i, _ in query_crops])
    scores = embed_crops(model, store, query_crops, crop, device) @ prototypes.T
    model.train(was_training)
    top1 = float((scores.argmax(1) == query_labels).float().mean())
    target = torch.zeros_like(scores, dtype=torch.bool)
    target[torch.arange(len(query_labels)), query_labels] = True
    eer = equal_error_rate(scores.flatten().numpy(), target.flatten().numpy())
    return eer, top1


def rng_states() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and lists (loadable with weights_only=True)."""
    version, keys, gauss = random.getstate()
    name, mt, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": [version, list(keys), gauss],
        "numpy": [name, torch.from_numpy(mt.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, keys, gauss = states["python"]
    random.setstate((version, tuple(keys), gauss))
    name, mt, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, mt.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint (weights_only=True: tensors and plain data only); checks its format and version."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path}: unreadable checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a singerid checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')}, expected {CHECKPOINT_VERSION}")
    return payload


@dataclass(frozen=True)
class TrainResult:
    run: Path
    epochs: int
    best_eer: float
    last_eer: float
    segments_per_second: float
    main_process: bool  # False on the other processes of a distributed run


def train(
    store_path: str | Path, run: str | Path, config: TrainConfig, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Trains on the store's train split; validates on its val split; writes the run folder."""
    world, device = setup_distributed()
    run = Path(run)
    if not resume and (run / "last.pt").exists():
        raise CheckpointError(f"{run}: holds a trained run already; pass --resume to continue it, or use a new folder")
    store = FeatureStore(store_path)
    singers, singer_tracks = training_singers(store)
    if len(singers) < 2:
        raise ValueError(f"{store_path}: needs at least 2 singers with train tracks, has {len(singers)}")
    # train tracks are learned from and val tracks choose the best checkpoint: neither may be a test track later
    trained_tracks = track_digests(sorted(t.track_id for t in store.tracks if t.split in TRAINING_SPLITS))
    loop = config.train
    torch.manual_seed(loop.seed)
    model = build_model(config, store.features.n_mels).to(device)
    loss_fn = build_loss(config, len(singers)).to(device)
    if loop.channels_last:
        model = model.to(memory_format=torch.channels_last)
    parameters = list(model.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.Adam(parameters, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.optim.decay_every, gamma=config.optim.decay)
    start_epoch, best_eer, step = 0, float("inf"), 0
    if resume and (run / "last.pt").exists():
        state = load_checkpoint(run / "last.pt")
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_eer, step = state["epoch"], state["best_eer"], state["step"]
        set_rng_states(state["rng"])
    if world.world_size > 1:
        check_same_start(start_epoch, device)
        if loop.sync_batchnorm and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    core = model.module if isinstance(model, DistributedDataParallel) else model
    forward = torch.compile(model) if loop.compile else model
    sampler = SingerBatchSampler(
        singer_tracks,
        [t.frames for t in store.tracks],
        config.batch.singers,
        config.batch.segments,
        config.batch.crop_frames,
        loop.seed,
        world.rank,
        world.world_size,
        loop.passes,
    )
    loader = DataLoader(
        CropDataset(store, config.batch.crop_frames),
        sampler=sampler,
        batch_size=None,
        num_workers=loop.workers,
        persistent_workers=loop.workers > 0,
        pin_memory=device.type == "cuda",
    )
    bf16 = loop.precision == "bf16" or (
        loop.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    if world.main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    writer = tensorboard_writer(run) if world.main else None
    segments_per_second, last_eer = 0.0, float("nan")
    n, m = sampler.singers, config.batch.segments
    if n < config.batch.singers and world.main:
        print(f"train: batch.singers {config.batch.singers} > {n} training singers; batches hold {n}", file=sys.stderr)
    for epoch in range(start_epoch, loop.epochs):
        sampler.set_epoch(epoch)
        model.train()
        started = time.perf_counter()
        totals = np.zeros(2)
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{loop.epochs}",
            unit="batch",
            leave=False,
            disable=not (progress and world.main),
        )
        for features, labels in bar:
            features, labels = features.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast():
                local = forward(features)
            embeddings = gather_embeddings(local.float(), world).view(n, m, -1)
            all_labels = gather_labels(labels, world)
            out = loss_fn(embeddings, all_labels.view(n, m)[:, 0])
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            step += 1
            totals += (out.loss.item(), out.accuracy.item())
            elapsed = time.perf_counter() - started
            bar.set_postfix(
                loss=f"{out.loss.item():.3f}",
                acc=f"{out.accuracy.item():.2f}",
                seg_s=f"{(bar.n + 1) * n * m / max(elapsed, 1e-9):.0f}",
            )
        scheduler.step()
        seconds = time.perf_counter() - started
        segments_per_second = len(sampler) * n * m / max(seconds, 1e-9)
        loss_mean, accuracy_mean = totals / max(len(sampler), 1)
        val_eer = val_top1 = float("nan")
        validate_now = loop.validate_every > 0 and ((epoch + 1) % loop.validate_every == 0 or epoch + 1 == loop.epochs)
        if validate_now and world.main:
            val_eer, val_top1 = validate(core, store, singers, config, device)
            last_eer = val_eer
        if world.main:
            improved = validate_now and val_eer < best_eer
            best_eer = min(best_eer, val_eer) if validate_now else best_eer
            payload = {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "config": config.to_dict(),
                "features": asdict(store.features),
                "frontend": store.header.frontend,
                "singers": singers,
                "trained_tracks": trained_tracks,
                "model": core.state_dict(),
                "loss": loss_fn.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "best_eer": best_eer,
                "val_eer": val_eer,
                "rng": rng_states(),
            }
            if improved or not np.isfinite(best_eer):  # until a validation gives a number, best follows last
                save_checkpoint(run / "best.pt", payload)
            save_checkpoint(run / "last.pt", payload)  # after best.pt: a kill between them loses no best model
            row = dict(
                zip(
                    LOG_COLUMNS,
                    (
                        epoch + 1,
                        step,
                        loss_mean,
                        accuracy_mean,
                        scheduler.get_last_lr()[0],
                        segments_per_second,
                        val_eer,
                        val_top1,
                        seconds,
                    ),
                )
            )
            append_log(run / "log.csv", row)
            if writer is not None:
                for key in ("loss", "accuracy", "lr", "segments_per_second", "val_eer", "val_top1"):
                    if not np.isnan(row[key]):
                        writer.add_scalar(f"train/{key}" if not key.startswith("val") else key, row[key], epoch + 1)
            if progress:
                val = f", val EER {100 * val_eer:.2f} %, top-1 {100 * val_top1:.1f} %" if validate_now else ""
                print(
                    f"epoch {epoch + 1}/{loop.epochs}: loss {loss_mean:.4f}, batch accuracy {accuracy_mean:.3f}, "
                    f"{segments_per_second:.0f} segments/s{val}",
                    flush=True,
                )
        if world.world_size > 1:
            dist.barrier()
    if writer is not None:
        writer.close()
    if world.world_size > 1:
        dist.destroy_process_group()
    return TrainResult(run, loop.epochs, best_eer, last_eer, segments_per_second, world.main)


def append_log(path: Path, row: dict[str, float]) -> None:
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def tensorboard_writer(run: Path) -> Any:
    """A TensorBoard SummaryWriter when tensorboard is installed (extra `tensorboard`), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run / "tensorboard"))
