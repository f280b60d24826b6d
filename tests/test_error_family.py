"""One family of errors: what a user can fix is a UserError (one line from the CLI, exit code 2); anything else
is a bug and keeps its traceback."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import robustft
import robustft.cli as cli
import robustft.errors as errors
from robustft.cli import main
from robustft.errors import ConfigError, UserError

FAMILY = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
          if issubclass(cls, BaseException) and cls.__module__ == errors.__name__]
"""Every exception class of robustft/errors.py, UserError included."""

BUILTIN_EXCEPTIONS = {cls for cls in vars(builtins).values() if isinstance(cls, type) and issubclass(cls, BaseException)}


def _robustft_exceptions() -> set[type]:
    """Every exception class defined anywhere in robustft (all its modules imported)."""
    found = set()
    for info in pkgutil.walk_packages(robustft.__path__, "robustft."):
        if info.name == "robustft.__main__":  # runs the command line when imported
            continue
        module = importlib.import_module(info.name)
        found |= {cls for _, cls in inspect.getmembers(module, inspect.isclass)
                  if issubclass(cls, BaseException) and cls.__module__.startswith("robustft")}
    return found


def test_every_exception_of_robustft_is_a_user_error_that_is_also_a_builtin():
    assert UserError in FAMILY and len(FAMILY) > 10
    for cls in FAMILY:
        assert cls is UserError or issubclass(cls, UserError), cls
        builtin = [b for b in cls.__mro__[1:] if b in BUILTIN_EXCEPTIONS and b not in (Exception, BaseException)]
        assert cls is UserError or builtin, f"{cls.__name__} also derives from no built-in exception it replaces"
    # internal failures are built-in exceptions: every class robustft defines is advice, and lives in errors.py
    assert {cls.__name__ for cls in _robustft_exceptions()} == {cls.__name__ for cls in FAMILY}
    assert _robustft_exceptions() == set(FAMILY)


def test_the_old_names_are_the_family():
    from robustft.api import RunExistsError
    from robustft.config import ConfigError as ConfigConfigError
    from robustft.experiments.tune import TuneError
    from robustft.models.fold import NotFoldableError
    from robustft.train import NonFiniteLossError

    assert ConfigConfigError is ConfigError and RunExistsError is errors.RunExistsError
    assert TuneError is errors.TuneError and NotFoldableError is errors.NotFoldableError
    assert NonFiniteLossError is errors.NonFiniteLossError


# ------------------------------------------------------------------ the command line
def _raising(err: BaseException):
    def command(*args):
        raise err
    return command


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_each_user_error_is_one_line_and_exit_code_2(cls, tmp_path, monkeypatch, capsys):
    err = cls("the advice: set train.epochs to 4")
    monkeypatch.setattr(cli, "results_table", _raising(err))
    assert main(["table", str(tmp_path)]) == 2
    out, stderr = capsys.readouterr()
    assert stderr == f"error: {err}\n" and "Traceback" not in stderr and out == ""
    assert main(["--debug", "table", str(tmp_path)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("Traceback (most recent call last):") and stderr.endswith(f"\nerror: {err}\n")


def test_a_config_error_of_one_problem_is_one_line():
    assert str(ConfigError("train.epochs: must be >= 1, got 0")) == (
        "invalid configuration: train.epochs: must be >= 1, got 0")


@pytest.mark.parametrize("err", [ValueError("shape mismatch"), ImportError("cannot import name 'x'"),
                                 FileNotFoundError("/tmp/cache/x.bin"), RuntimeError("a bug")],
                         ids=lambda e: type(e).__name__)
def test_an_internal_error_keeps_its_traceback(err, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "results_table", _raising(err))
    with pytest.raises(type(err), match=str(err)):
        main(["table", str(tmp_path)])
    assert "error:" not in capsys.readouterr().err  # not turned into a user error


def test_python_m_robustft_prints_the_traceback_of_an_internal_error(tmp_path):
    code = ("import sys, robustft.cli as cli\n"
            "def table(*args):\n    raise ValueError('shape mismatch')\n"
            "cli.results_table = table\n"
            f"sys.exit(cli.main(['table', {str(tmp_path)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert done.stderr.rstrip().endswith("ValueError: shape mismatch") and "error: " not in done.stderr


# ------------------------------------------------------------------ real mistakes, one line each
@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  out_dir: {tmp_path / 'runs'}\n")
    return path


def _one_line(args, capsys) -> str:
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err and out == ""
    return err


def test_a_config_file_that_does_not_exist(tmp_path, capsys):
    assert _one_line(["train", str(tmp_path / "nope.yaml")], capsys) == (
        f"error: config file not found: {tmp_path / 'nope.yaml'}\n")


def test_a_bad_set_value(config_file, tmp_path, capsys):
    assert _one_line(["train", str(config_file), "--set", "attack.eps=8"], capsys) == (
        "error: invalid configuration: attack.eps: ε = 8 is out of range [0, 1] (pixel units: images are in "
        "[0, 1]); did you mean 8/255?\n")
    assert not (tmp_path / "runs").exists()


def test_a_bad_flag_value(config_file, tmp_path, capsys):
    err = _one_line(["eval", str(tmp_path / "runs" / "x"), "--eps-grid", "0:8"], capsys)
    assert err == "error: invalid configuration: ε grid '0:8': expected START:STOP:STEP such as 0:8/255:1/255, " \
                  "or a comma list\n"
    err = _one_line(["tune", str(config_file), "--lr-range", "1e-3"], capsys)
    assert err == "error: invalid configuration: --lr-range: expected LOW,HIGH such as 1e-5,1e-1, got '1e-3'\n"
    assert _one_line(["demo", "--out", str(tmp_path / "demo"), "--seeds", "0"], capsys) == (
        "error: invalid configuration: seeds: at least 1, got 0\n")


def test_table_of_a_folder_that_is_not_a_run_directory(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    err = _one_line(["table", str(tmp_path / "notes")], capsys)
    assert str(tmp_path / "notes") in err and "not a run directory" in err
