"""ε in pixel units: parsing ``8/255``-style values without ``eval``, writing them back, and ε grids."""

from __future__ import annotations

import math
import re
from typing import Any


def parse_eps(value: Any) -> float:
    """Parse an ε in pixel units from ``8/255``, ``"0.03"`` or a number, without ``eval``.

    Raises:
        ValueError: the value is not a number or fraction, is negative, or exceeds 1 (pixel units); the
            message says what to write instead.
    """
    if isinstance(value, bool):
        raise ValueError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
    if isinstance(value, (int, float)):
        eps = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+)\s*)?", value)
        if not m:
            raise ValueError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
        num, den = float(m.group(1)), float(m.group(2)) if m.group(2) else 1.0
        if den == 0:
            raise ValueError(f"ε {value!r} divides by zero")
        eps = num / den
    else:
        raise ValueError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
    if not math.isfinite(eps):
        raise ValueError(f"ε must be a finite number like 8/255 or 0.031, got {value!r}")
    if eps < 0:
        positive = value.strip().lstrip("-").strip() if isinstance(value, str) else repr(-value)
        raise ValueError(f"ε = {value!r} is negative; ε is a radius in [0, 1] (pixel units): "
                         f"write {positive} instead")
    if eps > 1:
        shown = f"{value!r} = {eps:.4g}" if isinstance(value, str) and "/" in value else repr(value)
        raise ValueError(f"ε = {shown} is out of range [0, 1] (pixel units: images are in [0, 1]); "
                         f"{_suggest(value, eps)}")
    return eps + 0.0  # -0.0 becomes 0.0


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
        ValueError: the spec is malformed, a value is not an ε, or the step is not positive.
    """
    parts = spec.split(":") if ":" in spec else [v for v in spec.split(",") if v.strip()]
    if ":" in spec and len(parts) != 3:
        raise ValueError(f"ε grid {spec!r}: expected START:STOP:STEP such as 0:8/255:1/255, or a comma list")
    try:
        values = [parse_eps(v) for v in parts]
    except ValueError as err:
        raise ValueError(f"ε grid {spec!r}: {err}") from None
    if ":" not in spec:
        return values
    start, stop, step = values
    if step <= 0 or stop < start:
        raise ValueError(f"ε grid {spec!r}: need STEP > 0 and STOP >= START")
    k = int((stop - start) / step + 1e-9)
    grid = [start + i * step for i in range(k + 1)]
    return grid if stop - grid[-1] <= 1e-12 else grid + [stop]
