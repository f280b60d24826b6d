"""Tests of robustft.config: ε parsing, YAML load/save, ``--set`` overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robustft.config import (
    SECTIONS,
    AttackConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    format_eps,
    load_config,
    parse_eps,
    save_config,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_FILES = sorted(CONFIG_DIR.glob("*.yaml"))


# ------------------------------------------------------------------------------------ parse_eps
@pytest.mark.parametrize("value,expected", [
    ("8/255", 8 / 255), ("0.031", 0.031), (0.5, 0.5), (0, 0.0), (1, 1.0), ("4 / 255", 4 / 255),
    ("1e-2", 0.01), (" 2/255 ", 2 / 255), ("0", 0.0),
])
def test_parse_eps_valid(value, expected):
    eps = parse_eps(value)
    assert isinstance(eps, float)
    assert eps == expected


@pytest.mark.parametrize("value", ["abc", "8/", "/255", "8/255/2", "", None, [8], "2**3"])
def test_parse_eps_rejects_non_numbers(value):
    with pytest.raises(ValueError, match="number like 8/255"):
        parse_eps(value)


@pytest.mark.parametrize("value,positive", [(-1, "1"), (-0.01, "0.01"), ("-1/255", "1/255"), ("-8/255", "8/255"),
                                            (" -8/255 ", "8/255")])
def test_parse_eps_rejects_negative_and_says_what_to_write(value, positive):
    with pytest.raises(ConfigError) as info:
        parse_eps(value)
    assert info.value.problems == [f"ε = {value!r} is negative; ε is a radius in [0, 1] (pixel units): "
                                   f"write {positive} instead"]


RULE = "write it as k/255 with k at most 255, e.g. 8/255"


@pytest.mark.parametrize("value,shown,advice", [
    ("300/255", "'300/255' = 1.176", RULE), ("16/2", "'16/2' = 8", RULE), (300, "300", RULE),
    (8, "8", "did you mean 8/255?"), ("8", "'8'", "did you mean 8/255?"), (8.0, "8.0", "did you mean 8/255?"),
    (2.5, "2.5", "did you mean 2.5/255?"),
])
def test_parse_eps_above_one_says_the_range_and_what_to_write(value, shown, advice):
    with pytest.raises(ConfigError) as info:
        parse_eps(value)
    assert info.value.problems == [f"ε = {shown} is out of range [0, 1] (pixel units: images are in [0, 1]); {advice}"]
    assert "/255/255" not in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_parse_eps_rejects_non_finite(value):
    with pytest.raises(ConfigError) as info:
        parse_eps(value)
    assert str(info.value) == f"invalid configuration: ε must be a finite number like 8/255 or 0.031, got {value!r}"


def test_bad_eps_in_a_config_is_one_line_naming_the_key():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["attack.eps=300/255"])
    assert str(info.value) == ("invalid configuration: attack.eps: ε = '300/255' = 1.176 is out of range [0, 1] "
                               "(pixel units: images are in [0, 1]); " + RULE)
    with pytest.raises(ConfigError) as info:
        load_config(None, ["attack.eps=-8/255"])
    assert str(info.value) == ("invalid configuration: attack.eps: ε = '-8/255' is negative; ε is a radius in "
                               "[0, 1] (pixel units): write 8/255 instead")
    assert load_config(None, ["attack.eps=-0"]).attack.eps == 0.0


def test_eps_grid_names_the_grid_and_the_bad_value():
    from robustft.config import parse_eps_grid

    with pytest.raises(ConfigError) as info:
        parse_eps_grid("0,-4/255")
    assert str(info.value) == ("invalid configuration: ε grid '0,-4/255': ε = '-4/255' is negative; ε is a radius "
                               "in [0, 1] (pixel units): write 4/255 instead")
    with pytest.raises(ConfigError) as info:
        parse_eps_grid("0:300/255:1/255")
    assert info.value.problems[0].startswith("ε grid '0:300/255:1/255': ε = '300/255' = 1.176 is out of range [0, 1]")


@pytest.mark.parametrize("value", [8, "8", 8.0, "16/2"])
def test_parse_eps_larger_than_one_suggests_255(value):
    with pytest.raises(ValueError) as info:
        parse_eps(value)
    assert "/255" in str(info.value) and "pixel units" in str(info.value)


@pytest.mark.parametrize("value", [True, False])
def test_parse_eps_rejects_bool(value):
    with pytest.raises(ValueError):
        parse_eps(value)


def test_parse_eps_rejects_division_by_zero():
    with pytest.raises(ValueError, match="zero"):
        parse_eps("1/0")


@pytest.mark.parametrize("eps", [0.0, 1 / 255, 8 / 255, 16 / 255, 1.0, 0.031, 0.5])
def test_format_eps_round_trips(eps):
    text = format_eps(eps)
    assert parse_eps(text) == eps
    if eps in (1 / 255, 8 / 255, 16 / 255):
        assert text == f"{round(eps * 255)}/255"


# ------------------------------------------------------------------------------------ files
def test_configs_directory_is_not_empty():
    assert len(CONFIG_FILES) >= 3


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.attack.eps == 8 / 255
    raw = yaml.safe_load(path.read_text())
    # every key written in the file made it into the config
    for section, values in raw.items():
        for key, value in (values or {}).items():
            got = getattr(getattr(cfg, section), key)
            if (section, key) == ("attack", "eps"):
                assert got == parse_eps(value)
            else:
                assert got == value, f"{section}.{key}"


def test_defaults_without_a_file():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.attack.eps == 8 / 255 and cfg.schedule.kind == "hinge"


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("/nonexistent/nope.yaml")


def test_save_load_round_trip(tmp_path):
    cfg = Config(
        data=DataConfig(name="digits", n_train=300, n_val=100, batch_size=32, pad_crop=2),
        attack=AttackConfig(eps=8 / 255, norm="linf", name="pgd", num_steps=3),
        schedule=ScheduleConfig(kind="hinge", t1=2, t2=0.75, granularity="step"),
        train=TrainConfig(epochs=8, seed=3, run_name="x"),
        eval=EvalConfig(eps_grid=[0.0, 1 / 255, 4 / 255, 8 / 255, 0.04], mode="independent", n=None),
    )
    path = tmp_path / "cfg.yaml"
    save_config(cfg, path)
    text = path.read_text()
    assert "8/255" in text  # ε written exactly
    loaded = load_config(path)
    assert loaded == cfg
    assert loaded.attack.eps == 8 / 255
    assert loaded.eval.eps_grid == [0.0, 1 / 255, 4 / 255, 8 / 255, 0.04]
    assert isinstance(loaded.schedule.t1, int) and isinstance(loaded.schedule.t2, float)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_shipped_configs_round_trip(tmp_path, path):
    cfg = load_config(path)
    save_config(cfg, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == cfg


def test_config_to_dict_writes_eps_as_fractions():
    d = config_to_dict(Config(eval=EvalConfig(eps_grid=[0.0, 2 / 255])))
    assert d["attack"]["eps"] == "8/255"
    assert d["eval"]["eps_step"] == "1/255"
    assert d["eval"]["eps_grid"] == ["0/255", "2/255"]


# ------------------------------------------------------------------------------------ overrides
def test_overrides_on_a_file():
    path = CONFIG_DIR / "fmnist_scheduled.yaml"
    cfg = load_config(path, ["attack.eps=4/255", "train.epochs=3"])
    base = load_config(path)
    assert cfg.attack.eps == 4 / 255 and cfg.train.epochs == 3
    assert cfg.replace("attack", eps=base.attack.eps).replace("train", epochs=8) == base


def test_apply_overrides_parses_yaml_scalars_and_copies():
    raw = {"train": {"epochs": 8}}
    out = apply_overrides(raw, ["train.epochs=3", "data.flip=false", "model.checkpoint=null",
                                "eval.eps_grid=[0, 1/255]", "train.run_name=my run"])
    assert raw == {"train": {"epochs": 8}}  # the input is not modified
    assert out["train"]["epochs"] == 3
    assert out["data"]["flip"] is False
    assert out["model"]["checkpoint"] is None
    assert out["eval"]["eps_grid"] == [0, "1/255"]
    assert out["train"]["run_name"] == "my run"
    cfg = config_from_dict(out)
    assert cfg.eval.eps_grid == [0.0, 1 / 255] and cfg.data.flip is False


@pytest.mark.parametrize("item", ["attack.eps", "eps=8/255", "a.b.c=1", ".eps=1"])
def test_malformed_override(item):
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, [item])


def test_int_coerced_to_float_but_bool_not_to_int():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    assert isinstance(load_config(None, ["optim.lr=1"]).optim.lr, float)
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=true"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=2.5"])


# ------------------------------------------------------------------------------------ errors
def test_unknown_section_names_it_and_suggests():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["trian.epochs=3"])
    (problem,) = info.value.problems
    assert "trian" in problem and "'train'" in problem and "did you mean" in problem


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.epoch=3"])
    (problem,) = info.value.problems
    assert "train.epoch" in problem and "'epochs'" in problem
    with pytest.raises(ConfigError, match="num_steps"):
        load_config(None, ["attack.num_step=3"])


def test_unknown_key_in_a_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("attack:\n  epss: 8/255\n")
    with pytest.raises(ConfigError, match=r"attack\.epss.*'eps'"):
        load_config(path)


def test_several_bad_values_reported_together():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.epochs=0", "data.batch_size=-1", "attack.norm=l3", "eval.targets=0",
                           "eval.mode=sideways"])
    problems = info.value.problems
    assert isinstance(info.value, ValueError)
    assert any("incremental, downward, independent or null" in p for p in problems)
    assert load_config(None, ["eval.mode=downward"]).eval.mode == "downward"
    for key in ("train.epochs", "data.batch_size", "attack.norm", "eval.targets", "eval.mode"):
        assert sum(p.startswith(key) for p in problems) == 1, (key, problems)
    assert any("l3" in p for p in problems)
    for p in problems:  # the message lists every problem
        assert p in str(info.value)


def test_schedule_float_t1_is_a_fraction_not_epochs():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.epochs=50", "schedule.t1=12.0", "schedule.t2=37"])
    (problem,) = info.value.problems
    assert problem.startswith("schedule.t1") and "fraction" in problem and "integer" in problem
    ok = load_config(None, ["train.epochs=50", "schedule.t1=12", "schedule.t2=37"])
    assert (ok.schedule.t1, ok.schedule.t2) == (12, 37)


def test_schedule_integer_hinge_beyond_training_rejected():
    with pytest.raises(ConfigError, match="schedule.t2"):
        load_config(None, ["train.epochs=8", "schedule.t2=9"])


def test_fix_with_hinges_rejected():
    with pytest.raises(ConfigError, match="schedule.t1: the fix ε schedule does not take it"):
        load_config(None, ["schedule.kind=fix", "schedule.t1=2"])
    with pytest.raises(ConfigError, match="schedule.t2: the fix ε schedule does not take it"):
        load_config(None, ["schedule.kind=fix", "schedule.t2=0.5"])


def test_other_schedule_combinations():
    with pytest.raises(ConfigError, match="warmup starts at 0"):
        load_config(None, ["schedule.kind=warmup", "schedule.t1=2"])
    with pytest.raises(ConfigError, match=r"schedule.t2: the switch ε schedule does not take it \(it takes t1\)"):
        load_config(None, ["schedule.kind=switch", "schedule.t2=2"])
    assert load_config(None, ["schedule.kind=switch", "schedule.t1=3"]).schedule.t1 == 3


@pytest.mark.parametrize("overrides", [
    ["schedule.kind=linear"], ["schedule.kind=uniform", "schedule.granularity=step"],
    ["schedule.kind=auto", "schedule.patience=3", "schedule.tolerance=0.05", "schedule.tolerance_mode=relative"],
    ["schedule.kind=auto", "schedule.t2=0.9"],
    ["schedule.kind=piecewise", "schedule.points=[[0, 0], [0.5, 1], [1, 1]]"],
    ["objective.name=trades", "objective.beta=1", "objective.trades_inner=ce"],
])
def test_new_schedules_and_trades_load_and_round_trip(overrides, tmp_path):
    cfg = load_config(None, overrides)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("overrides,message", [
    (["schedule.kind=cosine"], "schedule.kind: unknown ε schedule 'cosine'"),
    (["schedule.kind=linear", "schedule.t2=0.5"], "schedule.t2: the linear ε schedule does not take it"),
    (["schedule.kind=uniform", "schedule.t1=2"], "schedule.t1: the uniform ε schedule does not take it"),
    (["schedule.kind=auto", "schedule.t1=2"], "schedule.t1: the auto ε schedule does not take it (it takes t2, latest_t1)"),
    (["schedule.kind=piecewise"], "piecewise needs points"),
    (["schedule.points=[[0, 0], [1, 1]]"], "schedule.points: the hinge ε schedule does not take it"),
    (["schedule.kind=piecewise", "schedule.points=[[0, 0], [0.5]]"], "[progress, multiplier] pairs"),
    (["schedule.kind=piecewise", "schedule.points=[[0.5, 0], [0.2, 1]]"], "must increase within [0, 1]"),
    (["schedule.kind=piecewise", "schedule.points=[[0, 0], [2, 1]]"], "must increase within [0, 1]"),
    (["schedule.kind=piecewise", "schedule.points=[[0, -1], [1, 1]]"], "multipliers must be >= 0"),
    (["schedule.kind=piecewise", "schedule.points=0.5"], "schedule.points: expected a list"),
    (["schedule.patience=0"], "schedule.patience"),
    (["schedule.latest_t1=0.5"], "schedule.latest_t1: the hinge ε schedule does not take it"),
    (["schedule.kind=auto", "schedule.latest_t1=1.5"], "schedule.latest_t1: a float is a fraction"),
    (["schedule.kind=auto", "data.n_val=0"], "auto watches validation accuracy and needs data.n_val > 0"),
    (["schedule.t1=0.9"], "the ramp ends (t2 = 6 epochs) before it starts (t1 = 7.2 epochs); t2 defaults"),
    (["schedule.kind=warmup", "schedule.t2=0"], None),
    (["schedule.tolerance=-0.1"], "schedule.tolerance"),
    (["schedule.tolerance_mode=percent"], "absolute or relative"),
    (["objective.name=mart"], "choose standard, adversarial, trades"),
    (["objective.beta=-1"], "objective.beta"),
    (["objective.trades_inner=dlr"], "objective.trades_inner"),
])
def test_bad_schedule_and_objective_values_name_the_key(overrides, message):
    if message is None:  # accepted: a zero-length warm-up is fix
        load_config(None, overrides)
        return
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_bad_eps_in_config_mentions_key():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["attack.eps=8"])
    (problem,) = info.value.problems
    assert problem.startswith("attack.eps") and "8/255" in problem


def test_imagefolder_needs_root():
    with pytest.raises(ConfigError, match="data.root"):
        load_config(None, ["data.name=imagefolder"])


def test_non_mapping_config():
    with pytest.raises(ConfigError):
        config_from_dict([1, 2])
    with pytest.raises(ConfigError, match="train"):
        config_from_dict({"train": 3})


def test_list_field_rejects_or_wraps_a_scalar():
    """``eval.eps_grid`` is a list of ε. ``--set eval.eps_grid=8/255`` must either be rejected naming the key
    or become a list; storing the bare float makes the evaluation crash after training (``eval_grid`` calls
    ``list(float)``)."""
    from robustft.api import eval_grid

    try:
        cfg = load_config(None, ["eval.eps_grid=8/255"])
    except ConfigError as err:
        assert any(p.startswith("eval.eps_grid") for p in err.problems)
    else:
        assert isinstance(cfg.eval.eps_grid, list), f"eval.eps_grid stored as {cfg.eval.eps_grid!r}"
        assert eval_grid(cfg)[-1] == 8 / 255


def test_list_given_to_scalar_field_rejected():
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=[3]"])
    with pytest.raises(ConfigError, match="attack.eps"):
        load_config(None, ["attack.eps=[8/255]"])


def test_eps_grid_specs():
    from robustft.config import parse_eps_grid

    assert parse_eps_grid("0:8/255:1/255") == pytest.approx([i / 255 for i in range(9)])
    assert parse_eps_grid("0:0.035:0.01") == pytest.approx([0, 0.01, 0.02, 0.03, 0.035])  # stop included
    assert parse_eps_grid("0, 4/255,8/255") == pytest.approx([0, 4 / 255, 8 / 255])
    for bad in ("0:8/255", "0:8/255:0", "8/255:0:1/255", "0:x:1/255"):
        with pytest.raises(ValueError):
            parse_eps_grid(bad)


def test_eval_attacks_presets_names_and_old_configs():
    from robustft.config import evaluation_name, expand_attacks

    cfg = load_config(None, ["eval.attacks=cheap,apgd-t,apgd-ce"])
    assert cfg.eval.attacks == ["cheap", "apgd-t", "apgd-ce"]
    assert expand_attacks(cfg.eval.attacks) == ["apgd-ce", "apgd-t"]
    assert evaluation_name(cfg.eval) == "apgd-ce+apgd-t"
    assert evaluation_name(cfg.replace("eval", attacks=["strong"], mode="independent").eval) == "autoattack-independent"
    # a config written before eval.attacks existed still loads
    assert config_from_dict({"eval": {"attack": "pgd"}}).eval.attacks == ["pgd"]
    with pytest.raises(ConfigError, match="eval.attacks"):
        load_config(None, ["eval.attacks=cw"])
    with pytest.raises(ConfigError, match="eval.eps_weights"):
        load_config(None, ["eval.eps_weights=[0, 0]"])
    with pytest.raises(ConfigError, match="eval.bootstrap"):
        load_config(None, ["eval.bootstrap=-1"])


# ------------------------------------------------------------------------------------ config files
@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_config_file_is_an_error_not_the_defaults(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.epochs=1"])
    assert str(info.value) == (f"invalid configuration: {path} is empty; write the sections it changes "
                               "(e.g. 'train: {epochs: 8}'), or {} for every default")
    (tmp_path / "defaults.yaml").write_text("{}\n")  # the explicit way to run every default
    assert load_config(tmp_path / "defaults.yaml") == Config()


@pytest.mark.parametrize("text,kind", [("- train\n- eval\n", "list"), ("hello\n", "string"), ("3\n", "number"),
                                       ("true\n", "boolean")])
def test_a_config_file_that_is_not_a_mapping_is_one_line(tmp_path, text, kind):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.epochs=1"])
    assert str(info.value) == (f"invalid configuration: {path} holds a {kind}; a config is a mapping of sections "
                               f"({', '.join(SECTIONS)}), "
                               "e.g. 'train: {epochs: 8}'")
    with pytest.raises(ConfigError) as info:
        apply_overrides([1, 2], ["train.epochs=1"])
    assert str(info.value) == "invalid configuration: the config must be a mapping of sections, got list"


def test_invalid_yaml_is_one_line_with_its_position(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n b: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"invalid configuration: {path} is not valid YAML "
                               "(line 2, column 3: mapping values are not allowed here)")


def test_one_problem_is_one_line_several_are_a_list():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["eval.n=0"])
    assert str(info.value) == "invalid configuration: eval.n: must be positive or null, got 0"
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.batch_size=0", "eval.n=0"])
    assert str(info.value) == ("invalid configuration:\n  - data.batch_size: must be positive, got 0\n"
                               "  - eval.n: must be positive or null, got 0")


# ------------------------------------------------------------------------------------ unknown keys
@pytest.mark.parametrize("override,problem", [
    ("optim.learnig_rate=0.1", "unknown key 'optim.learnig_rate' (did you mean 'lr'?)"),
    ("optim.learning_rate=0.1", "unknown key 'optim.learning_rate' (did you mean 'lr'?)"),
    ("optim.weight_decy=0.1", "unknown key 'optim.weight_decy' (did you mean 'weight_decay'?)"),
    ("attack.epsilon=8/255", "unknown key 'attack.epsilon' (did you mean 'eps'?)"),
    ("optim.epochs=3", "unknown key 'optim.epochs' (did you mean 'train.epochs'?)"),
    ("trian.epochs=3", "unknown section 'trian' (did you mean 'train'?)"),
    ("evaluation.n=5", "unknown section 'evaluation' (did you mean 'eval'?)"),
    ("optimizer.lr=0.1", "unknown section 'optimizer' (did you mean 'optim'?)"),
    ("optim.zzz=1", "unknown key 'optim.zzz' (known: lr, head_lr, weight_decay, head_weight_decay, beta1, beta2, "
                    "warmup_epochs, min_lr_ratio, grad_clip)"),
])
def test_unknown_keys_and_sections_suggest_the_closest_known_one(override, problem):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.problems == [problem]


def test_unknown_section_in_a_file_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optimiser:\n  lr: 0.1\n1: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ["unknown section 'optimiser' (did you mean 'optim'?)",
                                   f"unknown section '1' (known: {', '.join(SECTIONS)})"]


# ------------------------------------------------------------------------------------ ε grid and weights
def test_an_unsorted_grid_keeps_each_weight_with_its_eps():
    cfg = load_config(None, ["eval.eps_grid=[8/255, 0, 4/255]", "eval.eps_weights=[1, 0, 0]"])
    assert cfg.eval.eps_grid == [0.0, 4 / 255, 8 / 255] and cfg.eval.eps_weights == [0.0, 0.0, 1.0]
    # a grid without 0 given one weight more: the first is ε = 0's (the evaluator adds that point)
    cfg = load_config(None, ["eval.eps_grid=[8/255, 4/255]", "eval.eps_weights=[5, 1, 0]"])
    assert cfg.eval.eps_grid == [0.0, 4 / 255, 8 / 255] and cfg.eval.eps_weights == [5.0, 0.0, 1.0]
    assert load_config(None, ["eval.eps_grid=[8/255, 0]"]).eval.eps_grid == [8 / 255, 0.0]  # no weights: as given


@pytest.mark.parametrize("grid,weights,points", [
    ("[8/255, 4/255]", "[1, 0]", "[0/255, 4/255, 8/255] has 3, got 2"),
    ("[0, 4/255, 4/255]", "[1, 0, 1]", "[0/255, 4/255] has 2, got 3"),
    ("[0, 4/255]", "[1, 0, 1]", "[0/255, 4/255] has 2, got 3"),
])
def test_weights_that_do_not_match_the_grid_are_refused(grid, weights, points):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"eval.eps_grid={grid}", f"eval.eps_weights={weights}"])
    assert info.value.problems == [f"eval.eps_weights: give one weight per ε of eval.eps_grid, ε = 0 included, "
                                   f"each ε once: the grid {points} weights"]


def test_e_adv_of_an_unsorted_grid_with_weights_equals_the_sorted_one():
    import torch

    from robustft.attacks import PGD
    from robustft.eval import evaluate

    from helpers import toy_image_mlp, toy_images

    model = toy_image_mlp()
    attack = PGD(num_steps=5, random_start=False, rel_step_size=0.1, select="misclassified")

    def e_adv(grid: str, weights: str):
        cfg = load_config(None, [f"eval.eps_grid={grid}", f"eval.eps_weights={weights}"]).eval
        return evaluate(model, toy_images(40, seed=5, classes=4), cfg.eps_grid, {"pgd": attack},
                        device=torch.device("cpu"), image_size=8, batch_size=16, weights=cfg.eps_weights,
                        bootstrap=0)

    unsorted, ordered = e_adv("[8/255, 0, 4/255]", "[1, 0, 0]"), e_adv("[0, 4/255, 8/255]", "[0, 0, 1]")
    assert unsorted.weights == ordered.weights == [0.0, 0.0, 1.0]
    assert unsorted.expected == ordered.expected
    assert unsorted.expected == pytest.approx(unsorted.adv)  # all weight at 8/255: E.adv is the accuracy there
    assert unsorted.adv < unsorted.clean, "the test needs a model the attack partly breaks"
