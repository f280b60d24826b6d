"""ε in pixel units: parsing ``8/255``-style values without ``eval``, writing them back, and ε grids."""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from robustft.errors import ConfigError


def parse_eps(value: Any) -> float:
    """Parse an ε in pixel units from ``8/255``, ``"0.03"`` or a number, without ``eval``.

    Raises:
        ConfigError: the value is not a number or fraction, is negative, or exceeds 1 (pixel units); the
            message says what to write instead.
    """
    if isinstance(value, bool):
        raise ConfigError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
    if isinstance(value, (int, float)):
        eps = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+)\s*)?", value)
        if not m:
            raise ConfigError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
        num, den = float(m.group(1)), float(m.group(2)) if m.group(2) else 1.0
        if den == 0:
            raise ConfigError(f"ε {value!r} divides by zero")
        eps = num / den
    else:
        raise ConfigError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
    if not math.isfinite(eps):
        raise ConfigError(f"ε must be a finite number like 8/255 or 0.031, got {value!r}")
    if eps < 0:
        positive = value.strip().lstrip("-").strip() if isinstance(value, str) else repr(-value)
        raise ConfigError(f"ε = {value!r} is negative; ε is a radius in [0, 1] (pixel units): "
                          f"write {positive} instead")
    if eps > 1:
        shown = f"{value!r} = {eps:.4g}" if isinstance(value, str) and "/" in value else repr(value)
        raise ConfigError(f"ε = {shown} is out of range [0, 1] (pixel units: images are in [0, 1]); "
                          f"{_suggest(value, eps)}")
    return eps + 0.0  # -0.0 becomes 0.0


def eps_argument(value: Any, key: str) -> float:
    """``value`` checked and parsed as an ε by the config's rule (:func:`parse_eps`): the Python API's check of
    an ε argument, e.g. ``eps_argument(8, "eps")`` raises "eps: ε = 8 is out of range [0, 1] ...; did you mean
    8/255?".

    Raises:
        ConfigError: the value is not an ε; the message starts with ``key`` and says what to write instead.
    """
    try:
        return parse_eps(value)
    except ValueError as err:
        raise ConfigError(f"{key}: {_reason(err)}") from None


def _reason(err: ValueError) -> str:
    """The message of a refused ε without the ``invalid configuration:`` prefix of a :class:`ConfigError`."""
    return "; ".join(err.problems) if isinstance(err, ConfigError) else str(err)


def eps_grid_argument(values: Sequence[Any] | str, key: str = "eps_grid") -> list[float]:
    """An ε grid argument checked by the config's rule: a list of ε (each as :func:`parse_eps` takes it) or a
    ``START:STOP:STEP`` / comma-list string (:func:`parse_eps_grid`).

    Raises:
        ConfigError: listing every value that is not an ε, each naming ``key`` and its position.
    """
    if isinstance(values, str):
        try:
            return parse_eps_grid(values)
        except ValueError as err:
            raise ConfigError(f"{key}: {_reason(err)}") from None
    if not isinstance(values, Sequence) and not hasattr(values, "__iter__"):
        raise ConfigError(f"{key}: expected a list of ε such as [0, 4/255, 8/255], got {values!r}")
    grid, problems = [], []
    for i, value in enumerate(values):
        try:
            grid.append(parse_eps(value.item() if hasattr(value, "item") else value))
        except ValueError as err:
            problems.append(f"{key}[{i}]: {_reason(err)}")
    if problems:
        raise ConfigError(problems)
    return grid


def _suggest(value: Any, eps: float) -> str:
    """What to write for an ε above 1: ``N/255`` when a plain number N ≤ 255 was given, else the rule."""
    plain = not (isinstance(value, str) and "/" in value)
    if plain and eps <= 255:
        return f"did you mean {format_eps(eps / 255)}?" if eps == int(eps) else f"did you mean {eps:g}/255?"
    return "write it as k/255 with k at most 255, e.g. 8/255"


def format_eps(eps: float) -> str | float:
    """Write ε as ``k/255`` when it is one exactly (round-trips through :func:`parse_eps`)."""
    k = round(eps * 255, 6)
    if k == int(k) and int(k) / 255 == eps:
        return f"{int(k)}/255"
    return eps


def parse_eps_grid(spec: str) -> list[float]:
    """``START:STOP:STEP`` (STOP included), e.g. ``0:8/255:1/255``, or a comma list ``0,4/255,8/255``.

    Raises:
        ConfigError: the spec is malformed, a value is not an ε, or the step is not positive.
    """
    parts = spec.split(":") if ":" in spec else [v for v in spec.split(",") if v.strip()]
    if ":" in spec and len(parts) != 3:
        raise ConfigError(f"ε grid {spec!r}: expected START:STOP:STEP such as 0:8/255:1/255, or a comma list")
    try:
        values = [parse_eps(v) for v in parts]
    except ConfigError as err:
        raise ConfigError(f"ε grid {spec!r}: {'; '.join(err.problems)}") from None
    if ":" not in spec:
        return values
    start, stop, step = values
    if step <= 0 or stop < start:
        raise ConfigError(f"ε grid {spec!r}: need STEP > 0 and STOP >= START")
    k = int((stop - start) / step + 1e-9)
    grid = [start + i * step for i in range(k + 1)]
    return grid if stop - grid[-1] <= 1e-12 else grid + [stop]
