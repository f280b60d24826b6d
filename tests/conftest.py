"""Shared fixtures: a tiny, fast run config (digits at 16×16, timm's test_efficientnet, 2-step APGD), and Ray on
the loopback address only (``ray_on_loopback``)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
import torch

from robustft.config import load_config

TINY = [
    "data.name=digits", "data.image_size=16", "data.n_train=128", "data.n_val=64", "data.n_test=64",
    "data.batch_size=32", "data.eval_batch_size=64", "model.name=test_efficientnet", "model.pretrained=false",
    "attack.num_steps=2", "objective.name=adversarial", "schedule.kind=hinge", "schedule.t1=1", "schedule.t2=2",
    "optim.lr=0.003", "optim.warmup_epochs=0", "train.epochs=3", "train.val_adv_n=32", "train.log_every=2",
    "eval.n=32", "eval.num_steps=2", "eval.eps_grid=[0, 4/255, 8/255]", "eval.check_queries=50",
    "train.channels_last=false",
]


@pytest.fixture
def tiny_overrides(tmp_path) -> list[str]:
    """Overrides that make any config a seconds-long run under ``tmp_path``."""
    return TINY + [f"train.out_dir={tmp_path / 'runs'}"]


@pytest.fixture
def tiny_config(tiny_overrides):
    return load_config(None, tiny_overrides)


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """One intra-op thread: tiny models gain nothing from two, and a busy 2-core machine loses a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------- Ray on the loopback address only
LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="session")
def ray_on_loopback():
    """Ray nodes, drivers and workers that the tests start bind 127.0.0.1 and nothing else; yields
    :func:`assert_on_loopback` for the tests to check it while Ray runs.

    Ray takes a node's own address from the route to the outside and puts it in place of 127.0.0.1 (in
    ``node_ip_address`` and in the address a driver joins), except where it runs single-machine clusters only:
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes 127.0.0.1 the address of every node, driver and worker (set for
    this process, whose Ray has read it at import, and for every process started from here)."""
    constants = pytest.importorskip("ray._private.ray_constants", reason="Ray is the optional extra robustft[cluster]")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        patch.setattr(constants, "ENABLE_RAY_CLUSTER", False)
        yield assert_on_loopback


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
