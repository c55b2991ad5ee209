import json

import pytest

from workbench import experiments
from workbench.config import ConfigError, apply_overrides, check_schema_version, parse_overrides
from workbench.models import ModelConfig


def test_d_head_defaults_and_divisibility_error_names_fields():
    assert ModelConfig(d_model=64, n_heads=4).d_head == 16
    with pytest.raises(ConfigError, match="d_model=30 is not divisible by model.n_heads=4"):
        ModelConfig.parse({"d_model": 30, "n_heads": 4})
    assert ModelConfig(d_model=30, n_heads=4, d_head=8).d_head == 8


@pytest.mark.parametrize("data, key", [
    ({"n_layers": 0}, "n_layers"), ({"d_model": -4}, "d_model"), ({"positional": "sinusoid"}, "positional"),
    ({"n_layrs": 2}, "n_layrs"), ({"n_heads": "four"}, "n_heads"),
])
def test_bad_model_config_names_the_field(data, key):
    with pytest.raises(ConfigError, match=key):
        ModelConfig.parse(data)


def test_overrides_are_typed_and_validated():
    cfg = experiments.get("induction").config("smoke")
    new = apply_overrides(cfg, parse_overrides(["model.n_layers=3", "train.lr=0.01", "model.positional=rotary"]))
    assert (new.model.n_layers, new.train.lr, new.model.positional) == (3, 0.01, "rotary")
    assert cfg.model.n_layers == 2  # original untouched
    with pytest.raises(ConfigError, match="unknown key 'n_layrs' in 'model'"):
        apply_overrides(cfg, {"model.n_layrs": "3"})
    with pytest.raises(ConfigError, match="model.n_layers"):
        apply_overrides(cfg, {"model.n_layers": "three"})
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["model.n_layers"])


def test_overrides_reach_inside_a_section_that_may_be_off():
    cfg = experiments.get("induction").config("quick")
    assert apply_overrides(cfg, {"retrain.lr": "0.1"}).retrain.lr == 0.1
    with pytest.raises(ConfigError, match="unknown key 'lrr' in 'retrain'"):
        apply_overrides(cfg, {"retrain.lrr": "0.1"})
    off = apply_overrides(cfg, {"retrain": "null"})
    assert off.retrain is None and len(experiments.get("induction").phases(off)) == 1
    with pytest.raises(ConfigError, match="'retrain' is null"):
        apply_overrides(off, {"retrain.lr": "0.1"})
    small = {"task.d_vocab": "16", "model.d_vocab": "16"}  # too few tokens for a distinct 31-token segment
    with pytest.raises(ConfigError, match="retrain_distinct: task.distinct: task.max_segment=31 exceeds the 15 "):
        apply_overrides(cfg, small)
    assert not apply_overrides(cfg, {**small, "retrain_distinct": "false"}).retrain_task().distinct


def test_config_json_round_trip():
    for name in experiments.names():
        exp = experiments.get(name)
        for mode in exp.presets:
            cfg = exp.config(mode)
            again = exp.Config.parse(json.loads(json.dumps(cfg.model_dump(mode="json"))))
            assert again == cfg


@pytest.mark.parametrize("version", [None, 0, 99, "1"])
def test_unknown_schema_version_is_refused(version):
    with pytest.raises(ConfigError, match="schema_version"):
        check_schema_version({"schema_version": version}, "x/config.json")


@pytest.mark.parametrize("name", experiments.names())
def test_every_experiment_refuses_a_model_context_shorter_than_its_sequences(name):
    """One validator (ExperimentConfig.task_to_fit) guards every experiment whose task has sequences."""
    exp = experiments.get(name)
    cfg = exp.config("quick")
    task = cfg.task_to_fit()
    if task is None:
        pytest.skip(f"{name}: its task has no token sequences")
    with pytest.raises(ConfigError, match="model.n_ctx"):
        apply_overrides(cfg, {"model.n_ctx": task.seq_len - 1})
