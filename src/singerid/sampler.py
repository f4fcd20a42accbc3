"""Batches of N singers x M segments: every segment a random crop, from different tracks of the singer where
possible; an epoch shows every training singer; seeded by (seed, epoch); split across ranks so that no singer
appears twice in one global batch. Each crop carries a seed of its own for its augmentations (singerid.augment),
from a stream apart from the crops' (so the crops are the same with augmentation on or off)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from singerid.augment import Augmenter
from singerid.store import FeatureStore


@dataclass(frozen=True)
class Crop:
    label: int  # index of the singer among the training singers
    track: int  # index of the track in the store
    start: int  # first frame
    seed: int = 0  # seeds its augmentations


class SingerBatchSampler:
    """Yields, for this rank, the crops of its share of each global batch: (N / world_size) singers x M."""

    def __init__(
        self,
        singer_tracks: Sequence[Sequence[int]],
        track_frames: Sequence[int],
        singers: int,
        segments: int,
        crop_frames: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        passes: int = 1,
    ) -> None:
        if len(singer_tracks) < 2:
            raise ValueError("training needs at least 2 singers with tracks")
        self.singer_tracks = [list(t) for t in singer_tracks]
        self.track_frames = list(track_frames)
        self.singers = min(singers, len(singer_tracks))
        if self.singers % world_size:
            raise ValueError(f"batch.singers ({self.singers}) must be divisible by the {world_size} processes")
        self.segments = segments
        self.crop_frames = crop_frames
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.passes = passes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.singer_tracks) * self.passes // self.singers)

    def global_batches(self) -> list[np.ndarray]:
        """The singers of every global batch of this epoch: each singer at least `passes` times, none twice in one."""
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        count = len(self.singer_tracks)
        order = np.concatenate([rng.permutation(count) for _ in range(self.passes)])
        batches = []
        for start in range(0, len(order), self.singers):
            batch = list(dict.fromkeys(order[start : start + self.singers].tolist()))
            if len(batch) < self.singers:  # the last batch, or repeats across passes: fill with other singers
                others = np.setdiff1d(np.arange(count), batch)
                batch += rng.choice(others, self.singers - len(batch), replace=False).tolist()
            batches.append(np.array(batch))
        return batches

    def __iter__(self) -> Iterator[list[Crop]]:
        share = self.singers // self.world_size
        for step, batch in enumerate(self.global_batches()):
            rng = np.random.default_rng([self.seed, self.epoch, 2, step])
            seeds = np.random.default_rng([self.seed, self.epoch, 3, step]).integers(
                2**63, size=(len(batch), self.segments)
            )
            # drawn for all ranks: same RNG streams
            crops = [self._crops(int(singer), rng, singer_seeds) for singer, singer_seeds in zip(batch, seeds)]
            mine = crops[self.rank * share : (self.rank + 1) * share]
            yield [crop for singer_crops in mine for crop in singer_crops]

    def _crops(self, singer: int, rng: np.random.Generator, seeds: np.ndarray) -> list[Crop]:
        tracks = self.singer_tracks[singer]
        if len(tracks) >= self.segments:
            chosen = rng.choice(tracks, self.segments, replace=False)
        else:  # every track once, then repeats
            chosen = np.concatenate([rng.permutation(tracks), rng.choice(tracks, self.segments - len(tracks))])
        crops = []
        for track, seed in zip(chosen, seeds):
            spare = self.track_frames[track] - self.crop_frames
            crops.append(Crop(singer, int(track), int(rng.integers(0, spare + 1)) if spare > 0 else 0, int(seed)))
        return crops


class CropDataset(Dataset):
    """Reads a batch of crops from the store, augmented when given an Augmenter: (crops, frames, n_mels) float32
    and singer labels."""

    def __init__(self, store: FeatureStore, crop_frames: int, augment: Augmenter | None = None) -> None:
        self.store = store
        self.crop_frames = crop_frames
        self.augment = augment

    def __getitem__(self, crops: list[Crop]) -> tuple[torch.Tensor, torch.Tensor]:
        features = np.stack([self._crop(c) for c in crops])
        labels = torch.tensor([c.label for c in crops], dtype=torch.long)
        return torch.from_numpy(features), labels

    def _crop(self, crop: Crop) -> np.ndarray:
        frames = self.store.crop(crop.track, crop.start, self.crop_frames)
        return frames if self.augment is None else self.augment(frames, crop.track, crop.seed)
