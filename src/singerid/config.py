"""Training configs: plain YAML outside, frozen dataclasses inside; unknown keys are errors.

A config file has the sections below; every key has a default, so a file names only what it changes:

    model: {name: thin_resnet34, embedding_dim: 512}
    loss: {name: angleproto, init_scale: 10.0, init_bias: -5.0}   # the other keys are the loss's own Options
    batch: {singers: 400, segments: 3, crop_frames: 350}
    optim: {lr: 0.001, decay: 0.95, decay_every: 10}        # or {schedule: cosine, warmup: 0.05}
    train: {epochs: 500, validate_every: 10}                 # or {minutes: 30}: a time budget
    augment: {mix: 0.0, tilt: 0.0, ...}                      # probabilities and strengths (singerid.augment)

Overrides on the command line use dotted keys with YAML values: `--set batch.singers=100 loss.margin=0.2`.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from singerid.errors import SingerIdError
from singerid.losses import LOSSES
from singerid.model import MODELS
from singerid.registry import RegistryError


class ConfigError(SingerIdError, ValueError):
    """A config that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "thin_resnet34"  # a name in singerid.model.MODELS
    embedding_dim: int = 512  # size of the embedding (the paper: 512)
    options: dict[str, Any] = field(default_factory=dict)  # the model's own Options (channels, blocks, ...)


@dataclass(frozen=True)
class LossConfig:
    name: str = "angleproto"  # a name in singerid.losses.LOSSES
    options: dict[str, Any] = field(default_factory=dict)  # the loss's own Options (e.g. margin for triplet)


@dataclass(frozen=True)
class BatchConfig:
    singers: int = 400  # N singers per global batch (across all processes)
    segments: int = 3  # M segments per singer, each from another track where possible
    crop_frames: int = 350  # 3.5 s at a 10 ms hop


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.001  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    schedule: str = "step"  # step: the paper's (x decay every decay_every epochs) | cosine: warm-up, then cosine to 0
    decay: float = 0.95  # step: learning rate factor ...
    decay_every: int = 10  # ... applied every this many epochs
    warmup: float = 0.05  # cosine: the first fraction of the run (its epochs, or train.minutes) warms up linearly


@dataclass(frozen=True)
class TrainLoopConfig:
    epochs: int = 500  # an epoch shows every training singer `passes` times
    minutes: float = 0.0  # > 0: stop after this many minutes of training (a budget; epochs is then an upper bound)
    init: str = ""  # start from the weights of a checkpoint: a path, or "base" (the shipped encoder); "": random
    passes: int = 1  # times each training singer appears per epoch
    validate_every: int = 10  # epochs between validations (EER and top-1 on the val split); 0: never
    val_segments: int = 4  # segments per val track, evenly spaced
    val_enroll_tracks: int = 3  # train tracks per singer whose segments form its prototype for validation
    seed: int = 0  # seeds model initialisation, batches and crops
    workers: int = 2  # data-loading processes per training process (0: load in the main process)
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    channels_last: bool = False  # channels_last memory format (faster convolutions on some GPUs)
    compile: bool = False  # torch.compile the model
    sync_batchnorm: bool = False  # synchronise BatchNorm statistics across GPUs (needs CUDA)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations of the log-mel crops (singerid.augment): each a probability per crop (0: off, the
    default everywhere) and its strength."""

    mix: float = 0.0  # add a random accompaniment crop of another training track (its store's bank) ...
    mix_snr_db: tuple[float, float] = (0.0, 15.0)  # ... at a voice-to-accompaniment ratio drawn in this range
    tilt: float = 0.0  # a smooth random equaliser curve across the mel bins: ...
    tilt_db: float = 6.0  # ... a slope of up to +-tilt_db from the lowest bin to the highest, ripples of tilt_db / 4
    gain: float = 0.0  # a level change ...
    gain_db: float = 6.0  # ... of up to +-gain_db (a no-op under the model's input_norm segment or bin)
    time_mask: float = 0.0  # mask a run of frames (filled with the crop's mean) ...
    time_mask_frames: int = 40  # ... of 1 to this many frames
    freq_mask: float = 0.0  # mask a run of mel bins (filled with the crop's mean) ...
    freq_mask_bins: int = 8  # ... of 1 to this many bins
    reverb: float = 0.0  # smear the mel power forward in time, decaying exponentially ...
    reverb_seconds: tuple[float, float] = (0.2, 0.8)  # ... with a reverberation time (RT60) drawn in this range

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return any((self.mix, self.tilt, self.gain, self.time_mask, self.freq_mask, self.reverb))


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what config.yaml and checkpoints hold): the plug-in sections flat,
        as they are written in YAML."""
        data = asdict(self)
        data["model"] = {"name": self.model.name, "embedding_dim": self.model.embedding_dim, **self.model.options}
        data["loss"] = {"name": self.loss.name, **self.loss.options}
        return _plain(data)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what YAML and JSON write."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# The plug-in sections: `name` picks a class from the registry and its Options dataclass checks the other keys.
# ModelConfig also keeps embedding_dim, which the loss needs too.
PLUGIN_SECTIONS = {"model": (MODELS, ModelConfig, ("embedding_dim",)), "loss": (LOSSES, LossConfig, ())}


def plugin_section(section: str, values: Any, source: str, strict: bool) -> ModelConfig | LossConfig:
    """A model or loss section: its name, its shared keys, and its class's Options checked and filled in."""
    registry, config_class, shared = PLUGIN_SECTIONS[section]
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: '{section}' must be a mapping")
    values = dict(values)
    name = values.pop("name", config_class.name)
    try:
        options_class = registry.get(name).Options
    except RegistryError as error:
        raise ConfigError(f"{source}: {section}.name: {error}") from None
    common = build_section(config_class, {k: values.pop(k) for k in shared if k in values}, section, source, strict)
    known = {f.name for f in fields(options_class)}
    for key in set(values) - known:
        if strict:
            raise ConfigError(f"{source}: unknown key '{section}.{key}' for {section} '{name}'{suggest(key, known)}")
        warnings.warn(f"{source}: ignoring '{section}.{key}', which this singerid does not know", stacklevel=2)
        del values[key]
    try:
        options = build_section(options_class, values, section, source, strict)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{source}: {section}: {error}") from None
    return replace(common, name=name, options=asdict(options))


def suggest(key: str, known: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known) or 'none'}"


def build_section(cls: type, values: Mapping[str, Any], path: str, source: str, strict: bool = True) -> Any:
    """A dataclass from a mapping, checking value types; unknown keys are errors (`strict`), else dropped with a
    warning (a stored config of another singerid version)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: '{path}' must be a mapping, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            if not strict:
                warnings.warn(f"{source}: ignoring '{path}.{key}', which this singerid does not know", stacklevel=2)
                continue
            raise ConfigError(f"{source}: unknown key '{path}.{key}'{suggest(key, known)}")
        default = known[key].default
        if default is MISSING and known[key].default_factory is not MISSING:  # type: ignore[misc]
            default = known[key].default_factory()  # type: ignore[misc]
        kwargs[key] = coerce(value, default, f"{path}.{key}", source)
    return cls(**kwargs)


def coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """Checks a value against the type of its default (ints are accepted where floats are expected; a tuple's
    items against its first item)."""
    ok, value = _typed(value, default)
    if not ok:
        raise ConfigError(f"{source}: '{key}' must be like {default!r}, got {value!r}")
    return value


def _typed(value: Any, default: Any) -> tuple[bool, Any]:
    """Whether `value` has the type of `default`, and the value converted to it."""
    if isinstance(default, bool):
        return isinstance(value, bool), value
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool), value
    if isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            return False, value
        items = [_typed(item, default[0] if default else 0) for item in value]
        ok = all(fits for fits, _ in items)
        return ok, tuple(item for _, item in items) if ok else value
    if isinstance(default, str):
        return isinstance(value, str), value
    return True, value


def config_from_dict(data: Mapping[str, Any], source: str = "config", *, strict: bool = True) -> TrainConfig:
    """A TrainConfig from its YAML mapping; `strict=False` reads a config stored by another singerid version
    (unknown keys dropped with a warning, missing ones at their defaults)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a config is a mapping of sections")
    sections = {f.name: f for f in fields(TrainConfig)}
    kwargs: dict[str, Any] = {}
    # missing plug-in sections still get their Options filled in
    for name, values in {"model": {}, "loss": {}, **data}.items():
        if name not in sections:
            if strict:
                raise ConfigError(f"{source}: unknown section '{name}'{suggest(name, sections)}")
            warnings.warn(f"{source}: ignoring section '{name}', which this singerid does not know", stacklevel=2)
        elif name in PLUGIN_SECTIONS:
            kwargs[name] = plugin_section(name, values, source, strict)
        else:
            kwargs[name] = build_section(sections[name].default_factory, values, name, source, strict)  # type: ignore[misc]
    config = TrainConfig(**kwargs)
    check(config, source)
    return config


def check(config: TrainConfig, source: str) -> None:
    min_segments = LOSSES.get(config.loss.name).min_segments
    if config.batch.segments < min_segments:
        raise ConfigError(f"{source}: loss '{config.loss.name}' needs batch.segments >= {min_segments}")
    if config.batch.singers < 2 or config.batch.crop_frames < 32:
        raise ConfigError(f"{source}: need batch.singers >= 2 and batch.crop_frames >= 32")
    if config.train.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"{source}: train.precision must be auto, fp32 or bf16")
    if config.optim.schedule not in ("step", "cosine"):
        raise ConfigError(f"{source}: optim.schedule must be step or cosine, got '{config.optim.schedule}'")
    if not 0.0 <= config.optim.warmup < 1.0 or config.train.minutes < 0:
        raise ConfigError(f"{source}: need 0 <= optim.warmup < 1 and train.minutes >= 0")
    if config.optim.decay_every < 1 or config.optim.lr <= 0 or config.train.epochs < 1:
        raise ConfigError(f"{source}: need optim.decay_every >= 1, optim.lr > 0 and train.epochs >= 1")
    check_augment(config.augment, source)


def check_augment(augment: AugmentConfig, source: str) -> None:
    """Probabilities in [0, 1], strengths >= 0, ranges of two values low to high."""
    for name in ("mix", "tilt", "gain", "time_mask", "freq_mask", "reverb"):
        if not 0.0 <= getattr(augment, name) <= 1.0:
            raise ConfigError(f"{source}: augment.{name} is a probability, in [0, 1]; got {getattr(augment, name)}")
    for name, least in (("tilt_db", 0), ("gain_db", 0), ("time_mask_frames", 1), ("freq_mask_bins", 1)):
        if getattr(augment, name) < least:
            raise ConfigError(f"{source}: augment.{name} must be >= {least}, got {getattr(augment, name)}")
    for name in ("mix_snr_db", "reverb_seconds"):
        low_high = getattr(augment, name)
        if len(low_high) != 2 or low_high[0] > low_high[1]:
            raise ConfigError(f"{source}: augment.{name} must be [low, high] with low <= high, got {list(low_high)}")
    if augment.reverb_seconds[0] <= 0:
        raise ConfigError(f"{source}: augment.reverb_seconds must be > 0, got {list(augment.reverb_seconds)}")


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str) -> dict[str, Any]:
    """Applies `section.key=value` overrides (values parsed as YAML) to a raw config mapping."""
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"override '{override}': use section.key=value, e.g. batch.singers=100")
        section, name = parts
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"{source}: '{section}' must be a mapping")
        data[section][name] = yaml.safe_load(text)
    return data


SHIPPED = Path(__file__).resolve().parent / "configs"  # the configs installed with the package


def find_config(path: str | Path) -> Path:
    """A config file as given, else one shipped with singerid by its name: `cpu`, `demo`, `paper/apnl-m4`."""
    given = Path(path)
    if given.exists() or given.suffix in (".yaml", ".yml"):
        return given
    shipped = SHIPPED / f"{given.as_posix()}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.relative_to(SHIPPED).with_suffix("").as_posix() for p in SHIPPED.rglob("*.yaml"))
    raise ConfigError(f"{path}: no such config file, and no shipped config of that name (shipped: {', '.join(names)})")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Reads a YAML config, a shipped one by name (`cpu`, `paper/apnl-m4`), or the defaults when path is None;
    applies overrides."""
    path = find_config(path) if path else None
    source = str(path) if path else "defaults"
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: a folder, not a config file (name a .yaml file)") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not a UTF-8 text file ({error.reason})") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config is a mapping of sections")
    if overrides:  # an error may come from the file or from an override: name both
        source = f"{source} with --set {' '.join(overrides)}"
    return config_from_dict(apply_overrides(data, overrides, source), source)


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
