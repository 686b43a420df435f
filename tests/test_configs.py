"""The shipped configs load, have llama2.c's shapes, and overrides are typed and checked."""

from pathlib import Path

import pytest

import configs
from model import Transformer
from training.config import load_run_config

CONFIGS = sorted(configs.CONFIG_DIR.rglob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_its_vocabularies_agree(path):
    cfg = load_run_config(path, [])
    assert cfg["model"].vocab_size == cfg["data"].vocab_size
    assert cfg["model"].max_seq_len > 0 and cfg["train"].max_steps > 0


@pytest.mark.parametrize("name, params", [("stories15M", 15_191_712), ("stories260K", 260_032)])
def test_llama2c_shapes(name, params):
    cfg = load_run_config(configs.CONFIG_DIR / f"{name}.toml", [])
    assert Transformer(cfg["model"]).num_params() == params


def test_overrides_are_parsed_by_type():
    argv = ["--model.n_kv_heads", "none", "--train.compile=true", "--train.lr", "1e-3",
            "--model.ffn_dim_multiplier", "1.5", "--data.source", "some/folder", "--train.max_steps", "7"]  # fmt: skip
    cfg = load_run_config(None, argv)
    assert cfg["model"].n_kv_heads is None and cfg["train"].compile is True
    assert cfg["train"].lr == 1e-3 and cfg["model"].ffn_dim_multiplier == 1.5
    assert cfg["data"].source == "some/folder" and cfg["train"].max_steps == 7


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train.compile", "maybe"], "train.compile must be true or false or none"),
        (["--train.lr"], "--train.lr needs a value"),
        (["stray"], "unexpected argument 'stray'"),
        (["--optim.lr", "1"], "unknown section in --optim.*"),
        (["--train.parallel", "tp"], "train.parallel must be ddp or fsdp"),
    ],
)
def test_bad_overrides(argv, message):
    with pytest.raises(configs.ConfigError, match=message.replace(".", r"\.").replace("*", r"\*")):
        load_run_config(None, argv)


def test_bad_files(tmp_path: Path):
    (tmp_path / "a.toml").write_text("[optimizer]\nlr = 1\n")
    with pytest.raises(configs.ConfigError, match=r"unknown section \[optimizer\]"):
        load_run_config(tmp_path / "a.toml", [])
    (tmp_path / "b.toml").write_text("[model\ndim = 1")
    with pytest.raises(configs.ConfigError, match="not valid TOML"):
        load_run_config(tmp_path / "b.toml", [])
    (tmp_path / "c.toml").write_text('[model]\ndim = "wide"\n')
    with pytest.raises(configs.ConfigError, match="model.dim must be an integer, got 'wide'"):
        load_run_config(tmp_path / "c.toml", [])


def test_the_compare_configs_differ_only_in_the_position_embedding():
    loaded = {p.stem: configs.as_dict(load_run_config(p, [])) for p in (configs.CONFIG_DIR / "compare").glob("*.toml")}
    assert sorted(loaded) == ["learned", "none", "rope", "sinusoidal"]
    for name, cfg in loaded.items():
        assert cfg["model"].pop("pos_embedding") == name
    first = next(iter(loaded.values()))
    assert all(cfg == first for cfg in loaded.values())
