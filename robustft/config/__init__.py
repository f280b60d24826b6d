"""Run configuration: frozen dataclasses per section, YAML load/save, ``--set`` overrides, validation.

A config file is YAML with one mapping per section (``data``, ``model``, ``finetune``, ``attack``, ``objective``,
``schedule``, ``optim``, ``train``, ``eval``); every key is optional and falls back to the defaults in
:mod:`robustft.config.sections`. ε values are in pixel units (images live in [0, 1]) and may be written
``8/255`` or ``0.0314``.
"""

from robustft.config.eps import format_eps, parse_eps, parse_eps_grid
from robustft.config.io import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    read_config_file,
    save_config,
)
from robustft.config.registry import (
    BACKBONES,
    DATASETS,
    EVAL_ATTACKS,
    HEAD_STARTS,
    OBJECTIVES,
    SCHEDULES,
    TRAIN_ATTACKS,
    TUNE_MODES,
    Entry,
    Registry,
    backbone_source,
    is_clean_objective,
)
from robustft.config.sections import (
    EPS_KEYS,
    EVAL_MODES,
    EVAL_PRESET_SETTINGS,
    EVAL_PRESETS,
    PAPER_DATASETS,
    SECTIONS,
    AttackConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    EvalSettings,
    FinetuneConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    evaluation_name,
    expand_attacks,
)
from robustft.config.validate import (
    hinges_in_epochs,
    hinges_in_range,
    points_problems,
    to_epochs,
    validate,
)

__all__ = ["BACKBONES", "DATASETS", "EPS_KEYS", "EVAL_ATTACKS", "EVAL_MODES", "EVAL_PRESETS", "EVAL_PRESET_SETTINGS", "HEAD_STARTS", "OBJECTIVES", "PAPER_DATASETS",
           "SCHEDULES", "SECTIONS", "TRAIN_ATTACKS", "TUNE_MODES", "Entry", "Registry", "backbone_source", "hinges_in_range",
           "is_clean_objective",
           "points_problems", "AttackConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "EvalSettings",
           "FinetuneConfig", "ModelConfig", "ObjectiveConfig", "OptimConfig", "ScheduleConfig", "TrainConfig", "apply_overrides",
           "config_from_dict", "config_to_dict", "evaluation_name", "expand_attacks", "format_eps",
           "hinges_in_epochs", "load_config", "parse_eps", "parse_eps_grid", "read_config_file", "save_config",
           "to_epochs", "validate"]
