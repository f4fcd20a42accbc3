"""Configs: YAML mirrored by dataclasses, strict keys, overrides, the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from singerid.config import ConfigError, config_from_dict, dump_config, load_config

CONFIGS = sorted(Path(__file__).parents[1].joinpath("configs").rglob("*.yaml"))


def test_defaults_are_the_paper_setting() -> None:
    config = load_config()
    assert (config.batch.singers, config.batch.crop_frames, config.model.embedding_dim) == (400, 350, 512)
    assert (config.optim.lr, config.optim.decay, config.optim.decay_every, config.train.epochs) == (1e-3, 0.95, 10, 500)
    assert config.loss.options == {"init_scale": 10.0, "init_bias": -5.0}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    resolved = tmp_path / "config.yaml"
    resolved.write_text(dump_config(config), encoding="utf-8")
    assert load_config(resolved) == config


def test_paper_grid_is_table_two() -> None:
    rows = {p.stem: load_config(p) for p in CONFIGS if p.parent.name == "paper"}
    assert len(rows) == 8
    assert rows["triplet-alpha0.2"].loss.options["margin"] == 0.2
    assert {(c.loss.name, c.batch.segments) for k, c in rows.items() if not k.startswith("triplet")} == {
        (loss, m) for loss in ("ge2e", "proto", "angleproto") for m in (3, 4)
    }
    assert all(c.batch.singers == 400 and c.train.epochs == 500 for c in rows.values())


def test_unknown_keys_are_rejected_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("batch: {singers: 10, segmnets: 3}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'batch.segmnets'; did you mean 'segments'"):
        load_config(path)
    path.write_text("loss: {name: triplet, margn: 0.2}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="loss.margn.*did you mean 'margin'"):
        load_config(path)
    path.write_text("loss: {name: angleproto, margin: 0.2}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'loss.margin' for loss 'angleproto'"):
        load_config(path)
    path.write_text("lossy: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown section 'lossy'"):
        load_config(path)
    path.write_text("batch: {singers: many}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="batch.singers"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown loss 'softmaxx'"):
        load_config(None, ["loss.name=softmaxx"])


def test_overrides_parse_yaml_values() -> None:
    config = load_config(
        None, ["batch.singers=100", "loss.name=triplet", "loss.margin=0.2", "model.channels=[4,8,16,32]"]
    )
    assert config.batch.singers == 100 and config.loss.options == {"margin": 0.2, "mining": "semihard"}
    assert config.model.options["channels"] == (4, 8, 16, 32)
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["batch"])
    with pytest.raises(ConfigError, match="needs batch.segments >= 2"):
        load_config(None, ["batch.segments=1"])


def test_model_options_are_checked_like_loss_options() -> None:
    config = load_config(None, ["model.channels=[8,16,32,64]", "model.input_norm=bin"])
    assert config.model.options == {"channels": (8, 16, 32, 64), "blocks": (3, 4, 6, 3), "input_norm": "bin"}
    assert config.to_dict()["model"] == {
        "name": "thin_resnet34", "embedding_dim": 512, "channels": [8, 16, 32, 64], "blocks": [3, 4, 6, 3],
        "input_norm": "bin",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="unknown key 'model.chanels' for model 'thin_resnet34'.*'channels'"):
        load_config(None, ["model.chanels=[8,16,32,64]"])
    with pytest.raises(ConfigError, match="model.*input_norm must be one of"):
        load_config(None, ["model.input_norm=layer"])
    with pytest.raises(ConfigError, match="model.*4 entries"):
        load_config(None, ["model.blocks=[1,1]"])
    with pytest.raises(ConfigError, match="unknown model 'resnet9'"):
        load_config(None, ["model.name=resnet9"])
    with pytest.raises(ConfigError, match="'model.blocks' must be like"):
        load_config(None, ["model.blocks=three"])


def test_a_stored_config_of_another_version_still_reads() -> None:
    stored = load_config().to_dict()
    stored["train"]["retired_setting"] = 1  # written by a later or earlier singerid
    stored["model"]["retired_option"] = True
    del stored["optim"]["decay"]  # a field added after it was written takes its default
    with pytest.raises(ConfigError):
        config_from_dict(stored, "stored")
    with pytest.warns(UserWarning, match="retired"):
        config = config_from_dict(stored, "stored", strict=False)
    assert config == load_config()


def test_shipped_configs_load_by_name_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the package's own are found by name
    cpu = load_config("cpu")
    assert cpu.train.minutes == 30 and cpu.optim.schedule == "cosine" and cpu.augment.mix == 0.5
    assert load_config("paper/apnl-m4").batch.segments == 4
    with pytest.raises(ConfigError, match=r"laptop: no such config file, .*shipped: cpu, cpu-triplet, demo"):
        load_config("laptop")


def test_a_folder_or_impossible_schedule_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a folder, not a config file"):
        load_config(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes("loss: {name: 'caf\xe9'}".encode("latin-1"))
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(tmp_path / "latin1.yaml")
    for override in ("optim.decay_every=0", "optim.lr=0", "train.epochs=0"):
        with pytest.raises(ConfigError, match="decay_every >= 1"):
            load_config(None, [override])
