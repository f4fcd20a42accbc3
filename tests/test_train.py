"""Training: every shipped config trains from a prepared store; resume is exact; validation falls."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from singerid.checkpoint import CheckpointError, build_model, load_checkpoint
from singerid.cli import main
from singerid.config import load_config
from singerid.metrics import equal_error_rate
from singerid.train import prototype_scores, train

CONFIGS = sorted(Path(__file__).parents[1].joinpath("configs").rglob("*.yaml"))
TINY = ["model.channels=[4,8,16,32]", "model.blocks=[1,1,1,1]", "model.embedding_dim=32", "train.workers=0"]


def read_log(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_trains_two_steps(path: Path, quick_store: Path, tmp_path: Path) -> None:
    overrides = ["train.epochs=1", "train.passes=2", "batch.singers=4", "train.workers=0", "train.validate_every=1"]
    config = load_config(path, overrides)
    result = train(quick_store, tmp_path / "run", config, progress=False)
    assert {"config.yaml", "last.pt", "best.pt", "log.csv"} <= {p.name for p in (tmp_path / "run").iterdir()}
    (row,) = read_log(tmp_path / "run")
    assert int(row["step"]) == 2 and np.isfinite(float(row["loss"])) and 0 <= float(row["val_eer"]) <= 1
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state.epoch == 1 and state.config == config and result.epochs == 1
    fresh = build_model(config, 64)
    trained = {k: v for k, v in state.model.items() if v.is_floating_point()}
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in trained.items())


def test_validation_eer_falls(quick_store: Path, tmp_path: Path) -> None:
    config = load_config(
        None,
        TINY
        + ["train.epochs=8", "train.passes=8", "batch.singers=4", "batch.crop_frames=100", "train.validate_every=4"],
    )
    train(quick_store, tmp_path / "run", config, progress=False)
    rows = read_log(tmp_path / "run")
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0]
    first = load_checkpoint(tmp_path / "run" / "best.pt")
    assert first.best_eer <= float(rows[3]["val_eer"])


def test_resume_continues_exactly(quick_store: Path, tmp_path: Path) -> None:
    unvalidated = ["batch.singers=4", "loss.name=triplet", "train.validate_every=0"]
    config = load_config(None, TINY + ["train.epochs=2", *unvalidated])
    train(quick_store, tmp_path / "straight", config, progress=False)
    half = load_config(None, TINY + ["train.epochs=1", *unvalidated])
    train(quick_store, tmp_path / "resumed", half, progress=False)
    train(quick_store, tmp_path / "resumed", config, resume=True, progress=False)
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a.step == b.step == 2
    for key, value in a.model.items():
        assert torch.equal(value, b.model[key]), key
    assert len(read_log(tmp_path / "resumed")) == 2
    with pytest.raises(CheckpointError, match="--resume"):  # finished work is never overwritten by accident
        train(quick_store, tmp_path / "resumed", config, progress=False)
    # without validation, best.pt follows last.pt instead of freezing at the first epoch
    assert load_checkpoint(tmp_path / "resumed" / "best.pt").epoch == 2
    wider = load_config(None, [*TINY, "model.embedding_dim=16", "train.epochs=3", *unvalidated])
    with pytest.raises(CheckpointError, match="made with another model"):
        train(quick_store, tmp_path / "resumed", wider, resume=True, progress=False)
    # the command line resumes with the run's own config.yaml unless told otherwise
    run = str(tmp_path / "resumed")
    assert main(["train", str(quick_store), run, "--resume", "--set", "train.epochs=3", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "resumed" / "last.pt").epoch == 3


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["triplet", "ge2e", "proto", "angleproto", "aamsoftmax", "angleproto_aam"])
def test_validation_eer_falls_for_every_loss(loss: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A short CPU run on a synthetic corpus of 12 training singers: the validation EER after training is below
    the EER after the first epochs (`make slow`). The val split is small (one or two tracks per singer), so the
    EER is noisy: the means of the first two and of the last three validations are compared."""
    from singerid.prepare import prepare
    from singerid.synth import SynthConfig, synthesize

    root = tmp_path_factory.getbasetemp() / "eer-corpus"
    if not (root / "store" / "index.json").exists():
        synthesize(
            SynthConfig(singers=14, tracks=6, test_singers=1, test_tracks=7, seconds=20),
            root / "catalog",
            workers=2,
            progress=False,
        )
        prepare(root / "catalog", root / "store", workers=2, progress=False)
    segments = {"aamsoftmax": "1", "triplet": "3"}.get(loss, "2")  # triplet learns slowly from M = 2 on a CPU
    config = load_config(
        None,
        [
            "model.channels=[8,16,32,64]",
            "model.blocks=[1,1,1,1]",
            "model.embedding_dim=64",
            "train.workers=0",
            "batch.singers=12",
            f"batch.segments={segments}",
            "batch.crop_frames=200",
            "train.epochs=60",
            "train.passes=4",
            "train.validate_every=5",
            "optim.lr=0.003",
            f"loss.name={loss}",
        ],
    )
    run = tmp_path_factory.mktemp(loss)
    train(root / "store", run, config, progress=False)
    eers = [float(r["val_eer"]) for r in read_log(run) if r["val_eer"] != "nan"]
    first, last = np.mean(eers[:2]), np.mean(eers[-3:])
    print(f"{loss}: validation EER {100 * first:.1f} % (first two) -> {100 * last:.1f} % (last three)")
    assert last < first - 0.02


def test_a_time_budget_stops_on_time_and_spans_the_cosine_schedule(
    quick_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under train.minutes the run stops once the budget is spent and the cosine spans the budget, inside epochs
    too. The loop's clock is replaced by one that advances 0.25 s per reading (two readings a step), so the test
    means the same on an idle and on a loaded machine."""
    import singerid.train as train_module

    readings = iter(range(10**9))
    monkeypatch.setattr(train_module, "clock", lambda: 0.25 * next(readings))
    overrides = TINY + ["batch.singers=4", "train.epochs=100000", "train.minutes=0.1", "train.validate_every=100000"]
    config = load_config(None, [*overrides, "optim.schedule=cosine", "optim.warmup=0.2"])
    result = train(quick_store, tmp_path / "run", config, progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert 6 <= checkpoint.seconds < 7 and checkpoint.epoch == result.epochs >= 2  # 6 s: 0.1 minutes
    rates = [float(r["lr"]) for r in read_log(tmp_path / "run")]
    assert len(rates) == result.epochs and max(rates) <= config.optim.lr
    # the last step starts within 0.5 s of the end, where the cosine is near zero (a per-epoch schedule stays high)
    assert rates[-1] < 0.05 * config.optim.lr
    assert 0 <= checkpoint.val_eer <= 1  # the run's end is validated, whatever validate_every says
    again = train(quick_store, tmp_path / "run", config, resume=True, progress=False)  # the budget is spent
    assert again.epochs == result.epochs and load_checkpoint(tmp_path / "run" / "last.pt").step == checkpoint.step


def test_the_cosine_schedule_warms_up_then_anneals_to_zero() -> None:
    from singerid.train import cosine_factor

    assert cosine_factor(0.0, 0.2) < 0.01 and cosine_factor(0.1, 0.2) == pytest.approx(0.505)
    assert cosine_factor(0.2, 0.2) == pytest.approx(1.0) and cosine_factor(0.6, 0.2) == pytest.approx(0.5)
    assert cosine_factor(1.0, 0.2) == pytest.approx(0.0, abs=1e-12) and cosine_factor(3.0, 0.2) == 0.0
    later = [cosine_factor(p / 100, 0.2) for p in range(20, 101)]
    assert all(a >= b for a, b in zip(later, later[1:]))  # never rises after the warm-up


def test_validation_scores_many_singers_in_bounded_blocks() -> None:
    """At thousands of singers validation samples impostors instead of sorting a full score matrix: its top-1 is exact
    and its EER lands within a point of the exact EER of the same scores."""
    generator = torch.Generator().manual_seed(1)
    singers, queries_per_singer = 600, 8
    centres = torch.nn.functional.normalize(torch.randn(singers, 32, generator=generator), dim=1)
    labels = torch.arange(singers).repeat_interleave(queries_per_singer)
    queries = torch.nn.functional.normalize(centres[labels] + 0.3 * torch.randn(len(labels), 32, generator=generator))
    eer, top1 = prototype_scores(queries, labels, centres, impostors=100)
    scores = queries @ centres.T
    target = torch.zeros_like(scores, dtype=torch.bool)
    target[torch.arange(len(labels)), labels] = True
    exact_eer = equal_error_rate(scores.flatten().numpy(), target.flatten().numpy())
    assert top1 == pytest.approx(float((scores.argmax(1) == labels).float().mean()))
    assert 0.01 < exact_eer < 0.4  # the case is neither trivial nor hopeless
    assert eer == pytest.approx(exact_eer, abs=0.01)
    # few singers: every impostor is scored, so the EER is the exact one
    few = labels < 20
    small_eer, _ = prototype_scores(queries[few], labels[few], centres[:20], impostors=100)
    small = scores[few][:, :20]
    assert small_eer == pytest.approx(equal_error_rate(small.flatten().numpy(), target[few][:, :20].flatten().numpy()))
