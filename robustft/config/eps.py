"""ε in pixel units: parsing ``8/255``-style values without ``eval``, writing them back, and ε grids."""

from __future__ import annotations

import re
from typing import Any


def parse_eps(value: Any) -> float:
    """Parse an ε in pixel units from ``8/255``, ``"0.03"`` or a number, without ``eval``.

    Raises:
        ValueError: the value is not a number or fraction, is negative, or exceeds 1 (pixel units).
    """
    if isinstance(value, bool):
        raise ValueError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
    if isinstance(value, (int, float)):
        eps = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+)\s*)?", value)
        if not m:
            raise ValueError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
        num, den = float(m.group(1)), float(m.group(2)) if m.group(2) else 1.0
        if den == 0:
            raise ValueError(f"ε {value!r} divides by zero")
        eps = num / den
    else:
        raise ValueError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
    if eps < 0:
        raise ValueError(f"ε must be >= 0, got {value!r}")
    if eps > 1:
        raise ValueError(
            f"ε = {value!r} is larger than 1, but ε is in pixel units (images in [0, 1]); "
            f"did you mean {value}/255?"
        )
    return eps


def format_eps(eps: float) -> str | float:
    """Write ε as ``k/255`` when it is one exactly (round-trips through :func:`parse_eps`)."""
    k = round(eps * 255, 6)
    if k == int(k) and int(k) / 255 == eps:
        return f"{int(k)}/255"
    return eps



def parse_eps_grid(spec: str) -> list[float]:
    """``START:STOP:STEP`` (STOP included), e.g. ``0:8/255:1/255``, or a comma list ``0,4/255,8/255``.

    Raises:
        ValueError: the spec is malformed or the step is not positive.
    """
    if ":" not in spec:
        return [parse_eps(v) for v in spec.split(",") if v.strip()]
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"ε grid {spec!r}: expected START:STOP:STEP such as 0:8/255:1/255, or a comma list")
    start, stop, step = (parse_eps(v) for v in parts)
    if step <= 0 or stop < start:
        raise ValueError(f"ε grid {spec!r}: need STEP > 0 and STOP >= START")
    k = int((stop - start) / step + 1e-9)
    grid = [start + i * step for i in range(k + 1)]
    return grid if stop - grid[-1] <= 1e-12 else grid + [stop]


