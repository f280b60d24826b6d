"""The documented Ray cluster recipe (README "Scaling up", docs/experiments.md) runs as written: `ray start` a head
and a worker node, a sweep with `--ray`, `ray stop`, with every Ray process on 127.0.0.1 only.

Outside a namespace of its own the tested Ray cannot keep a second node on the loopback address: it puts the
machine's outside address in place of 127.0.0.1 for the node that joins (``ray start --address=127.0.0.1:…``
connects to the outside address), and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which keeps addresses on 127.0.0.1
for ``ray.cluster_utils`` (tests/test_cluster.py), makes ``ray start --address`` refuse to run. So the recipe runs
in a user, network and PID namespace that the test creates (``unshare``): its only network interface is the
loopback one, ``ray stop`` sees only the namespace's processes, and a sampler records every TCP socket of every
process there while the recipe runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from helpers import LOOPBACK, TINY

ROOT = Path(__file__).resolve().parents[1]

SAMPLER = r'''
import json, os, sys, time
def ip_port(text):
    ip, port = text.split(":")
    if len(ip) == 8:
        ip = ".".join(str(int(ip[i:i + 2], 16)) for i in (6, 4, 2, 0))
    elif ip.startswith("0000000000000000FFFF0000"):
        tail = ip[24:]
        ip = ".".join(str(int(tail[i:i + 2], 16)) for i in (6, 4, 2, 0))  # IPv4-mapped: an IPv4 address
    elif set(ip) == {"0"}:
        ip = "::"
    else:
        ip = "ipv6:" + ip
    return ip, int(port, 16)
out = open(sys.argv[1], "a")
while True:
    owners = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            name = open(f"/proc/{pid}/comm").read().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    owners[link[8:-1]] = name
        except OSError:
            continue
    for table in ("tcp", "tcp6"):
        for line in open(f"/proc/net/{table}").read().splitlines()[1:]:
            f = line.split()
            if f[9] in owners:
                local, remote = ip_port(f[1]), ip_port(f[2])
                out.write(json.dumps({"proc": owners[f[9]], "local": local[0], "remote": remote[0],
                                      "listening": f[3] == "0A"}) + "\n")
    out.flush()
    time.sleep(0.3)
'''


def recipe_lines(text: str) -> list[str]:
    """The commands of the documented cluster recipe: the bash block that starts a head, comments dropped and
    continued lines joined."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "ray start --head" in b)
    joined = re.sub(r"\\\n\s*", "", block)
    return [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines() if line.strip()]


def test_the_readme_and_the_experiments_page_give_the_same_recipe():
    readme = recipe_lines((ROOT / "README.md").read_text())
    page = recipe_lines((ROOT / "docs" / "experiments.md").read_text())
    assert readme == page
    assert readme[0] == "export RAY_AUTH_MODE=token"
    assert any(line.startswith("ray start --head") for line in readme) and readme[-1] == "ray stop"


def _namespace_reason() -> str | None:
    """Why a user, network and PID namespace cannot be made here, or None."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-rn", "--pid", "--fork", "--mount-proc", "ip", "link", "set", "lo", "up"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this machine does not allow a user, network and PID namespace: {probe.stderr.strip()}"
    return None


@pytest.mark.integration
def test_the_cluster_recipe_runs_as_written_on_the_loopback_address():
    pytest.importorskip("ray", reason="Ray is the optional extra robustft[cluster]")
    reason = _namespace_reason()
    if reason:
        pytest.skip(f"the recipe needs a namespace of its own to keep a second Ray node on 127.0.0.1: {reason}")
    work = Path(tempfile.mkdtemp(prefix="rft-recipe-"))  # short: Ray's socket paths live under RAY_TMPDIR
    try:
        fixed = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in TINY)}
        fixed.update({"train.epochs": 2, "schedule.t1": 1, "schedule.t2": 1, "eval.checks": False})
        sweep = {"out_dir": "runs/recipe", "set": fixed, "grid": {"train.seed": [0]},
                 "variants": {"fix": {"schedule.kind": "fix", "schedule.t1": None, "schedule.t2": None}, "hinge": {}}}
        (work / "tiny.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
        (work / "sampler.py").write_text(SAMPLER)
        commands = []
        for line in recipe_lines((ROOT / "docs" / "experiments.md").read_text()):
            line = line.replace("HEAD_IP", LOOPBACK).replace("cd /shared/robustft && ", "")
            line = line.replace("sweeps/paper.yaml", "tiny.yaml").replace("--gpus-per-run 4 --cpus-per-run 16 ", "")
            commands.append(line)  # the paper's grid and its GPUs replaced by a tiny sweep on this machine's CPUs
        venv = Path(sys.executable).parent
        script = "\n".join([
            "set -euo pipefail", "ip link set lo up",
            f"export PATH={venv}:$PATH HOME={work} RAY_TMPDIR={work}/ray OMP_NUM_THREADS=1",
            f"{sys.executable} sampler.py sockets.jsonl & sampler=$!",
            *commands,
            "kill $sampler",
        ])
        (work / "recipe.sh").write_text(script + "\n")
        # as a user's shell has it: without the single-machine switch the session's other Ray tests set
        # (conftest.ray_on_loopback), with which `ray start --address` refuses to join a head
        env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        done = subprocess.run(["unshare", "-rn", "--pid", "--fork", "--mount-proc", "bash", "recipe.sh"], cwd=work,
                              capture_output=True, text=True, timeout=900, env=env)
        assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
        runs = work / "runs" / "recipe"
        assert sorted(p.name for p in runs.iterdir() if (p / "DONE").is_file()) == ["fix-seed0", "hinge-seed0"]
        assert (runs / "report" / "report.html").is_file()
        sockets = [json.loads(line) for line in (work / "sockets.jsonl").read_text().splitlines()]
        procs = {s["proc"] for s in sockets}
        assert {"gcs_server", "raylet"} <= procs, procs  # the head's and the nodes' own servers were seen
        off = {(s["proc"], s["local"], s["remote"]) for s in sockets
               if s["local"] != LOOPBACK or s["remote"] not in (LOOPBACK, "0.0.0.0", "::")}  # "::": not connected
        assert not off, f"sockets off {LOOPBACK}: {sorted(off)}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
