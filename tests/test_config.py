import pytest

from selfsup.config import ConfigError, load_config, parse_budget


def test_budget_units():
    assert (parse_budget("2000").amount, parse_budget("2000").unit) == (2000, "steps")
    assert parse_budget("5epochs").unit == "epochs"
    assert parse_budget("10m").amount == 600 and parse_budget("10m").unit == "seconds"
    assert parse_budget("2h").amount == 7200
    for bad in ("ten", "10 parsecs", "0", "-5"):
        with pytest.raises(ConfigError, match="budget"):
            parse_budget(bad)


def test_yaml_then_values_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: simclr\nbatch_size: 64\noptim:\n  lr: 0.1\n")
    config = load_config(path, ["optim.lr=0.2", "method_args.temperature=0.5"], {"batch_size": 32})
    assert config.batch_size == 32 and config.optim.lr == 0.2
    assert config.method_args == {"temperature": 0.5}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optim.lrr=1", "optim.lrr"),
        ("bach_size=3", "batch_size"),
        ("batch_size=abc", "batch_size"),
        ("precision=fp8", "precision"),
        ("optim.name=adam", "optim.name"),
        ("noequals", "key=value"),
        ("optim.clip_grad=-1", "optim.clip_grad"),  # a negative norm flips the gradients
        ("optim.clip_grad=0", "optim.clip_grad"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.weight_decay=-0.1", "optim.weight_decay"),
        ("seed=-1", "seed"),
        ("strategy=ddp_spawn", "strategy=ddp_spawn"),
        ("strategy=ddp_notebook", "strategy=ddp_notebook"),
        ("budget=0.5", "whole number of steps"),
    ],
)
def test_bad_keys_and_values_are_named(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=[override])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_exponent_floats_are_floats_in_overrides_and_files(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-4 as a string; selfsup reads it as the float users mean."""
    config = load_config(None, ["optim.lr=1e-4", "method_args.temperature=5e-2"])
    assert config.optim.lr == 1e-4 and config.method_args["temperature"] == 0.05
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 3e-4\n  weight_decay: 1E-6\n")
    config = load_config(path)
    assert config.optim.lr == 3e-4 and config.optim.weight_decay == 1e-6


def test_a_bad_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: simclr\nbatchsize: 64\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown config key 'batchsize'"):
        load_config(path)
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: optim\.lr must be float"):
        load_config(path)
