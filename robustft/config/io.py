"""Reading and writing configs: nested dicts and YAML files, ``--set`` overrides, type coercion."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from robustft.config.eps import format_eps, parse_eps
from robustft.config.registry import OBJECTIVES, SCHEDULES, TRAIN_ATTACKS
from robustft.config.sections import EPS_KEYS, SECTIONS, Config, ConfigError
from robustft.config.validate import validate
from robustft.errors import MissingFileError

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""Decimal and scientific notation (1e-4, 1E-4, .5, 2.): YAML 1.1 reads some of these as strings."""


def _as_float(value: Any) -> Any:
    """``value`` as a float when it is a number or a string in decimal or scientific notation, else unchanged."""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip().replace("_", "")):
        return float(value.strip().replace("_", ""))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _number(value: Any, key: str) -> float:
    """A list element that must be a number, as a float."""
    out = _as_float(value)
    if not isinstance(out, float):
        raise ConfigError(f"{key}: expected a list of numbers, got {value!r}")
    return out


def _allowed_types(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _coerce(value: Any, annotation: Any, key: str, is_eps: bool) -> Any:
    """Check ``value`` against a field's annotation, converting where it is lossless."""
    allowed = _allowed_types(annotation)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{key}: null is not allowed here")
    if any(typing.get_origin(t) is list for t in allowed):
        if isinstance(value, str) and list[str] in allowed:  # "apgd-ce,autoattack"
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list such as [0, 4/255, 8/255], got {value!r}")
        if is_eps:
            return [parse_eps(v) for v in value]
        if list[float] in allowed:
            return [_number(v, key) for v in value]
        if list[list[float]] in allowed:
            return [[_number(u, key) for u in v] if isinstance(v, (list, tuple)) else v for v in value]
        return list(value)
    if is_eps:
        return parse_eps(value)
    if bool in allowed and isinstance(value, bool):
        return value
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if float in allowed and isinstance(_as_float(value), float):
        return _as_float(value)
    if str in allowed and isinstance(value, str):
        return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed if t is not type(None))
    raise ConfigError(f"{key}: expected {names}, got {value!r}")


_ALIASES: dict[str, dict[str, str]] = {
    "": {"evaluation": "eval", "dataset": "data", "optimizer": "optim", "optimiser": "optim", "loss": "objective",
         "training": "train"},
    "data": {"dataset": "name", "resolution": "image_size", "img_size": "image_size", "workers": "num_workers"},
    "model": {"arch": "name", "backbone": "name", "classes": "num_classes", "dropout": "drop_rate"},
    "attack": {"epsilon": "eps", "steps": "num_steps", "step_size": "rel_step_size"},
    "schedule": {"type": "kind"},
    "optim": {"learning_rate": "lr", "wd": "weight_decay", "max_grad_norm": "grad_clip", "warmup": "warmup_epochs"},
    "train": {"num_epochs": "epochs", "max_epochs": "epochs", "output_dir": "out_dir"},
    "eval": {"epsilons": "eps_grid", "steps": "num_steps"},
}
"""Names other libraries use for a key (section ``""``: the section names), so a typo of them finds ours."""


KIND_REGISTRIES = {"schedule": SCHEDULES, "objective": OBJECTIVES, "attack": TRAIN_ATTACKS}
"""The sections whose kind's registry entry may add keys of its own (held in the section's ``options``)."""


def _own_keys(section: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The keys of their own that the kind named in ``values`` (or the section's default kind) adds to
    ``section``, with their defaults; {} for a section without kinds or a kind not registered."""
    registry = KIND_REGISTRIES.get(section)
    if registry is None:
        return {}
    field = registry.key.split(".")[1]
    name = values.get(field, getattr(cls(), field))
    if not isinstance(name, str) or name not in registry:
        return {}
    entry = registry[name]
    return {k: entry.defaults[k] for k in registry.own_keys(entry)}


def _unknown_key(key: str, known: list[str], kinds: str | None = None) -> str:
    """``unknown key 'optim.learnig_rate' (did you mean 'lr'?)``: the closest known name of the same level.

    A key that exists as such in another section is suggested there (``optim.epochs``: ``train.epochs``); a key
    of its own of another kind of the section (``kinds``) names that kind; a name close to none is answered with
    the list of known ones.
    """
    section, _, name = str(key).rpartition(".")
    registry = KIND_REGISTRIES.get(kinds or "")
    if registry is not None and registry.owners(name):
        return (f"{key}: the key of the {' and '.join(registry.owners(name))} {registry.what}, not of the "
                f"{registry.key} this config chose; set {registry.key} or remove it")
    elsewhere = [f"{s}.{name}" for s, cls in SECTIONS.items() if section and s != section
                 and name in typing.get_type_hints(cls)]
    aliases = _ALIASES.get(section, {})
    close = difflib.get_close_matches(name, known + list(aliases), n=1)
    if elsewhere:
        hint = f"did you mean {elsewhere[0]!r}?"
    elif close:
        hint = f"did you mean {aliases.get(close[0], close[0])!r}?"
    else:
        hint = f"known: {', '.join(known)}"
    return f"unknown {'key' if section else 'section'} {str(key)!r} ({hint})"


def _pair_grid_and_weights(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``eval`` values with ``eps_grid`` sorted ascending and ``eps_weights`` sorted along, each weight staying
    with its ε: the evaluator walks the grid upward, so ``[8/255, 0, 4/255]`` with ``[1, 0, 0]`` weighs 8/255.

    A grid without 0 given one weight more than it has ε takes the first weight for ε = 0 (the evaluator adds
    that point); any other count is left for :func:`validate` to report.
    """
    grid, weights = kwargs.get("eps_grid"), kwargs.get("eps_weights")
    if not grid or weights is None:
        return kwargs
    if 0.0 not in grid and len(weights) == len(grid) + 1:
        grid = [0.0, *grid]
    if len(weights) != len(grid):
        return kwargs
    pairs = sorted(zip(grid, weights), key=lambda pair: pair[0])
    return {**kwargs, "eps_grid": [e for e, _ in pairs], "eps_weights": [w for _, w in pairs]}


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Read configs written by earlier versions: ``eval.attack: NAME`` became ``eval.attacks: [NAME]``."""
    ev = raw.get("eval")
    if isinstance(ev, dict) and "attack" in ev and "attacks" not in ev:
        ev = {k: v for k, v in ev.items() if k != "attack"} | {"attacks": [ev["attack"]]}
        raw = {**raw, "eval": ev}
    return raw


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested dicts; raises :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError([f"the config must be a mapping of sections, got {_kind(raw)}"])
    sections: dict[str, Any] = {}
    for name, values in _migrate(raw).items():
        if name not in SECTIONS:
            problems.append(_unknown_key(name, list(SECTIONS)))
            continue
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(f"{name}: expected a mapping of keys, got {values!r}")
            continue
        cls = SECTIONS[name]
        hints = {k: v for k, v in typing.get_type_hints(cls).items() if k != "options"}
        kwargs: dict[str, Any] = {}
        own = _own_keys(name, cls, values)
        for key, value in values.items():
            if key in own:
                kwargs.setdefault("options", {})[key] = value
                continue
            if key not in hints:
                problems.append(_unknown_key(f"{name}.{key}", list(hints), name))
                continue
            try:
                kwargs[key] = _coerce(value, hints[key], f"{name}.{key}", (name, key) in EPS_KEYS)
            except ConfigError as err:
                problems += [msg if msg.startswith(f"{name}.{key}") else f"{name}.{key}: {msg}" for msg in err.problems]
        if own:  # the kind's own keys, its defaults where the config leaves them out
            kwargs["options"] = {**own, **kwargs.get("options", {})}
        sections[name] = cls(**(_pair_grid_and_weights(kwargs) if name == "eval" else kwargs))
    try:  # values that parsed are validated too, so one error message lists every problem
        validate(Config(**sections))
    except ConfigError as err:
        problems += err.problems
    if problems:
        raise ConfigError(problems)
    return Config(**sections)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars) to a nested dict copy."""
    if not isinstance(raw, dict):
        raise ConfigError([f"the config must be a mapping of sections, got {_kind(raw)}"])
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            problems.append(f"--set {item!r}: expected section.key=value, e.g. attack.eps=8/255")
            continue
        section, name = parts
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        out.setdefault(section, {})
        if isinstance(out[section], dict):
            out[section][name] = parsed
        else:
            out[section] = {name: parsed}
    if problems:
        raise ConfigError(problems)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``--set`` overrides.

    Raises:
        MissingFileError: ``path`` is not a file.
        ConfigError: the file is empty, not YAML or not a mapping of sections, or the config is invalid.
    """
    raw = {} if path is None else read_config_file(Path(path))
    return config_from_dict(apply_overrides(raw, overrides or []))


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping of sections in a YAML config file, unvalidated; an empty file is an error, not the defaults."""
    if not path.is_file():
        raise MissingFileError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None) or str(err)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError([f"{path} is not valid YAML ({where}{' '.join(problem.split())})"]) from None
    if raw is None:
        raise ConfigError([f"{path} is empty; write the sections it changes (e.g. 'train: {{epochs: 8}}'), "
                           "or {} for every default"])
    if not isinstance(raw, dict):
        raise ConfigError([f"{path} holds a {_kind(raw)}; a config is a mapping of sections "
                           f"({', '.join(SECTIONS)}), e.g. 'train: {{epochs: 8}}'"])
    return raw


def _kind(value: Any) -> str:
    """A YAML value's kind in words: list, string, number, ..."""
    names = {"list": "list", "str": "string", "int": "number", "float": "number", "bool": "boolean"}
    return names.get(type(value).__name__, type(value).__name__)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain dict of a config; ε values written as ``k/255`` where exact."""
    out = dataclasses.asdict(cfg)
    for values in out.values():  # a kind's own keys are written flat in their section, as a config writes them
        if isinstance(values, dict) and "options" in values:
            values.update(values.pop("options"))
    for section, key in EPS_KEYS:
        v = out[section][key]
        out[section][key] = [format_eps(x) for x in v] if isinstance(v, list) else (
            None if v is None else format_eps(v))
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML; :func:`load_config` on it gives an equal config."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
