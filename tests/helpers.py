"""Helpers shared by test modules (plain functions, classes and constants; the fixtures are in conftest.py): the
tiny run settings, toy models and data, the attack contract's checks, killed-and-resumed runs, and Ray on the
loopback address."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from robustft.config import Config
    from robustft.data import ImageArray
    from robustft.runs import RunDir

TINY = [
    "data.name=digits", "data.image_size=16", "data.n_train=128", "data.n_val=64", "data.n_test=64",
    "data.batch_size=32", "data.eval_batch_size=64", "model.name=test_efficientnet", "model.pretrained=false",
    "attack.num_steps=2", "objective.name=adversarial", "schedule.kind=hinge", "schedule.t1=1", "schedule.t2=2",
    "optim.lr=0.003", "optim.warmup_epochs=0", "train.epochs=3", "train.val_adv_n=32", "train.log_every=2",
    "eval.n=32", "eval.num_steps=2", "eval.eps_grid=[0, 4/255, 8/255]", "eval.check_queries=50",
    "train.channels_last=false", "eval.checks=false",
]
"""Overrides that make any config a seconds-long run: digits at 16×16, timm's test_efficientnet, 2-step APGD, no
sanity checks (two thirds of a tiny run's time; a test of what the checks record turns them on)."""


# ------------------------------------------------------------------------------------ toy models and data

def fit_briefly(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int = 2) -> nn.Module:
    """Train ``model`` for a few Adam steps on random batches of (x, y); returned in eval mode with no grads."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def toy_cnn(classes: int = 3, seed: int = 0, dropout: float = 0.3) -> nn.Sequential:
    """A tiny conv net with BatchNorm and dropout (both must be off in eval mode), seeded."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(dropout), nn.Linear(8, classes))


def tiny_net(seed: int = 0) -> nn.Sequential:
    """The attack tests' 3-class conv net: :func:`toy_cnn` with dropout 0.5."""
    return toy_cnn(seed=seed, dropout=0.5)


def toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float 3×8×8 images in [0, 1]; the label (of 3) is the channel with the highest mean."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    return x, x.mean((2, 3)).argmax(1)


def toy_images(n: int, seed: int, classes: int = 3) -> "ImageArray":
    """uint8 [N, 3, 8, 8]. With 3 classes the label is the channel with the highest mean; with 4, the
    image quadrant with the highest mean brightness."""
    from robustft.data import ImageArray

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    if classes == 3:
        labels = images.float().mean((2, 3)).argmax(1)
    elif classes == 4:
        q = images.float().mean(1).unfold(1, 4, 4).unfold(2, 4, 4).mean((-1, -2))  # [N, 2, 2]
        labels = q.flatten(1).argmax(1)
    else:
        raise ValueError(f"toy_images has 3 or 4 classes, not {classes}")
    return ImageArray(images, labels)


def quadrant_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float 3×8×8 images in [0, 1]; the label (of 4) is the brightest image quadrant."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    return x, x.mean(1).unfold(1, 4, 4).unfold(2, 4, 4).mean((-1, -2)).flatten(1).argmax(1)


def quadrant_mlp(n_train: int, steps: int) -> nn.Module:
    """A small MLP with BatchNorm and dropout (both must be off in eval mode), seeded, fitted on
    ``quadrant_data(n_train, seed=1)``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
                        nn.Linear(32, 4))
    x, y = quadrant_data(n_train, seed=1)
    return fit_briefly(net, x, y, steps=steps)


def toy_image_mlp() -> nn.Module:
    """A small MLP, seeded, fitted on the 4-class ``toy_images(256, seed=1)``."""
    from robustft.data import to_float

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 4))
    train = toy_images(256, seed=1, classes=4)
    return fit_briefly(net, to_float(train.images, 8), train.labels, steps=150)


# ------------------------------------------------------------------------------------ the attack contract
class Recorder(nn.Module):
    """Identity that records ``self.training`` at every forward call."""

    def __init__(self):
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return x


class Detached(nn.Module):
    """``inner`` on a detached copy of its input: the loss has no gradient path to x (masked gradients)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.detach())


def assert_in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, tol: float = 1e-6) -> None:
    """``x_adv`` has the shape and dtype of ``x``, is finite, in [0, 1] and within ``eps`` of ``x`` in ``norm``."""
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all()
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    delta = (x_adv - x).flatten(1)
    dist = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (dist <= eps + tol).all(), f"max distance {dist.max().item()} > eps {eps}"


# ------------------------------------------------------------------------------------ runs
def assert_training_attack_contract(name: str, norm: str, net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                                    eps: float | None = None) -> None:
    """The training attack ``name`` built from its config as training builds it keeps the attack contract:
    inside the ball (unless its entry says it leaves it by design) and the [0, 1] box, the model in eval mode while
    crafting and its mode, ``requires_grad`` and gradients as they were, ε = 0 the identity without a forward."""
    import copy

    from robustft.attacks import build_attack
    from robustft.config import TRAIN_ATTACKS, AttackConfig

    x, y = batch
    eps = eps if eps is not None else (8 / 255 if norm == "linf" else 0.5)
    attack = build_attack(AttackConfig(name=name, norm=norm, num_steps=3))
    recorder = Recorder()
    model = nn.Sequential(recorder, copy.deepcopy(net)).train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    torch.manual_seed(0)
    x_adv = attack(model, x, y, eps)
    if TRAIN_ATTACKS[name].extra.get("in_ball", True):
        assert_in_ball(x_adv, x, eps, norm)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and not torch.equal(x_adv, x) and not x_adv.requires_grad
    assert recorder.modes and not any(recorder.modes) and model.training  # eval mode while crafting, restored
    assert all(p.requires_grad and torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert attack(_NeverCalled().train(), x, y, 0.0) is x


class _NeverCalled(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("ε = 0: the model must not be called")


def with_overrides(cfg: "Config", overrides: list[str]) -> "Config":
    """``cfg`` with ``--set``-style overrides applied."""
    from robustft.config import apply_overrides, config_from_dict, config_to_dict

    return config_from_dict(apply_overrides(config_to_dict(cfg), overrides))


def run_killed_and_resumed(cfg: "Config", monkeypatch, die_after: int) -> tuple["RunDir", "RunDir"]:
    """``cfg`` trained straight, and trained again, killed after the ``die_after``-th save of last.pt, then
    resumed; returns the two run directories."""
    import pytest

    import robustft.train.trainer as trainer
    from robustft.api import fine_tune
    from robustft.runs import RunDir
    from robustft.train import load_checkpoint

    straight = fine_tune(cfg, name="straight")
    real_save, saves = trainer.save_checkpoint, {"n": 0}

    def save_then_die(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        if Path(path).name == "last.pt":
            saves["n"] += 1
            if saves["n"] == die_after:
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(cfg, name="killed")
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    killed = RunDir(straight.path.parent / "killed")
    assert load_checkpoint(killed.checkpoint_path)["epochs_done"] == die_after and not killed.done
    return straight, fine_tune(cfg, name="killed", resume=True)


def assert_same_tensors(a: dict, b: dict) -> None:
    """Two state dicts with the same keys, in the same order, and bit-identical tensors."""
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def without_time(run: "RunDir") -> list[dict]:
    """The run's metrics rows without their wall-clock times."""
    from robustft.runs import read_rows

    return [{k: v for k, v in r.to_json().items() if k != "elapsed_s"} for r in read_rows(run.path)]


def poison_loss_after(monkeypatch, calls_before: int) -> None:
    """Make the training loss NaN from objective call ``calls_before + 1`` on (each epoch has 4 steps)."""
    import robustft.train.trainer as trainer

    real = trainer.build_objective

    def poisoned(c):
        objective, calls = real(c), {"n": 0}

        def call(model, x, y, eps):
            out = objective(model, x, y, eps)
            calls["n"] += 1
            if calls["n"] > calls_before:
                out.loss = out.loss * float("nan")
            return out
        return call

    monkeypatch.setattr(trainer, "build_objective", poisoned)


def train_in_sweep_worker(cfg) -> None:
    """A sweep's ``train`` that a worker process can unpickle: writes the run's config, DONE and
    ``worker.json`` (its process id and torch's thread count); raises for the run named ``c``."""
    from robustft.config import save_config

    run = Path(cfg.train.out_dir) / cfg.train.run_name
    run.mkdir(parents=True, exist_ok=True)
    (run / "worker.json").write_text(json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads(),
                                                 "tqdm_disabled": os.environ.get("TQDM_DISABLE")}))
    if cfg.train.run_name == "c":
        raise RuntimeError("boom in a worker")
    save_config(cfg, run / "config.yaml")
    (run / "DONE").write_text("done\n")


# ------------------------------------------------------------------------------------ Ray on the loopback address
LOOPBACK = "127.0.0.1"


def assert_on_loopback() -> dict[str, set[str]]:
    """Assert that every TCP socket of this process and of the processes it started (Ray's head and worker nodes,
    their agents and workers, the drivers) listens on 127.0.0.1, or connects 127.0.0.1 to 127.0.0.1; return the
    addresses each process (by name) listens on, read from /proc."""
    listening: dict[str, set[str]] = {}
    off = []
    for owner, local, remote in _tcp_sockets(_descendants(os.getpid())):
        if remote is None:
            listening.setdefault(owner.split(" ", 1)[1], set()).add(_joined(*local))
        if local[0] != LOOPBACK or remote is not None and remote[0] != LOOPBACK:
            off.append(f"{owner}: {_joined(*local)} -> {_joined(*remote) if remote else '(listening)'}")
    assert listening, "no process started by the tests listens on a TCP port: Ray is not running from here"
    assert not off, f"sockets on another address than {LOOPBACK}: {off}"
    return listening


def _tcp_sockets(pids: set[int]) -> list[tuple[str, tuple[str, int], tuple[str, int] | None]]:
    """``("PID NAME", local, remote)`` for each TCP socket of the processes ``pids``; remote None: listening."""
    inodes = {}
    for pid in pids:
        for fd in _links(Path(f"/proc/{pid}/fd")):
            if fd.startswith("socket:["):
                inodes[fd[8:-1]] = f"{pid} {_read(Path(f'/proc/{pid}/comm')).strip()}"
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                listening = fields[3] == "0A"
                found.append((inodes[fields[9]], _ip_port(fields[1]), None if listening else _ip_port(fields[2])))
    return found


def _joined(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _links(folder: Path) -> list[str]:
    """Where the links in ``folder`` point (those that vanish meanwhile left out)."""
    found = []
    for name in (os.listdir(folder) if folder.is_dir() else []):
        try:
            found.append(os.readlink(folder / name))
        except OSError:  # closed, or the process ended, meanwhile
            pass
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # the process ended meanwhile
        return ""


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _read(stat).rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _ip_port(hex_address: str) -> tuple[str, int]:
    """``0100007F:1F90`` (/proc/net/tcp: the address in the host's byte order) → ``("127.0.0.1", 8080)``; IPv6
    mapped IPv4 addresses as their IPv4 address."""
    address, port = hex_address.split(":")
    packed = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, len(address), 8))
    ip = ipaddress.ip_address(packed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)
