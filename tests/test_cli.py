"""The command line end to end on a tiny run: train, resume, eval, table, errors."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil

import huggingface_hub
import numpy as np
import pytest
import timm
import torch
from PIL import Image

import robustft.cli as cli
import robustft.train.checkpoint as checkpoint
from robustft.cli import main
from robustft.config import SECTIONS

from helpers import TINY, poison_loss_after


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
                 "--attacks", "apgd-ce,apgd-t", "--set", "eval.check_queries=20", "eval.checks=true"]) == 0
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


def test_a_train_that_failed_before_its_first_checkpoint_can_be_rerun(config_file, tiny_overrides, tmp_path,
                                                                      capsys):
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")  # weights of another network
    args = ["train", str(config_file), *_sets(tiny_overrides + ["train.evaluate=false"])]
    assert main(args + ["--set", f"model.checkpoint={tmp_path / 'other.pt'}"]) == 2
    assert "does not fit the backbone" in capsys.readouterr().err
    run = tmp_path / "runs" / "tiny"
    assert (run / "config.yaml").exists() and not (run / "checkpoints" / "last.pt").exists()
    assert main(args) == 0  # the corrected command: no "already exists", no "cannot resume"
    assert (run / "DONE").exists() and "model.checkpoint" not in capsys.readouterr().err
    assert "checkpoint: null" in (run / "config.yaml").read_text()


def test_non_finite_stop_then_resume_with_a_lower_lr(config_file, tiny_overrides, tmp_path, capsys, monkeypatch):
    poison_loss_after(monkeypatch, 4)  # NaN from epoch 1 on (4 steps per epoch)
    args = ["train", str(config_file), *_sets(tiny_overrides + ["train.evaluate=false"])]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "last good checkpoint" in err and "--resume --set optim.lr=..." in err
    monkeypatch.undo()
    assert main(args + ["--resume", "--set", "optim.lr=0.001", "--set", "optim.grad_clip=1.0"]) == 0  # as advised
    run = tmp_path / "runs" / "tiny"
    assert (run / "DONE").exists() and (run / "resumes.jsonl").exists() and (run / "config.original.yaml").exists()
    assert "lr: 0.001" in (run / "config.yaml").read_text()
    assert "lr: 0.003" in (run / "config.original.yaml").read_text()


@pytest.mark.parametrize("command", [["train", "c.yaml"], ["eval", "runs/x"], ["tune", "c.yaml"]])
def test_set_takes_several_pairs_and_repeats(command):
    from robustft.cli import _parser

    args = _parser().parse_args(command + ["--set", "a.b=1", "c.d=2", "--set", "e.f=3"])
    assert args.overrides == ["a.b=1", "c.d=2", "e.f=3"]
    assert _parser().parse_args(command).overrides == []


def test_several_pairs_after_one_set_reach_the_config(config_file, tmp_path, capsys):
    code = main(["train", str(config_file), "--set", f"train.out_dir={tmp_path / 'runs'}", "optim.learnig_rate=1",
                 "attack.eps=300/255"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown key 'optim.learnig_rate' (did you mean 'lr'?)" in err
    assert "attack.eps: ε = '300/255' = 1.176 is out of range [0, 1]" in err and "/255/255" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text,message", [
    ("", "{path} is empty; write the sections it changes (e.g. 'train: {{epochs: 8}}'), or {{}} for every default"),
    ("- train\n- eval\n", "{path} holds a list; a config is a mapping of sections (" + ", ".join(SECTIONS) +
     "), e.g. 'train: {{epochs: 8}}'"),
])
def test_an_empty_or_list_config_file_is_one_line_and_starts_nothing(text, message, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["train", str(path), "--set", f"train.out_dir={tmp_path / 'runs'}"]) == 2
    out, err = capsys.readouterr()
    assert err == f"error: invalid configuration: {message.format(path=path)}\n" and out == ""
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override,message", [
    ("model.num_classes=20", "model.num_classes: 20 does not match the 10 classes of digits; set "
                             "model.num_classes=10, or null to take them from the data"),
    ("model.num_classes=5", "model.num_classes: 5 does not match the 10 classes of digits; set "
                            "model.num_classes=10, or null to take them from the data"),
    ("data.n_val=5000", "data.n_val: cannot split 5000 validation examples off the 1438 training examples of "
                        "digits; set data.n_val to at most 1437 (0 turns validation off)"),
])
def test_a_config_that_does_not_fit_the_data_stops_before_training(override, message, config_file, tiny_overrides,
                                                                   tmp_path, capsys):
    assert main(["train", str(config_file), *_sets(tiny_overrides), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err == f"error: invalid configuration: {message}\n"
    run = tmp_path / "runs" / "tiny"
    assert not (run / "checkpoints" / "last.pt").exists() and not (run / "DONE").exists()
    metrics = run / "metrics.jsonl"
    assert not metrics.exists() or metrics.read_text() == ""


def test_eval_of_an_unsorted_grid_with_weights_equals_the_sorted_one(config_file, tiny_overrides, tmp_path, capsys):
    assert main(["train", str(config_file), *_sets(tiny_overrides + ["train.evaluate=false"])]) == 0
    run = tmp_path / "runs" / "tiny"
    common = ["--n", "16", "--no-checks", "--attacks", "apgd-ce"]
    assert main(["eval", str(run), "--eps-grid", "4/255,0,2/255", "--set", "eval.eps_weights=[1, 0, 0]",
                 "eval.bootstrap=0", "--name", "unsorted", *common]) == 0
    assert main(["eval", str(run), "--eps-grid", "0,2/255,4/255", "--set", "eval.eps_weights=[0, 0, 1]",
                 "eval.bootstrap=0", "--name", "sorted", *common]) == 0
    unsorted, ordered = (json.loads((run / "eval" / n / "robustness.json").read_text()) for n in ("unsorted", "sorted"))
    assert unsorted["eps_weights"] == ordered["eps_weights"] == [0.0, 0.0, 1.0]
    assert [c["eps"] for c in unsorted["curve"]] == ["0/255", "2/255", "4/255"]
    assert unsorted["expected_robustness"] == ordered["expected_robustness"]
    assert unsorted["expected_robustness"] == pytest.approx(unsorted["adv"])  # all weight at 4/255


# ------------------------------------------------------------------ one line, not a traceback (user errors)
def _fails_in_one_line(args, message, capsys):
    """``args`` exit with 2 and exactly ``error: MESSAGE`` on stderr; under --debug the traceback comes first."""
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert err == f"error: {message}\n" and "Traceback" not in err
    assert main(["--debug", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and err.endswith(f"\nerror: {message}\n")
    return err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny trained (not evaluated) run directory, to be copied by the tests that change it."""
    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.yaml").write_text("attack:\n  eps: 8/255\n")
    overrides = TINY + [f"train.out_dir={root / 'runs'}", "train.evaluate=false", "train.epochs=1", "schedule.t1=0",
                        "schedule.t2=1"]
    assert main(["-q", "train", str(root / "tiny.yaml"), "--set", *overrides]) == 0
    return root / "runs" / "tiny"


RAN: list[str] = []


def _ran() -> None:
    RAN.append("code in a checkpoint ran")


class _RunsCode:
    """Pickled as a call of :func:`_ran`: a torch file whose loading would run code."""

    def __reduce__(self):
        return (_ran, ())


def _unsafe_message(path, key=""):
    return (f"{key}{path} contains objects that are not plain tensors or data (a pickled {__name__}._ran), so it "
            "is refused for safety; re-save it as a state dict (torch.save(model.state_dict(), PATH)) or as "
            ".safetensors")


def test_a_model_checkpoint_with_pickled_objects_is_refused_in_one_line(config_file, tiny_overrides, tmp_path,
                                                                        capsys):
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": {"conv_stem.weight": torch.zeros(1)}, "extra": _RunsCode()}, path)
    args = ["train", str(config_file), "--set", *tiny_overrides, f"model.checkpoint={path}"]
    err = _fails_in_one_line(args, _unsafe_message(path, "model.checkpoint: "), capsys)
    assert "weights_only=False" not in err and RAN == []  # torch's advice is not passed on; no code ran


def test_eval_of_a_checkpoint_with_pickled_objects_is_refused_in_one_line(trained_run, tmp_path, capsys):
    run = shutil.copytree(trained_run, tmp_path / "tiny")
    path = run / "checkpoints" / "other.pt"
    torch.save({"model": _RunsCode(), "epochs_done": 1, "step": 4}, path)
    last = (run / "checkpoints" / "last.pt").read_bytes()
    _fails_in_one_line(["eval", str(path), "--n", "8", "--no-checks"], _unsafe_message(path), capsys)
    assert RAN == [] and (run / "checkpoints" / "last.pt").read_bytes() == last


class _FullDisk(io.BytesIO):
    """A file on a disk that fills up after ``room`` bytes."""

    def __init__(self, room: int):
        super().__init__()
        self.room = room

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_resumes(config_file, tiny_overrides,
                                                                               tmp_path, capsys, monkeypatch):
    last = tmp_path / "runs" / "tiny" / "checkpoints" / "last.pt"
    real_save, kept = torch.save, {}

    def save(obj, f, *args, **kwargs):  # the first checkpoint fits, the next ones find the disk full
        if not last.exists():
            return real_save(obj, f, *args, **kwargs)
        kept.setdefault("bytes", last.read_bytes())
        real_save(obj, _FullDisk(room=1000), *args, **kwargs)  # raises as torch does on a full disk

    monkeypatch.setattr(checkpoint.torch, "save", save)
    args = ["train", str(config_file), "--set", *tiny_overrides, "train.evaluate=false"]
    message = (f"disk full while writing the checkpoint {last} (No space left on device); the previous last.pt is "
               "intact: free some space, then continue the run with --resume")
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert last.read_bytes() == kept["bytes"] and checkpoint.load_checkpoint(last)["epochs_done"] == 1
    assert [p.name for p in last.parent.iterdir()] == ["last.pt"]  # no temporary file left behind
    assert main(["--debug", *args, "--resume"]) == 2  # still full
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "inline_container.cc" in err and err.endswith(f"error: {message}\n")
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0  # space freed: the run continues from epoch 1
    assert (last.parent.parent / "DONE").exists() and checkpoint.load_checkpoint(last)["epochs_done"] == 3


class _NoNetwork:
    """A hub session on a machine without network."""

    def head(self, url, **kwargs):
        raise ConnectionError("[Errno -2] Name or service not known")


@pytest.mark.parametrize("offline_mode", [False, True])
def test_offline_hub_weights_fail_at_once_in_one_line(offline_mode, config_file, tiny_overrides, tmp_path, capsys,
                                                      monkeypatch):
    downloads = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline_mode)
    monkeypatch.setattr(huggingface_hub, "get_session", _NoNetwork)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", lambda *a, **k: downloads.append(a))
    reason = ("HF_HUB_OFFLINE is set and they are not in the local cache" if offline_mode else
              f"{huggingface_hub.constants.ENDPOINT} cannot be reached: ConnectionError: [Errno -2] Name or "
              "service not known")
    message = (f"could not download the pretrained weights of 'test_efficientnet' ({reason}). If this machine is "
               "offline, download the weights elsewhere and pass them as a local file: --set model.checkpoint=PATH "
               "(a .safetensors or torch state dict of the timm backbone); or use the embedded offline backbone: "
               "--set model.name=efficientnet_lite0")
    args = ["train", str(config_file), "--set", *tiny_overrides, "model.pretrained=true"]
    _fails_in_one_line(args, message, capsys)
    assert downloads == []  # no retries: the download is not even tried


def _image_folder(root, bad: str) -> None:
    """root/{train,test}/{a,b}/N.png, 8×8 random images, with the file ``bad`` cut short."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for cls in "ab":
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    data = (root / bad).read_bytes()
    (root / bad).write_bytes(data[:len(data) // 2])


def test_a_corrupt_image_is_named_in_one_line(config_file, tiny_overrides, tmp_path, capsys):
    root = tmp_path / "images"
    _image_folder(root, "train/b/3.png")
    args = ["train", str(config_file), "--set", *tiny_overrides, "data.name=imagefolder", f"data.root={root}",
            "data.n_train=null", "data.n_val=2", "data.n_test=null", "train.evaluate=false", "train.epochs=1",
            "schedule.t1=0", "schedule.t2=1"]
    message = (f"cannot read the image {root / 'train/b/3.png'} (image file is truncated); it is truncated, corrupt "
               "or not an image: delete or replace that file, then run the command again (train: with --resume)")
    _fails_in_one_line(args, message, capsys)
    (root / "train/b/3.png").unlink()  # as the message says
    assert main([*args, "--resume"]) == 0
    assert (tmp_path / "runs" / "tiny" / "DONE").exists()


def _backbone_state(name):
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in timm.create_model(name, num_classes=0).state_dict().items()}


@pytest.mark.parametrize("kind", ["recorded", "beside", "guessed"])
def test_a_checkpoint_of_another_backbone_names_both_architectures(kind, config_file, tiny_overrides, tmp_path,
                                                                  capsys):
    if kind == "recorded":  # as timm's train.py saves it
        path = tmp_path / "vit.pth.tar"
        torch.save({"arch": "test_vit", "state_dict": _backbone_state("test_vit")}, path)
        theirs = "'test_vit' (recorded in the file)"
    elif kind == "beside":  # a hub download: config.json beside the weights
        from safetensors.torch import save_file

        path = tmp_path / "hub" / "model.safetensors"
        path.parent.mkdir()
        save_file(_backbone_state("test_vit"), str(path))
        (path.parent / "config.json").write_text(json.dumps({"architecture": "test_vit", "num_classes": 1000}))
        theirs = f"'test_vit' (recorded in {path.parent / 'config.json'})"
    else:
        path = tmp_path / "weights.pt"
        state = _backbone_state("test_convnext")
        torch.save(state, path)
        first = next(iter(state))
        theirs = f"a ConvNeXt ({len(state)} tensors, e.g. {first} {list(state[first].shape)})"
    own = len(timm.create_model("test_efficientnet", num_classes=0).state_dict())
    message = (f"model.checkpoint: {path} does not fit the backbone: it holds the weights of {theirs}, but model.name "
               f"is 'test_efficientnet' (none of the {own} backbone tensors is in it); set model.name to the "
               "checkpoint's architecture, or point model.checkpoint at weights of test_efficientnet")
    _fails_in_one_line(["train", str(config_file), "--set", *tiny_overrides, f"model.checkpoint={path}"], message,
                       capsys)


def test_a_partial_npz_that_is_not_ours_is_named_and_kept(trained_run, tmp_path, capsys):
    run = shutil.copytree(trained_run, tmp_path / "tiny")
    partial = run / "eval" / "quick" / "partial.npz"
    partial.parent.mkdir(parents=True)
    np.savez(partial, weights=np.random.default_rng(0).random(5))
    before = partial.read_bytes()
    args = ["eval", str(run), "--eps-grid", "0,2/255", "--n", "8", "--no-checks", "--name", "quick"]
    message = (f"{partial} is not the partial results of a robustft evaluation (key is not a file in the archive); "
               "delete it to restart this evaluation")
    _fails_in_one_line(args, message, capsys)
    assert partial.read_bytes() == before  # not overwritten: the user decides
    partial.unlink()
    assert main(args) == 0 and (partial.parent / "robustness.json").exists()


def test_a_full_disk_elsewhere_is_one_line_and_other_errors_keep_their_traceback(tmp_path, capsys, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "report.md"))

    monkeypatch.setattr(cli, "results_table", full)
    message = (f"disk full while writing {tmp_path / 'report.md'} (No space left on device); free some space, then "
               "run the same command again (train: with --resume)")
    _fails_in_one_line(["table", str(tmp_path)], message, capsys)

    def bug(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "results_table", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["table", str(tmp_path)])
