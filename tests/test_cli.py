"""The command line end to end on a tiny run: train, resume, eval, table, errors."""

from __future__ import annotations

import json

import pytest

from robustft.cli import main


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("objective:\n  name: adversarial\nattack:\n  eps: 8/255\n")
    return path


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def test_train_eval_table(config_file, tiny_overrides, tmp_path, capsys):
    assert main(["train", str(config_file), *_sets(tiny_overrides)]) == 0
    out = capsys.readouterr().out
    assert "| tiny | hinge | 8/255 |" in out and "run directory:" in out
    run = tmp_path / "runs" / "tiny"
    assert (run / "DONE").exists()

    capsys.readouterr()
    assert main(["eval", str(run / "checkpoints" / "last.pt"), "--eps-grid", "0:4/255:2/255", "--n", "16",
                 "--attacks", "apgd-ce,apgd-t", "--set", "eval.check_queries=20"]) == 0
    out = capsys.readouterr().out
    assert "broken by apgd-t" in out and "E.adv" in out and "95 % CI" in out and "Sanity checks" in out
    rob = json.loads((run / "eval" / "apgd-ce+apgd-t" / "robustness.json").read_text())
    assert rob["n"] == 16 and [c["eps"] for c in rob["curve"]] == ["0/255", "2/255", "4/255"]
    assert [a["name"] for a in rob["protocol"]["attacks"]] == ["apgd-ce", "apgd-t"]
    assert not (run / "eval" / "apgd-ce+apgd-t" / "partial.npz").exists()
    assert main(["eval", str(run), "--eps-grid", "0,2/255", "--n", "8", "--mode", "independent", "--no-checks",
                 "--name", "quick"]) == 0
    rob = json.loads((run / "eval" / "quick" / "robustness.json").read_text())
    assert rob["n"] == 8 and rob["flags"] == [] and rob["protocol"]["mode"] == "independent"
    capsys.readouterr()
    assert main(["table", str(run)]) == 0
    assert "| apgd-ce |" in capsys.readouterr().out  # the run's own evaluation
    assert main(["table", str(run), "--eval", "apgd-ce+apgd-t"]) == 0
    assert "| apgd-ce+apgd-t |" in capsys.readouterr().out
    assert main(["table", str(run), "--eval", "quick"]) == 0
    assert "| not run |" in capsys.readouterr().out  # evaluated with --no-checks
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err

    # a finished run: --resume is a no-op that prints the table again
    assert main(["train", str(config_file), *_sets(tiny_overrides), "--resume"]) == 0
    # without --resume an existing run is refused with a clear message
    assert main(["train", str(config_file), *_sets(tiny_overrides)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_bad_config_lists_every_problem(config_file, tiny_overrides, capsys):
    code = main(["train", str(config_file), *_sets(tiny_overrides), "--set", "attack.eps=8",
                 "--set", "train.epochs=0", "--set", "optim.lrr=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "8/255" in err and "optim.lrr" in err and "'lr'" in err


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("train", "eval", "table", "diagnose"))


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
