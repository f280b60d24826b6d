"""Dependencies are ranges, so installing robustft keeps a user's torch; constraints.txt pins the versions the
tests run with, each inside its range, and scripts/setup.sh installs with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> list[tuple[str, Requirement]]:
    """Every requirement of pyproject.toml with its group: "main" or the name of the extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"main": project["dependencies"], **project["optional-dependencies"]}
    return [(group, Requirement(line)) for group, lines in groups.items() for line in lines]


def constraint_lines() -> list[str]:
    """The lines of constraints.txt without comments and blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines())
    return [line for line in lines if line]


def pins() -> dict[str, Version]:
    """constraints.txt as canonical package name → pinned version."""
    out = {}
    for line in constraint_lines():
        req = Requirement(line)
        (spec,) = req.specifier
        out[canonicalize_name(req.name)] = Version(spec.version)
    return out


REQUIREMENTS = requirements()
IDS = [f"{group}:{req.name}" for group, req in REQUIREMENTS]


def test_every_group_is_read():
    groups = {group for group, _ in REQUIREMENTS}
    assert {"main", "test", "tune", "clip"} <= groups
    assert {"torch", "torchvision", "pyautoattack"} <= {canonicalize_name(r.name) for _, r in REQUIREMENTS}


@pytest.mark.parametrize(("group", "req"), REQUIREMENTS, ids=IDS)
def test_no_dependency_is_pinned_exactly(group, req):
    assert "==" not in str(req), f"{group}: {req} pins an exact version; give a range (pins go in constraints.txt)"
    assert all(spec.operator not in ("==", "===") for spec in req.specifier)


@pytest.mark.parametrize(("group", "req"), REQUIREMENTS, ids=IDS)
def test_every_dependency_is_a_bounded_range(group, req):
    operators = {spec.operator for spec in req.specifier}
    assert ">=" in operators, f"{group}: {req} has no lower bound (the oldest version the code works with)"
    assert "<" in operators, f"{group}: {req} has no upper bound (the next major release may break it)"


def test_constraints_are_exact_pins_one_per_package():
    lines = constraint_lines()
    names = [canonicalize_name(Requirement(line).name) for line in lines]
    assert len(names) == len(set(names)), f"a package appears twice in constraints.txt: {sorted(names)}"
    for line in lines:
        req = Requirement(line)
        assert not req.extras and req.marker is None, f"constraints.txt: {line!r} must be NAME==VERSION"
        assert [spec.operator for spec in req.specifier] == ["=="], f"constraints.txt: {line!r} is not an exact pin"


@pytest.mark.parametrize(("group", "req"), REQUIREMENTS, ids=IDS)
def test_constraints_pin_every_dependency_inside_its_range(group, req):
    pinned = pins()
    name = canonicalize_name(req.name)
    assert name in pinned, f"{group}: {req.name} has no line in constraints.txt"
    assert req.specifier.contains(pinned[name], prereleases=True), (
        f"constraints.txt pins {req.name}=={pinned[name]}, outside its range {req.specifier} in pyproject.toml")


def test_torch_and_torchvision_are_a_matching_pair():
    # torchvision 0.(15+k) is built for torch 2.k, in the pins and at the lower bounds of the ranges
    pinned = pins()
    assert pinned["torchvision"].minor == pinned["torch"].minor + 15
    lower = {canonicalize_name(r.name): Version(s.version) for _, r in REQUIREMENTS for s in r.specifier
             if s.operator == ">="}
    assert lower["torchvision"].minor == lower["torch"].minor + 15


def test_setup_installs_with_the_constraints():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    installs = [line for line in setup.splitlines() if re.search(r"pip install .*-e ", line)]
    assert installs, "scripts/setup.sh installs robustft nowhere"
    assert all(re.search(r"\s-c constraints\.txt(\s|$)", line) for line in installs), installs
    (stamp_hash,) = [line for line in setup.splitlines() if line.startswith("hash=")]
    assert "pyproject.toml" in stamp_hash and "constraints.txt" in stamp_hash, (
        f"the install stamp must change with both files: {stamp_hash}")
