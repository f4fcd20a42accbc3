"""Training (section II and III-A of the paper): Thin ResNet34 + SAP on N singers x M crops with a metric loss.

One `train()` runs on a CPU, on one GPU, or under torchrun on many GPUs and nodes (DistributedDataParallel; see
`singerid.distributed`). A run folder holds config.yaml (the resolved config), last.pt (every epoch), best.pt
(best validation EER), log.csv and tensorboard/ events. `resume=True` continues from last.pt exactly: model, loss
parameters, optimiser, scheduler, epoch and RNG states (batches and crops are seeded by (seed, epoch), so they
repeat too).

The learning rate follows the paper's step schedule (x0.95 every 10 epochs), or `optim.schedule: cosine`: a
linear warm-up over the first `optim.warmup` of the run, then a cosine to zero at its end. With `train.minutes`
the run is a time budget: it stops after that many minutes of training (the last epoch cut short, validated and
saved), and the cosine spans the budget, so a person can say "train for 15 minutes" and get a finished schedule.
"""

from __future__ import annotations

import csv
import math
import random
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from singerid.augment import Augmenter
from singerid.checkpoint import Checkpoint, CheckpointError, build_model, load_checkpoint, track_digests
from singerid.config import TrainConfig, dump_config
from singerid.distributed import (
    Distributed,
    any_process,
    barrier,
    check_same_start,
    finish,
    gather_embeddings,
    gather_labels,
    setup_distributed,
)
from singerid.errors import SingerIdError
from singerid.features import SEGMENT_FRAMES
from singerid.fileio import write_atomically
from singerid.losses import LOSSES, MetricLoss
from singerid.metrics import equal_error_rate
from singerid.progress import progress_bar
from singerid.sampler import CropDataset, SingerBatchSampler
from singerid.splits import TRAIN, TRAINING_SPLITS, VAL
from singerid.store import FeatureStore

clock = time.perf_counter  # the training loop's clock (train.minutes); tests may replace it
VAL_IMPOSTORS = 100  # impostor singers per val query in the validation EER
LOG_COLUMNS = ("epoch", "step", "loss", "accuracy", "lr", "segments_per_second", "val_eer", "val_top1", "seconds")


class TrainingError(SingerIdError):
    """A store or run folder that training cannot use; the message says why."""


def build_loss(config: TrainConfig, num_classes: int) -> MetricLoss:
    options_class = LOSSES.get(config.loss.name).Options
    return LOSSES.build(
        config.loss.name,
        options_class(**config.loss.options),
        embedding_dim=config.model.embedding_dim,
        num_classes=num_classes,
    )


def training_singers(store: FeatureStore) -> tuple[list[str], list[list[int]]]:
    """The singers with train tracks, sorted, and the store indices of each singer's train tracks."""
    tracks: dict[str, list[int]] = {}
    for i, t in enumerate(store.tracks):
        if t.split == TRAIN:
            tracks.setdefault(t.singer_id, []).append(i)
    singers = sorted(tracks)
    return singers, [tracks[s] for s in singers]


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
    """EER and top-1 of 3.5 s val-track segments against each training singer's prototype (the segments of its
    first `train.val_enroll_tracks` train tracks)."""
    window, count = SEGMENT_FRAMES, config.train.val_segments
    index = {s: i for i, s in enumerate(singers)}
    val = [(i, t) for i, t in enumerate(store.tracks) if t.split == VAL and t.singer_id in index]
    if not val:
        return float("nan"), float("nan")
    proto_crops, proto_labels = [], []
    per_singer: dict[str, int] = {}
    for i, t in enumerate(store.tracks):
        if (
            t.split == TRAIN
            and t.singer_id in index
            and per_singer.get(t.singer_id, 0) < config.train.val_enroll_tracks
        ):
            per_singer[t.singer_id] = per_singer.get(t.singer_id, 0) + 1
            for s in evenly_spaced_crops(t.frames, window, count):
                proto_crops.append((i, s))
                proto_labels.append(index[t.singer_id])
    was_training = model.training
    model.eval()
    protos = embed_crops(model, store, proto_crops, window, device)
    prototypes = torch.zeros(len(singers), protos.shape[1]).index_add_(0, torch.tensor(proto_labels), protos)
    prototypes = nn.functional.normalize(prototypes, dim=1)
    query_crops = [(i, s) for i, t in val for s in evenly_spaced_crops(t.frames, window, count)]
    query_labels = torch.tensor([index[store.tracks[i].singer_id] for i, _ in query_crops])
    queries = embed_crops(model, store, query_crops, window, device)
    model.train(was_training)
    return prototype_scores(queries, query_labels, prototypes)


def prototype_scores(
    queries: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, impostors: int = VAL_IMPOSTORS
) -> tuple[float, float]:
    """EER and top-1 of unit query embeddings against every singer's prototype, scored in blocks of queries: the EER
    takes each query's own singer and `impostors` others drawn at random (a fixed seed), so memory stays bounded at
    thousands of singers (a full score matrix of 40,000 queries x 5,000 singers would be 0.8 GB, its sort 3 GB)."""
    generator = torch.Generator().manual_seed(0)
    singers = prototypes.shape[0]
    correct, target_scores, impostor_scores = 0, [], []
    for start in range(0, len(labels), 4096):
        block, truth = queries[start : start + 4096] @ prototypes.T, labels[start : start + 4096]
        correct += int((block.argmax(1) == truth).sum())
        rows = torch.arange(len(truth))
        target_scores.append(block[rows, truth])
        if singers - 1 <= impostors:  # every other singer
            others = torch.ones_like(block, dtype=torch.bool)
            others[rows, truth] = False
            impostor_scores.append(block[others])
        else:  # a random offset in 1..singers-1 from the query's own singer never lands on it
            offsets = torch.randint(1, singers, (len(truth), impostors), generator=generator)
            impostor_scores.append(block.gather(1, (truth[:, None] + offsets) % singers).flatten())
    if singers < 2:
        return float("nan"), correct / max(len(labels), 1)
    targets, others = torch.cat(target_scores), torch.cat(impostor_scores)
    scores = torch.cat([targets, others]).numpy()
    is_target = np.concatenate([np.ones(len(targets), dtype=bool), np.zeros(len(others), dtype=bool)])
    return equal_error_rate(scores, is_target), correct / len(labels)


def initial_weights(source: str, config: TrainConfig, store: FeatureStore) -> dict[str, torch.Tensor]:
    """The network weights to fine-tune from (`train.init`): those of a checkpoint of the same model and log-mel."""
    start = load_checkpoint(source)
    if start.config.model != config.model or start.features != store.features:
        model = start.config.to_dict()["model"]
        raise CheckpointError(
            f"{start.source}: a model of other settings ({model}, features {start.features}) than this run's; "
            "fine-tune it with its model settings, on a store of its log-mel settings"
        )
    return {name: value.float() if value.is_floating_point() else value for name, value in start.model.items()}


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


def cosine_factor(progress: float, warmup: float) -> float:
    """The cosine schedule's learning-rate factor at `progress` (0 to 1) of the run: a linear warm-up to 1 over the
    first `warmup` of it, then half a cosine down to 0 at its end."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return min((progress + 1e-3) / warmup, 1.0)
    return 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))


@dataclass(frozen=True)
class TrainResult:
    run: Path
    epochs: int
    best_eer: float
    last_eer: float
    segments_per_second: float
    main_process: bool  # False on the other processes of a distributed run


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    segments_per_second: float
    seconds: float


class Trainer:
    """The state of one training run: store, model, loss, optimiser, scheduler, batches; epochs and checkpoints."""

    def __init__(
        self, store_path: Path, run: Path, config: TrainConfig, world: Distributed, device: torch.device
    ) -> None:
        self.run, self.config, self.world, self.device = run, config, world, device
        self.store = FeatureStore(store_path)
        self.singers, singer_tracks = training_singers(self.store)
        if len(self.singers) < 2:
            raise TrainingError(f"{store_path}: needs at least 2 singers with train tracks, has {len(self.singers)}")
        if min(config.batch.singers, len(self.singers)) % world.world_size:
            raise TrainingError(
                f"batch.singers ({min(config.batch.singers, len(self.singers))}, capped at the store's singers) "
                f"must be divisible by the {world.world_size} processes"
            )
        # train tracks are learned from and val tracks choose the best checkpoint: neither may be a test track later
        self.trained_tracks = track_digests(sorted(t.track_id for t in self.store.tracks if t.split in TRAINING_SPLITS))
        loop = config.train
        torch.manual_seed(loop.seed)
        self.model = build_model(config, self.store.features.n_mels)
        if loop.init:
            self.model.load_state_dict(initial_weights(loop.init, config, self.store))
        self.model = self.model.to(device)
        if loop.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(config, len(self.singers)).to(device)
        parameters = list(self.model.parameters()) + list(self.loss_fn.parameters())
        self.optimizer = torch.optim.Adam(parameters, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=config.optim.decay_every, gamma=config.optim.decay
        )
        self.start_epoch, self.step, self.best_eer, self.last_eer = 0, 0, float("inf"), float("nan")
        self.seconds = 0.0  # of training, over every resumed part of the run
        self.out_of_time = False
        self.sampler = SingerBatchSampler(
            singer_tracks,
            [t.frames for t in self.store.tracks],
            config.batch.singers,
            config.batch.segments,
            config.batch.crop_frames,
            loop.seed,
            world.rank,
            world.world_size,
            loop.passes,
        )
        augmenter = None
        if config.augment.active:
            features = self.store.features
            tracks = [t for singer in singer_tracks for t in singer]
            augmenter = Augmenter(config.augment, self.store, tracks, features.hop_length / features.sample_rate)
        self.loader = DataLoader(
            CropDataset(self.store, config.batch.crop_frames, augmenter),
            sampler=self.sampler,
            batch_size=None,
            num_workers=loop.workers,
            persistent_workers=loop.workers > 0,
            pin_memory=device.type == "cuda",
        )
        bf16 = loop.precision == "bf16" or (
            loop.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        self.autocast: Callable[[], AbstractContextManager[Any]] = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
        )
        self.writer = tensorboard_writer(run) if world.main else None

    def resume(self, checkpoint: Checkpoint, source: Path) -> None:
        """Continues from a checkpoint of this run exactly; CheckpointError when it was made with another model,
        loss, log-mel or set of training singers (resuming it would train something else)."""
        differs = [
            name
            for name, same in (
                ("model", checkpoint.config.model == self.config.model),
                ("loss", checkpoint.config.loss == self.config.loss),
                ("log-mel features", checkpoint.features == self.store.features),
                ("training singers", checkpoint.singers == self.singers),
            )
            if not same
        ]
        if differs:
            raise CheckpointError(
                f"{source}: made with another {', '.join(differs)} than this config and store; resume with the "
                "run's own config.yaml and store, or train into a new folder"
            )
        self.model.load_state_dict(checkpoint.model)
        self.loss_fn.load_state_dict(checkpoint.loss)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(checkpoint.scheduler)
        self.start_epoch, self.step, self.best_eer = checkpoint.epoch, checkpoint.step, checkpoint.best_eer
        self.seconds = checkpoint.seconds
        set_rng_states(checkpoint.rng)

    def distribute(self) -> None:
        """Wraps the model for DistributedDataParallel when there are several processes."""
        if self.world.world_size == 1:
            return
        check_same_start(self.start_epoch, self.device)
        if self.config.train.sync_batchnorm and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = DistributedDataParallel(self.model, device_ids=device_ids)

    @property
    def core(self) -> nn.Module:
        """The network itself, without the DistributedDataParallel wrapper."""
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def run_epoch(self, epoch: int, progress: bool) -> EpochStats:
        """One pass of the sampler: forward, gather, loss, step."""
        n, m = self.sampler.singers, self.config.batch.segments
        forward = torch.compile(self.model) if self.config.train.compile else self.model
        self.sampler.set_epoch(epoch)
        self.model.train()
        started, budget = clock(), self.config.train.minutes * 60
        totals, steps = np.zeros(2), 0
        bar = progress_bar(
            self.loader,
            desc=f"epoch {epoch + 1}/{self.config.train.epochs}",
            unit="batch",
            leave=False,
            disable=not (progress and self.world.main),
        )
        for features, labels in bar:
            if self.config.optim.schedule == "cosine":
                self.set_learning_rate(clock() - started)
            features = features.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with self.autocast():
                local = forward(features)
            embeddings = gather_embeddings(local.float(), self.world).view(n, m, -1)
            out = self.loss_fn(embeddings, gather_labels(labels, self.world).view(n, m)[:, 0])
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            self.step += 1
            steps += 1
            totals += (out.loss.item(), out.accuracy.item())
            elapsed = clock() - started
            bar.set_postfix(
                loss=f"{out.loss.item():.3f}",
                acc=f"{out.accuracy.item():.2f}",
                seg_s=f"{(bar.n + 1) * n * m / max(elapsed, 1e-9):.0f}",
                refresh=False,  # the bar redraws at its own pace (in a log: once a minute)
            )
            if budget and any_process(self.seconds + elapsed >= budget, self.world, self.device):
                self.out_of_time = True
                break
        bar.close()
        if self.config.optim.schedule == "step":
            self.scheduler.step()
        seconds = clock() - started
        self.seconds += seconds
        if budget and not self.out_of_time:  # the epoch's last moments spent it: this epoch is the last, validated
            self.out_of_time = any_process(self.seconds >= budget, self.world, self.device)
        loss, accuracy = totals / max(steps, 1)
        return EpochStats(loss, accuracy, steps * n * m / max(seconds, 1e-9), seconds)

    def set_learning_rate(self, epoch_seconds: float) -> None:
        """The cosine schedule: linear warm-up, then a cosine to zero, over the epochs or the time budget (of which
        the finished epochs and `epoch_seconds` of this one are spent)."""
        optim, loop = self.config.optim, self.config.train
        if loop.minutes:
            progress = (self.seconds + epoch_seconds) / (loop.minutes * 60)
        else:
            progress = self.step / max(loop.epochs * len(self.sampler), 1)
        for group in self.optimizer.param_groups:
            group["lr"] = optim.lr * cosine_factor(progress, optim.warmup)

    def checkpoint(self, epoch: int, val_eer: float) -> Checkpoint:
        """The run's state after `epoch` epochs."""
        return Checkpoint(
            config=self.config,
            features=self.store.features,
            frontend=self.store.header.frontend,
            singers=self.singers,
            model=self.core.state_dict(),
            trained_tracks=self.trained_tracks,
            loss=self.loss_fn.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            epoch=epoch,
            step=self.step,
            seconds=self.seconds,
            best_eer=self.best_eer,
            val_eer=val_eer,
            rng=rng_states(),
        )

    def end_epoch(self, epoch: int, stats: EpochStats, progress: bool) -> None:
        """Validates when due, writes the checkpoints and the log (main process only)."""
        loop = self.config.train
        last = epoch + 1 == loop.epochs or self.out_of_time
        validate_now = loop.validate_every > 0 and ((epoch + 1) % loop.validate_every == 0 or last)
        val_eer = val_top1 = float("nan")
        if validate_now:
            val_eer, val_top1 = validate(self.core, self.store, self.singers, self.config, self.device)
            self.last_eer = val_eer
        improved = validate_now and val_eer < self.best_eer
        self.best_eer = min(self.best_eer, val_eer) if validate_now else self.best_eer
        checkpoint = self.checkpoint(epoch + 1, val_eer)
        if improved or not np.isfinite(self.best_eer):  # until a validation gives a number, best follows last
            checkpoint.save(self.run / "best.pt")
        checkpoint.save(self.run / "last.pt")  # after best.pt: a kill between them loses no best model
        values = (epoch + 1, self.step, stats.loss, stats.accuracy, self.optimizer.param_groups[0]["lr"])
        values += (stats.segments_per_second, val_eer, val_top1, stats.seconds)
        row = dict(zip(LOG_COLUMNS, values))
        append_log(self.run / "log.csv", row)
        if self.writer is not None:
            for key in ("loss", "accuracy", "lr", "segments_per_second", "val_eer", "val_top1"):
                if not np.isnan(row[key]):
                    self.writer.add_scalar(key if key.startswith("val") else f"train/{key}", row[key], epoch + 1)
        if progress:
            val = f", val EER {100 * val_eer:.2f} %, top-1 {100 * val_top1:.1f} %" if validate_now else ""
            print(
                f"epoch {epoch + 1}/{loop.epochs}: loss {stats.loss:.4f}, batch accuracy {stats.accuracy:.3f}, "
                f"{stats.segments_per_second:.0f} segments/s{val}",
                flush=True,
            )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(
    store_path: str | Path, run: str | Path, config: TrainConfig, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Trains on the store's train split; validates on its val split; writes the run folder."""
    world, device = setup_distributed()
    run = Path(run)
    if not resume and (run / "last.pt").exists():
        raise CheckpointError(f"{run}: holds a trained run already; pass --resume to continue it, or use a new folder")
    trainer = Trainer(Path(store_path), run, config, world, device)
    if resume and (run / "last.pt").exists():
        trainer.resume(load_checkpoint(run / "last.pt"), run / "last.pt")
    trainer.distribute()
    if world.main:
        run.mkdir(parents=True, exist_ok=True)
        write_atomically(run / "config.yaml", dump_config(config))
        if trainer.sampler.singers < config.batch.singers:
            print(
                f"train: batch.singers {config.batch.singers} > {trainer.sampler.singers} training singers; "
                f"batches hold {trainer.sampler.singers}",
                file=sys.stderr,
            )
    stats = EpochStats(float("nan"), float("nan"), 0.0, 0.0)
    epochs = trainer.start_epoch
    budget = config.train.minutes * 60
    for epoch in range(trainer.start_epoch, config.train.epochs):
        if budget and trainer.seconds >= budget:
            break  # a resumed run whose budget is spent
        stats = trainer.run_epoch(epoch, progress)
        epochs = epoch + 1
        if world.main:
            trainer.end_epoch(epoch, stats, progress)
        barrier(world)
        if trainer.out_of_time:
            break
    trainer.close()
    finish(world)
    return TrainResult(run, epochs, trainer.best_eer, trainer.last_eer, stats.segments_per_second, world.main)


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
