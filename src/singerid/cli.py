"""The `singerid` command line: parse, call one stage, print a one-line summary of what was written."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from singerid import __version__
from singerid.errors import SingerIdError

Handler = Callable[[argparse.Namespace], int]

if TYPE_CHECKING:
    import numpy as np

    from singerid.encoder import SingerEncoder
    from singerid.synth import SynthConfig


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except where there is none to show (None, empty, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == "" or action.help is None:
            return action.help
        return super()._get_help_string(action)


def _workers_default() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def add_synth(sub: argparse._SubParsersAction) -> None:
    from singerid.synth import PRESETS, SynthConfig

    d = SynthConfig()
    p = sub.add_parser(
        "synth",
        help="write a procedural singing catalog (audio, LRC lyrics, metadata.csv)",
        description="Writes a procedural singing catalog: audio files, one LRC per track and metadata.csv with the "
        "paper's splits (seen singers: train/val 8:2 plus test tracks; unseen singers: test tracks only).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("out", type=Path, help="catalog folder to write (finished tracks are kept on a rerun)")
    options: list[tuple[str, dict[str, Any], str]] = [  # defaults SUPPRESSed: an option given wins over a preset
        ("--singers", {"type": at_least(2)}, "number of singers, seen and unseen"),
        ("--tracks", {"type": at_least(1)}, "tracks per seen singer, split 8:2 train/val"),
        ("--test-tracks", {"type": at_least(1)}, "test tracks per test singer"),
        ("--test-singers", {"type": int}, "seen singers with test tracks, and as many unseen (0: singers // 6, >= 2)"),
        ("--seconds", {"type": float}, "length of each track"),
        ("--seed", {"type": int}, "random seed; same seed and version, same bytes"),
        ("--format", {"choices": ("mp3", "flac", "wav")}, "audio format"),
        ("--sample-rate", {"type": int}, "sample rate of the files"),
        ("--channels", {"type": int, "choices": (1, 2)}, "1: mono, 2: stereo"),
        ("--difficulty", {"type": float}, "divides the spread of singer voices around the population mean: >1 closer"),
    ]
    for flag, kinds, text in options:
        default = getattr(d, flag[2:].replace("-", "_"))
        p.add_argument(flag, **kinds, default=argparse.SUPPRESS, help=f"{text} (default: {default})")
    p.add_argument(
        "--stems", action="store_true", default=argparse.SUPPRESS, help="also write each track's vocal stem (FLAC)"
    )
    p.add_argument("--workers", type=at_least(1), default=_workers_default(), help="parallel processes")
    p.add_argument("--quick", action="store_true", help="a tiny catalog for tests: 6 singers, 5 tracks, 6 s")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="paper: the paper's layout, 5,763 singers (5,057 seen, 706 of them and 706 unseen with test tracks), "
        "64,690 tracks of 10 s, 16 kHz mono FLAC; options given explicitly override the preset",
    )
    p.set_defaults(handler=run_synth, resumable=True)


def synth_config(args: argparse.Namespace) -> SynthConfig:
    """Each setting: what the command line says (even the default's value), else the preset's, else the default."""
    from singerid.synth import PRESETS, SynthConfig

    preset = PRESETS["quick" if args.quick else args.preset] if args.quick or args.preset else {}
    defaults = asdict(SynthConfig())
    return SynthConfig(**{name: getattr(args, name, preset.get(name, default)) for name, default in defaults.items()})


def run_synth(args: argparse.Namespace) -> int:
    from singerid.synth import synthesize

    config = synth_config(args)
    start = time.perf_counter()
    metadata = synthesize(config, args.out, workers=args.workers)
    print(f"synth: wrote {metadata} ({metadata_rows(metadata)} tracks) in {time.perf_counter() - start:.1f} s")
    return 0


def metadata_rows(path: Path) -> int:
    with path.open(encoding="utf-8") as f:
        return sum(1 for _ in f) - 1


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum`."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return whole


def share(text: str) -> float:
    """An argparse type: a fraction in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.01, got '{text}'") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 2/8, got '{text}'") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"need 1 <= K <= N, got {k}/{n}")
    return k, n


def add_prepare(sub: argparse._SubParsersAction) -> None:
    from singerid.features import FrontendConfig

    d = FrontendConfig()
    p = sub.add_parser(
        "prepare",
        help="front end: a catalog into a feature store (resumable, parallel, shardable)",
        description="Decodes every track to 16 kHz mono, optionally separates the vocals, finds the vocal regions "
        "(LRC phrases, else a vocal-activity detector), and stores the 64-bin log-mel frames of those regions. "
        "A rerun resumes; tracks that cannot be used go to STORE/rejects.csv with the reason.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("catalog", type=Path, help="metadata.csv, a folder holding one, or a folder tree <singer>/...")
    p.add_argument("store", type=Path, help="feature store folder to write")
    p.add_argument("--separation", default=d.separation, help="vocal separation: none, repet or demucs")
    p.add_argument(
        "--separator-weights",
        type=Path,
        default=None,
        help="local weights file for a neural separator (never downloaded)",
    )
    p.add_argument("--vad", action="store_true", help="find vocal regions with the detector even where LRC exists")
    p.add_argument(
        "--max-phrase-seconds",
        type=float,
        default=d.max_phrase_seconds,
        help="an LRC phrase without an end mark lasts at most this long",
    )
    p.add_argument(
        "--min-voice-seconds",
        type=float,
        default=d.min_voice_seconds,
        help="tracks with less voice are rejected",
    )
    p.add_argument(
        "--max-track-seconds",
        type=float,
        default=d.max_track_seconds,
        help="longer files are cut here, with a warning (a guard against endless streams; memory does not grow)",
    )
    p.add_argument("--workers", type=at_least(1), default=_workers_default(), help="parallel processes")
    p.add_argument(
        "--shard", type=parse_shard, default=None, metavar="K/N", help="prepare only part K of N (default: all)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for splits of a catalog that has none")
    p.add_argument("--retry-rejects", action="store_true", help="try the tracks that an earlier run rejected again")
    p.add_argument(
        "--other-catalog",
        action="store_true",
        help="bring a store made from another catalog up to date with this one (changed tracks are prepared again)",
    )
    p.set_defaults(handler=run_prepare, resumable=True)


def run_prepare(args: argparse.Namespace) -> int:
    from singerid.features import FrontendConfig
    from singerid.prepare import prepare
    from singerid.store import FeatureStore, format_summary

    frontend = FrontendConfig(
        separation=args.separation,
        separator_weights=str(args.separator_weights) if args.separator_weights else None,
        regions="vad" if args.vad else "auto",
        max_phrase_seconds=args.max_phrase_seconds,
        min_voice_seconds=args.min_voice_seconds,
        max_track_seconds=args.max_track_seconds,
    )
    result = prepare(
        args.catalog,
        args.store,
        frontend,
        workers=args.workers,
        shard=args.shard or (1, 1),
        seed=args.seed,
        retry_rejects=args.retry_rejects,
        other_catalog=args.other_catalog,
    )
    print(format_summary(FeatureStore(args.store).summary()))
    updates = [
        f"{count} {what}"
        for count, what in (
            (result.changed, "prepared again (audio or lyrics changed)"),
            (result.relabelled, "relabelled (singer or split changed)"),
            (result.removed, "removed (no longer in the catalog)"),
            (result.retried, "rejected before and tried again"),
        )
        if count
    ]
    print(
        f"prepare: {result.processed} tracks processed, {result.skipped} already done"
        + "".join(f", {update}" for update in updates)
        + f", {len(result.header.rejects)} rejected (see {args.store / 'rejects.csv'}); "
        f"store {args.store} in {result.seconds:.1f} s"
    )
    if not result.header.tracks:
        print(f"prepare: no track could be used; {args.store} holds nothing to train on", file=sys.stderr)
        return 2
    return 0


def add_store(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect or merge feature stores")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="singers, tracks and hours of voice per split, frames and bytes")
    info.add_argument("store", type=Path)
    info.set_defaults(handler=run_store_info)
    merge = actions.add_parser("merge", help="join stores prepared with --shard K/N into one")
    merge.add_argument("out", type=Path, help="merged store folder")
    merge.add_argument("parts", type=Path, nargs="+", help="stores to merge")
    merge.set_defaults(handler=run_store_merge)


def run_store_info(args: argparse.Namespace) -> int:
    from singerid.store import FeatureStore, format_summary

    print(format_summary(FeatureStore(args.store).summary()))
    return 0


def run_store_merge(args: argparse.Namespace) -> int:
    from singerid.store import merge_stores

    header = merge_stores(args.out, args.parts)
    print(f"store merge: {len(header.tracks)} tracks from {len(args.parts)} stores into {args.out}")
    return 0


def add_cohort(p: argparse.ArgumentParser) -> None:
    """--cohort and --top-n of the commands that can normalise their scores (AS-norm)."""
    from singerid.scoring import DEFAULT_TOP_N

    p.add_argument(
        "--cohort",
        type=Path,
        default=None,
        help="npz of cohort embeddings (`singerid embed` of other singers' files, e.g. the training singers'): "
        "scores are AS-norm normalised against it",
    )
    p.add_argument(
        "--top-n", type=at_least(1), default=DEFAULT_TOP_N, help="closest cohort embeddings per side for AS-norm"
    )


def add_device(parser: argparse.ArgumentParser, workers: bool = False) -> None:
    """--device (and --workers for the front end of many files) of the commands that run the network."""
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one, else cpu), cpu, cuda:N")
    if workers:
        parser.add_argument(
            "--workers", type=at_least(1), default=_workers_default(), help="processes decoding and preparing files"
        )


def add_overrides(parser: argparse.ArgumentParser, what: str) -> None:
    """The --set option: config keys overridden with YAML values (strict: unknown keys are errors)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help=f"{what}, e.g. --set batch.singers=100 loss.margin=0.2 train.epochs=50",
    )


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a singer-embedding model on a feature store",
        description="Trains the Thin ResNet34 + SAP on the store's train split with a metric loss and validates on "
        "its val split. Several GPUs or nodes: torchrun --nproc-per-node G -m singerid train STORE RUN ...",
        formatter_class=HelpFormatter,
    )
    p.add_argument("store", type=Path, help="feature store made by `singerid prepare`")
    p.add_argument("run", type=Path, help="run folder: config.yaml, last.pt, best.pt, log.csv, tensorboard/")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML config, or a shipped one by name: cpu (a 30-minute budget), demo, paper/apnl-m4, ...",
    )
    add_overrides(p, "override config keys")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt exactly")
    p.add_argument(
        "--init",
        default=None,
        help="fine-tune: start from this checkpoint's weights, or 'base' (the shipped encoder; its model settings "
        "come with it)",
    )
    p.set_defaults(handler=run_train, resumable=True)


def run_train(args: argparse.Namespace) -> int:
    from singerid.config import load_config
    from singerid.train import train

    overrides = list(args.overrides)
    if args.init:  # the starting model's settings replace the config's model section; --set still comes last
        from singerid.checkpoint import load_checkpoint

        model = load_checkpoint(args.init).config.to_dict()["model"]
        overrides = [f"model.{key}={json.dumps(value)}" for key, value in model.items()] + overrides
        overrides.append(f"train.init={json.dumps(str(args.init))}")
    saved = args.run / "config.yaml"
    if args.resume and args.config is None and saved.is_file():  # a resumed run keeps its own settings
        args.config = saved
        print(f"train: resuming with {saved}", file=sys.stderr)
    config = load_config(args.config, overrides)
    if args.config is None:
        print(
            f"train: no --config: the paper's settings (N = {config.batch.singers} singers x M = "
            f"{config.batch.segments}, {config.train.epochs} epochs); configs/ has smaller ones",
            file=sys.stderr,
        )
    if args.resume and not (args.run / "last.pt").exists():
        print(f"train: {args.run} has no last.pt to resume; starting a new run", file=sys.stderr)
    result = train(args.store, args.run, config, resume=args.resume)
    if result.main_process:
        best = f"{100 * result.best_eer:.2f} %" if result.best_eer < float("inf") else "not validated"
        print(
            f"train: {result.epochs} epochs, best val EER {best}, "
            f"{result.segments_per_second:.0f} segments/s; checkpoints in {result.run}"
        )
    return 0


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="the paper's identification and verification protocols on a store's test tracks",
        description="Embeds the store's test tracks with the run's checkpoint (and the untrained network and an "
        "MFCC-statistics baseline), scores seeded, saved trial lists, and writes results.json, Tables II-IV "
        "(markdown, CSV) and plots to RUN/eval-<store>/.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run", type=Path, help="run folder made by `singerid train`")
    p.add_argument("store", type=Path, help="feature store with test_seen / test_unseen tracks")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint to evaluate")
    p.add_argument(
        "--window-frames",
        type=at_least(32),
        default=350,
        help="frames per test window (350: 3.5 s, the paper's segment)",
    )
    p.add_argument("--hop-frames", type=at_least(0), default=0, help="hop between test windows (0: the window length)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines (untrained, MFCC, speech peer)")
    p.add_argument(
        "--queries-per-singer", type=at_least(1), default=20, help="identification trials per singer and length"
    )
    p.add_argument(
        "--trials-per-singer", type=at_least(2), default=120, help="one-on-one verification trials per singer"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the trial lists")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN/eval-<store name>)")
    add_device(p)
    p.set_defaults(handler=run_evaluate, resumable=True)


def run_evaluate(args: argparse.Namespace) -> int:
    from singerid.evaluation import EvaluationOptions, evaluate_run
    from singerid.protocols import ProtocolConfig
    from singerid.report import format_tables

    protocol = ProtocolConfig(
        queries_per_singer=args.queries_per_singer,
        verification_trials_per_singer=args.trials_per_singer,
        seed=args.seed,
    )
    options = EvaluationOptions(
        args.checkpoint, args.window_frames, args.hop_frames, not args.no_baselines, protocol, args.device
    )
    report, results = evaluate_run(args.run, args.store, options, args.out)
    print(format_tables(results))
    print(f"evaluate: report {report}, results {report.parent / 'results.json'}")
    return 0


def add_experiment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="train and evaluate a grid of configs x separation settings, one combined report",
        description="Runs every config (a YAML file, or every YAML in a folder) on every separation setting: "
        "prepares the stores from --catalog (or uses --store), trains each cell, evaluates it beside the baselines "
        "and writes OUT/report.md. A rerun skips finished cells and resumes a half-trained one.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("grid", type=Path, nargs="+", help="config files or folders of them, or shipped names (paper, cpu)")
    p.add_argument("--out", type=Path, required=True, help="experiment folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--catalog", type=Path, help="catalog to prepare one store per separation setting from")
    source.add_argument("--store", type=Path, nargs="+", help="existing feature stores (one per separation)")
    p.add_argument("--separation", default="none", help="comma-separated separation settings, e.g. none,repet")
    add_overrides(p, "overrides applied to every config")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines (untrained, MFCC, speech peer)")
    p.add_argument("--workers", type=at_least(1), default=_workers_default(), help="parallel processes for prepare")
    p.set_defaults(handler=run_experiment_command, resumable=True)


def run_experiment_command(args: argparse.Namespace) -> int:
    from singerid.config import SHIPPED, ConfigError, find_config
    from singerid.evaluation import EvaluationOptions
    from singerid.experiment import prepare_stores, run_experiment
    from singerid.report import format_tables
    from singerid.results import load_results
    from singerid.store import read_header

    folders = [g if g.is_dir() or not (SHIPPED / g).is_dir() else SHIPPED / g for g in args.grid]  # `paper`: shipped
    configs = sorted(p for g in folders for p in (sorted(g.glob("*.yaml")) if g.is_dir() else [find_config(g)]))
    if not configs:
        raise ConfigError(f"no YAML configs in {', '.join(map(str, args.grid))}")
    if args.catalog:
        stores = prepare_stores(args.catalog, args.out, args.separation.split(","), args.workers)
    else:
        stores = {read_header(s).frontend.separation: s for s in args.store}
    report = run_experiment(
        configs, args.out, stores, overrides=args.overrides, options=EvaluationOptions(baselines=not args.no_baselines)
    )
    print(format_tables(load_results(report.parent / "results.json")))
    print(f"experiment: {len(configs)} configs x {len(stores)} stores; report {report}")
    return 0


def add_library_commands(sub: argparse._SubParsersAction) -> None:
    fmt = HelpFormatter
    p = sub.add_parser(
        "embed", help="embeddings of audio files (one per file, unit norm) to an .npz", formatter_class=fmt
    )
    p.add_argument("checkpoint", type=Path, help="RUN/best.pt")
    p.add_argument("files", type=Path, nargs="+", help="audio files (a same-named .lrc beside a file gives its lyrics)")
    p.add_argument("--out", type=Path, default=Path("embeddings.npz"), help="npz: one array per file, keyed by path")
    add_device(p, workers=True)
    p.set_defaults(handler=run_embed)

    p = sub.add_parser(
        "export", help="the network as a torch.export program (.pt2) or an ONNX model", formatter_class=fmt
    )
    p.add_argument("checkpoint", type=Path, help="RUN/best.pt")
    p.add_argument("out", type=Path, help="output file (.pt2 or .onnx)")
    p.add_argument(
        "--format", choices=("pt2", "onnx"), default=None, help="default: from the output's suffix (.onnx: onnx)"
    )
    p.set_defaults(handler=run_export)

    p = sub.add_parser(
        "score-trials", help="score a verification trial list (label path1 path2 per line): EER", formatter_class=fmt
    )
    p.add_argument("checkpoint", type=Path, help="RUN/best.pt")
    p.add_argument(
        "trials",
        type=Path,
        help="text file: 'label path1 path2' per line (label 1 target, 0 not); paths with spaces: tab-separated "
        "fields or quoted paths",
    )
    p.add_argument("--root", type=Path, default=None, help="folder the paths are relative to (default: the list's)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write 'score label path1 path2' per line here (tabs; AS-norm scores with --cohort)",
    )
    add_cohort(p)
    add_device(p, workers=True)
    p.set_defaults(handler=run_score_trials)

    p = sub.add_parser(
        "enroll", help="enroll singers of a catalog or store into a library (vector index)", formatter_class=fmt
    )
    p.add_argument("library", type=Path, help="library folder (created or extended)")
    p.add_argument("--checkpoint", type=Path, required=True, help="RUN/best.pt: the model that embeds")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", type=Path, help="feature store: enroll from its stored frames (fast)")
    source.add_argument("--catalog", type=Path, help="catalog: enroll from its audio files")
    p.add_argument("--splits", default="", help="only tracks of these splits, comma-separated; empty: all")
    p.add_argument(
        "--prototypes", type=at_least(1), default=1, help="prototypes per singer (k-means; 1 = the centroid)"
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace what an enrolled singer had by these tracks (default: add them to it)",
    )
    p.add_argument(
        "--shard",
        type=parse_shard,
        default=None,
        metavar="K/N",
        help="enroll only part K of N of the singers (one library per machine; join them with `library merge`)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="open-set threshold (cosine): identify answers 'unknown singer' below it, verify accepts at it; "
        "default: calibrated on the enrolled tracks at --false-accepts",
    )
    p.add_argument(
        "--false-accepts",
        type=share,
        default=None,
        help="for the calibrated threshold: the share of files by an unknown singer that may still match someone "
        "(e.g. 0.01 for a strict service); default: the equal error rate",
    )
    p.add_argument(
        "--recalibrate",
        action="store_true",
        help="calibrate the threshold again when adding to a library that has one (default: keep it)",
    )
    add_device(p, workers=True)
    p.set_defaults(handler=run_enroll)

    library_help = "library folder made by `singerid enroll`"
    p = sub.add_parser("identify", help="who sings these files: the closest singers of a library", formatter_class=fmt)
    p.add_argument("library", type=Path, help=library_help)
    p.add_argument("files", type=Path, nargs="+", help="audio files (a same-named .lrc beside a file gives its lyrics)")
    p.add_argument("--top-k", type=at_least(1), default=5, help="how many candidate singers to list per file")
    add_cohort(p)
    add_device(p, workers=True)
    p.set_defaults(handler=run_identify)

    p = sub.add_parser(
        "verify", help="is this the claimed singer (exit status 0: accepted, 1: rejected)", formatter_class=fmt
    )
    p.add_argument("library", type=Path, help=library_help)
    p.add_argument("file", type=Path, help="audio file to verify")
    p.add_argument("--singer", required=True, help="the claimed singer id, as enrolled")
    p.add_argument("--threshold", type=float, default=None, help="accept at or above (default: the library's)")
    add_cohort(p)
    add_device(p)
    p.set_defaults(handler=run_verify)

    p = sub.add_parser("library", help="join libraries enrolled with --shard K/N", formatter_class=fmt)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    merge = actions.add_parser("merge", help="one library of the singers of several (same model, disjoint singers)")
    merge.add_argument("out", type=Path, help="merged library folder (new)")
    merge.add_argument("parts", type=Path, nargs="+", help="libraries to merge")
    merge.add_argument("--threshold", type=float, default=None, help="open-set threshold (default: the parts' mean)")
    merge.set_defaults(handler=run_library_merge)

    p = sub.add_parser("similar", help="singers whose voices are closest to a singer's", formatter_class=fmt)
    p.add_argument("library", type=Path, help=library_help)
    p.add_argument("singer", help="an enrolled singer id")
    p.add_argument("--top-k", type=at_least(1), default=5, help="how many singers to list")
    p.set_defaults(handler=run_similar)

    p = sub.add_parser(
        "serve", help="HTTP service over a library (identify, verify, similar, enroll)", formatter_class=fmt
    )
    p.add_argument("library", type=Path, help=f"{library_help}; saved with what /enroll adds when the service stops")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback unless a proxy guards it)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument(
        "--token",
        default=os.environ.get("SINGERID_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on every request but /health (default: $SINGERID_TOKEN)",
    )
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload accepted (413 above)")
    p.add_argument("--max-decodes", type=at_least(1), default=2, help="uploads decoded and embedded at the same time")
    add_device(p)
    p.set_defaults(handler=run_serve, stops_on_sigterm=True)


def embed_files(
    encoder: SingerEncoder, paths: Sequence[Path], command: str, workers: int = 1
) -> dict[Path, np.ndarray]:
    """Segment embeddings (n, D) of the files that can be used; each one that cannot is named on stderr."""
    from singerid.audio import AudioError

    embeddings = {}
    for path, outcome in encoder.embed_files(paths, workers=workers, progress=len(paths) > 1):
        if isinstance(outcome, AudioError):
            print(f"{command}: skipped {outcome}", file=sys.stderr)
        else:
            embeddings[path] = outcome
    return embeddings


def batch_status(done: int, asked: int) -> int:
    """Exit status of a batch command: 0 when every input was used, 1 when some were skipped, 2 when none."""
    return 0 if done == asked else 1 if done else 2


def run_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from singerid.encoder import SingerEncoder, mean_embedding
    from singerid.fileio import atomic_path

    encoder = SingerEncoder.load(args.checkpoint, args.device)
    files = list(dict.fromkeys(args.files))  # a file named twice is embedded once
    embeddings = embed_files(encoder, files, "embed", args.workers)
    skipped = len(files) - len(embeddings)
    if not embeddings:  # an existing --out is left as it was
        print(f"embed: no file could be embedded; {args.out} not written", file=sys.stderr)
        return 2
    with atomic_path(args.out) as temporary, temporary.open("wb") as f:  # a handle: savez adds no .npz to it
        np.savez(f, **{str(path): mean_embedding(segments) for path, segments in embeddings.items()})
    print(
        f"embed: {len(embeddings)} embeddings of {encoder.embedding_dim} dimensions written to {args.out}"
        + (f"; {skipped} files skipped" if skipped else "")
    )
    return batch_status(len(embeddings), len(files))


def run_export(args: argparse.Namespace) -> int:
    from singerid.encoder import SingerEncoder, export_model

    kind = args.format or ("onnx" if args.out.suffix.lower() == ".onnx" else "pt2")
    path = export_model(SingerEncoder.load(args.checkpoint, "cpu"), args.out, kind)
    what = "ONNX model" if kind == "onnx" else "torch.export program"
    print(f"export: {path} ({what}: (batch, frames, n_mels) log-mel -> (batch, D) raw embeddings)")
    return 0


def run_score_trials(args: argparse.Namespace) -> int:
    import numpy as np

    from singerid.encoder import SingerEncoder, mean_embedding
    from singerid.fileio import write_atomically
    from singerid.metrics import verification_result
    from singerid.protocols import read_trial_list

    root = args.root or args.trials.parent
    trials = read_trial_list(args.trials)
    encoder = SingerEncoder.load(args.checkpoint, args.device)
    paths = sorted({p for _, a, b in trials for p in (a, b)})
    embedded = embed_files(encoder, [root / p for p in paths], "score-trials", args.workers)
    cache = {p: mean_embedding(embedded[root / p]) for p in paths if root / p in embedded}
    usable = [(label, a, b) for label, a, b in trials if a in cache and b in cache]
    if len(usable) < len(trials):
        print(f"score-trials: {len(trials) - len(usable)} trials left out (a file could not be used)", file=sys.stderr)
    asked, trials = len(trials), usable
    if not trials:
        print(f"score-trials: no trial of {args.trials} could be scored", file=sys.stderr)
        return 2
    scores = np.array([float(cache[a] @ cache[b]) for _, a, b in trials])
    labels = np.array([label for label, _, _ in trials])
    raw_eer = None
    if args.cohort:
        from singerid.scoring import as_norm, cohort_statistics, load_cohort

        cohort = load_cohort(args.cohort, encoder.embedding_dim)
        names = list(cache)
        means, deviations = cohort_statistics(np.stack([cache[p] for p in names]), cohort, args.top_n)
        stats = {p: (means[i], deviations[i]) for i, p in enumerate(names)}
        if len(set(labels.tolist())) == 2:
            raw_eer = verification_result(scores, labels).eer
        scores = np.array([as_norm(s, stats[a], stats[b]) for s, (_, a, b) in zip(scores, trials)])
    if args.out:  # tab-separated, so paths with spaces read back
        lines = "".join(f"{s:.6f}\t{l}\t{a}\t{b}\n" for s, (l, a, b) in zip(scores, trials))
        write_atomically(args.out, lines)
    if len(set(labels.tolist())) < 2:
        kind = "target" if labels[0] else "non-target"
        print(f"score-trials: {len(trials)} trials, all {kind}: an EER needs both kinds", file=sys.stderr)
        return batch_status(len(trials), asked)
    result = verification_result(scores, labels)
    normalised = ""
    if raw_eer is not None:
        normalised = f" with AS-norm (top {args.top_n} of {args.cohort}; raw EER {100 * raw_eer:.2f} %)"
    print(
        f"score-trials: {result.trials} trials ({result.targets} target): EER {100 * result.eer:.2f} %, "
        f"minDCF(0.01) {result.min_dcf_01:.3f}, minDCF(0.05) {result.min_dcf_05:.3f}{normalised}"
    )
    return batch_status(len(trials), asked)


def open_library(path: Path, device: str = "auto"):  # noqa: ANN201 - the library class lives in an optional extra
    from singerid.enrollment import library_encoder
    from singerid.library import SingerLibrary

    library = SingerLibrary.open(path)
    return library, library_encoder(path, library, device)


def run_enroll(args: argparse.Namespace) -> int:
    from singerid.checkpoint import load_checkpoint, weights_digest
    from singerid.encoder import SingerEncoder
    from singerid.enrollment import (
        bind_model,
        catalog_singers,
        check_model,
        enroll_singers,
        library_checkpoint,
        store_singers,
    )
    from singerid.library import LibraryError, SingerLibrary
    from singerid.store import FeatureStore

    checkpoint = load_checkpoint(args.checkpoint)
    digest = weights_digest(checkpoint.model)
    encoder = SingerEncoder.from_checkpoint(checkpoint, args.device)
    existing = SingerLibrary.open(args.library) if (args.library / "library.json").exists() else None
    if existing is not None:  # the same model, or embeddings that cannot be compared
        check_model(args.library, existing.model_info, args.checkpoint, digest)
        if not existing.model_info.get("digest"):  # a library made before digests: its path must match
            made_with = library_checkpoint(args.library, existing.model_info).resolve()
            if made_with != args.checkpoint.resolve():
                raise LibraryError(f"{args.library}: made with {made_with}; enroll with it or into a new library")
    splits = set(filter(None, args.splits.split(",")))
    skipped: list = []
    if args.store:
        singers = store_singers(encoder, FeatureStore(args.store), splits, args.shard)
    else:
        singers = catalog_singers(encoder, args.catalog, splits, args.workers, skipped, args.shard)
    model = bind_model(args.library, args.checkpoint, digest)
    library = existing or SingerLibrary(encoder.embedding_dim, args.prototypes, model_info=model)
    library.model_info = model  # also brings an older library's record up to date
    enrolled = enroll_singers(
        library, singers, args.threshold, args.false_accepts, replace=args.replace, recalibrate=args.recalibrate
    )
    for error in skipped:
        print(f"enroll: skipped {error}", file=sys.stderr)
    if not enrolled.tracks:
        raise LibraryError(f"no track could be embedded ({len(skipped)} skipped); {args.library} not written")
    library.save(args.library)
    print(
        f"enroll: {enrolled.singers} singers enrolled ({enrolled.tracks} tracks, {len(skipped)} skipped); "
        f"library {args.library} holds {len(library)} singers; {enrolled.threshold}"
    )
    return batch_status(enrolled.tracks, enrolled.tracks + len(skipped))


def run_identify(args: argparse.Namespace) -> int:
    import numpy as np

    from singerid.encoder import mean_embedding

    library, encoder = open_library(args.library, args.device)
    files = list(dict.fromkeys(args.files))  # a file named twice is answered once
    embeddings = embed_files(encoder, files, "identify", args.workers)
    cohort = None
    if args.cohort:
        from singerid.scoring import load_cohort, normalised_candidates

        cohort = load_cohort(args.cohort, library.dim)
    for path, segments in embeddings.items():
        query = mean_embedding(segments)
        matches = library.identify(query, top_k=args.top_k * (4 if cohort is not None else 1), open_set=False)
        candidates = ", ".join(f"{m.singer_id} ({m.score:.3f})" for m in matches)
        if cohort is not None and matches:  # the cosine shortlist, ranked again by AS-norm
            prototypes = [library.prototypes_of(m.singer_id) for m in matches]
            raw, normalised = normalised_candidates(query, prototypes, cohort, args.top_n)
            order = np.argsort(-normalised)[: args.top_k]
            candidates = ", ".join(f"{matches[i].singer_id} ({normalised[i]:.3f}; cosine {raw[i]:.3f})" for i in order)
        if library.threshold is not None and (not matches or matches[0].score < library.threshold):
            candidates = f"unknown singer (below the threshold {library.threshold:.3f}); closest: {candidates}"
        print(f"{path}: {candidates}")
    return batch_status(len(embeddings), len(files))


def run_verify(args: argparse.Namespace) -> int:
    library, encoder = open_library(args.library, args.device)
    embedding = encoder.embed_file(args.file)
    if args.cohort:
        from singerid.scoring import load_cohort, normalised_candidates

        if args.threshold is None:
            from singerid.library import LibraryError

            raise LibraryError("with --cohort, give --threshold on the AS-norm scale (the library's is a cosine)")
        cohort = load_cohort(args.cohort, library.dim)
        _, (score,) = normalised_candidates(embedding, [library.prototypes_of(args.singer)], cohort, args.top_n)
        verdict = "accepted" if score >= args.threshold else "rejected"
        print(f"{args.file}: {verdict} as {args.singer} (AS-norm score {score:.3f}, threshold {args.threshold:.3f})")
        return 0 if score >= args.threshold else 1
    result = library.verify(args.singer, embedding, threshold=args.threshold)
    verdict = "accepted" if result.accepted else "rejected"
    print(f"{args.file}: {verdict} as {result.singer_id} (score {result.score:.3f}, threshold {result.threshold:.3f})")
    return 0 if result.accepted else 1


def run_library_merge(args: argparse.Namespace) -> int:
    from singerid.checkpoint import BASE
    from singerid.enrollment import bind_model, library_checkpoint
    from singerid.library import LibraryError, SingerLibrary

    if (args.out / "library.json").exists():
        raise LibraryError(f"{args.out}: a library already; merge into a new folder")
    parts = [SingerLibrary.open(part) for part in args.parts]
    merged = SingerLibrary.merged(parts)
    record = parts[0].model_info  # bound again, relative to the new folder
    checkpoint = Path(BASE) if record.get("checkpoint") == BASE else library_checkpoint(args.parts[0], record)
    merged.model_info = bind_model(args.out, checkpoint, record.get("digest", ""))
    if args.threshold is not None:
        merged.threshold = args.threshold
    merged.save(args.out)
    threshold = "no threshold" if merged.threshold is None else f"threshold {merged.threshold:.3f}"
    print(f"library merge: {len(merged)} singers from {len(parts)} libraries in {args.out}; {threshold}")
    return 0


def run_similar(args: argparse.Namespace) -> int:
    from singerid.library import SingerLibrary

    library = SingerLibrary.open(args.library)
    for match in library.similar(args.singer, top_k=args.top_k):
        print(f"{match.singer_id}\t{match.score:.3f}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    import logging

    from singerid.serve import ServeError, exposure_warning, make_server

    warning = exposure_warning(args.host, args.token)
    if warning:
        print(f"singerid: warning: {warning}", file=sys.stderr)
    library, encoder = open_library(args.library, args.device)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        server = make_server(
            library,
            encoder.wave_segments,
            args.host,
            args.port,
            max_bytes=int(args.max_upload_mb * 2**20),
            max_decodes=args.max_decodes,
            token=args.token,
        )
    except OSError as error:
        raise ServeError(f"cannot listen on {args.host}:{args.port} ({error.strerror or error})") from None
    except ValueError as error:
        raise ServeError(f"serve: {error}") from None
    try:  # from here on, a stop (Ctrl-C, SIGTERM) saves the library, whenever it comes
        print(
            f"serve: {len(library)} singers on http://{args.host}:{server.server_address[1]} (Ctrl-C stops)", flush=True
        )
        server.serve_forever()
    finally:
        server.server_close()
        library.save(args.library)  # keeps what /enroll added
        print(f"serve: stopped; library {args.library} saved with {len(library)} singers")
    return 0


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole chain on a freshly synthesized corpus",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run", type=Path, nargs="?", default=Path("runs/demo"), help="folder for the demo's outputs")
    p.add_argument("--workers", type=at_least(1), default=_workers_default(), help="parallel processes")
    p.set_defaults(handler=run_demo, resumable=True)


def run_demo(args: argparse.Namespace) -> int:
    from singerid.demo import run

    return run(args.run, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="singerid",
        description="Singer identification and verification with deep metric learning.",
    )
    parser.add_argument("--version", action="version", version=f"singerid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    add_quiet(sub)
    return parser


def add_quiet(sub: argparse._SubParsersAction) -> None:
    """--quiet on every command: no progress bars (summaries and errors are still printed)."""
    for command in sub.choices.values():
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            add_quiet(nested[0])
        else:
            command.add_argument("--quiet", action="store_true", help="no progress bars")


COMMANDS = [
    add_synth,
    add_prepare,
    add_store,
    add_train,
    add_evaluate,
    add_experiment,
    add_library_commands,
    add_demo,
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    handler: Handler = args.handler
    from singerid.progress import set_quiet

    set_quiet(getattr(args, "quiet", False))
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends a command as Ctrl-C does: its workers stop too
    warnings.formatwarning = _one_line_warning
    try:
        return handler(args)
    except SingerIdError as error:  # the input's fault: one line naming it; anything else is a bug: a traceback
        print(f"singerid: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        if isinstance(stop, Terminated) and getattr(args, "stops_on_sigterm", False):
            return 0  # the normal way to stop a service: not a failure to its manager
        resume = (
            "; finished work is kept, rerun the same command to resume" if getattr(args, "resumable", False) else ""
        )
        print(f"interrupted{resume}", file=sys.stderr)
        return 130


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
    return f"singerid: warning: {message}\n"


class Terminated(KeyboardInterrupt):
    """SIGTERM: a service manager (or `kill`) asks the command to stop."""


def _interrupt(signum: int, frame: object) -> None:
    raise Terminated
