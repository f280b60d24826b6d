"""Sweeps on Ray: a local cluster (a head and two one-CPU worker nodes on this machine, on 127.0.0.1 only) runs a tiny 4-point
sweep while one of its worker processes is killed; every point ends DONE with the results of the sequential
sweep; a second run trains nothing; a point trains under torchrun with two processes inside its task. Also
the options' and the command line's errors, and ``bases:`` sweep files (the paper's grid)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from robustft.cli import main
from robustft.config import ConfigError
from robustft.errors import ClusterError
from robustft.experiments import expand, load_sweep
from robustft.experiments.cluster import STATE_DIR, RayOptions, _check_resources, _join_failure
from robustft.experiments.demo import DEMO_VARIANTS

from helpers import LOOPBACK, TINY, assert_on_loopback

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["fix-seed0", "fix-seed1", "scheduled-seed0", "scheduled-seed1"]


def _sweep_file(folder: Path, out_dir: str, epochs: int = 4, **extra) -> Path:
    fixed = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in TINY)}
    fixed.update({"train.epochs": epochs, "schedule.t1": 1, "schedule.t2": 3})
    spec = {"out_dir": out_dir, "set": fixed, "grid": {"train.seed": [0, 1]},
            "variants": {"fix": DEMO_VARIANTS["fix"], "scheduled": {}}, **extra}
    path = folder / f"{Path(out_dir).name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _driver(sweep: Path, address: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "robustft", "sweep", str(sweep), "--ray", address, *args],
                            cwd=sweep.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _epochs(run: Path) -> list[dict]:
    if not (run / "metrics.jsonl").is_file():
        return []
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r["kind"] == "epoch"]


def _kill_a_worker_mid_run(out: Path, driver: subprocess.Popen, timeout: float = 240) -> tuple[str, int]:
    """SIGKILL the Ray worker process training the first point seen between its first epoch and its end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.poll() is None:
        for name in NAMES:
            attempt = out / STATE_DIR / f"{name}.json"
            run = out / name
            if attempt.is_file() and len(_epochs(run)) >= 1 and not (run / "DONE").exists():
                pid = json.loads(attempt.read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
                return name, pid
        time.sleep(0.05)
    driver.kill()
    raise AssertionError(f"no point was caught mid-run: {driver.communicate()}")


@pytest.fixture(scope="module")
def cluster(ray_on_loopback):
    """A head node without CPUs (it schedules nothing) and two worker nodes of one CPU each, all on this
    machine and on 127.0.0.1 only (conftest's ``ray_on_loopback``), as the nodes' addresses and the sockets
    of every Ray process show."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    local = {"object_store_memory": 80 * 2**20, "node_ip_address": LOOPBACK}
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **local})
    for _ in range(2):
        c.add_node(num_cpus=1, **local)
    c.wait_for_nodes()
    assert c.address.startswith(f"{LOOPBACK}:")
    assert [n["NodeManagerAddress"] for n in c.global_state.node_table()] == [LOOPBACK] * 3
    listening = ray_on_loopback()
    assert {"gcs_server", "raylet"} <= set(listening), listening
    yield c
    c.shutdown()


@pytest.mark.integration
def test_a_sweep_on_a_ray_cluster_survives_a_killed_worker_and_equals_the_sequential_one(cluster, tmp_path,
                                                                                         monkeypatch, capsys):
    sweep = _sweep_file(tmp_path, "runs/ray")
    out = tmp_path / "runs" / "ray"
    driver = _driver(sweep, cluster.address, "--max-retries", "2")
    killed, pid = _kill_a_worker_mid_run(out, driver)
    assert_on_loopback()  # the driver and the workers training too
    monkeypatch.chdir(tmp_path)  # out_dir is relative to the working directory, as for the driver
    assert main(["sweep", str(sweep), "--status"]) == 0  # read while the sweep runs: files only
    status = capsys.readouterr().out
    assert all(f"| {n} | " in status for n in NAMES) and "| running | " in status
    stdout, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr[-3000:]
    assert "ran: 4" in stdout and "failed: 0" in stdout
    record = {p["name"]: p for p in json.loads((out / "sweep.json").read_text())["points"]}
    assert {n: p["status"] for n, p in record.items()} == dict.fromkeys(NAMES, "ran")
    attempts = {n: json.loads((out / STATE_DIR / f"{n}.json").read_text()) for n in NAMES}
    assert attempts[killed]["attempt"] == 2 and attempts[killed]["pid"] != pid  # retried in another process
    assert all(a["attempt"] == 1 for n, a in attempts.items() if n != killed)
    assert f"{killed}: running" in stderr and "epoch 4/4" in stderr  # the progress view
    assert all((out / n / "DONE").exists() for n in NAMES)
    assert main(["sweep", str(sweep), "--status"]) == 0
    status = capsys.readouterr().out
    assert f"| {killed} | DONE | 4/4 | 2 | " in status and status.rstrip().endswith("DONE: 4")

    # the same sweep, one point after another in this process (one thread, as each Ray task)
    assert main(["-q", "sweep", str(_sweep_file(tmp_path, "runs/seq"))]) == 0
    capsys.readouterr()
    seq = tmp_path / "runs" / "seq"
    for name in NAMES:
        a = torch.load(out / name / "checkpoints" / "last.pt", weights_only=True)["model"]
        b = torch.load(seq / name / "checkpoints" / "last.pt", weights_only=True)["model"]
        for key in b:
            assert torch.allclose(a[key].double(), b[key].double(), atol=1e-6), (name, key)
        assert [r["train_loss"] for r in _epochs(out / name)] == pytest.approx([r["train_loss"] for r in _epochs(seq / name)])
        ra, rb = (json.loads((r / name / "eval" / "apgd-ce" / "robustness.json").read_text()) for r in (out, seq))
        assert ra["curve"] == rb["curve"] and ra["expected_robustness"] == rb["expected_robustness"], name

    # again: every point is DONE, so nothing trains (no Ray task is even submitted)
    before = {n: (out / STATE_DIR / f"{n}.json").stat().st_mtime_ns for n in NAMES}
    again = _driver(sweep, cluster.address)
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr[-3000:]
    assert "ran: 0" in stdout and "skipped: 4" in stdout and "runs on Ray" not in stderr
    assert {n: (out / STATE_DIR / f"{n}.json").stat().st_mtime_ns for n in NAMES} == before


@pytest.mark.integration
def test_a_point_with_two_processes_trains_under_torchrun_in_its_task(cluster, tmp_path):
    spec = _sweep_file(tmp_path, "runs/ddp", epochs=2)
    raw = yaml.safe_load(spec.read_text())
    spec.write_text(yaml.safe_dump({**raw, "variants": {"fix": DEMO_VARIANTS["fix"]}, "grid": {"train.seed": [0]}}))
    driver = _driver(spec, cluster.address, "--processes-per-run", "2")
    stdout, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr[-3000:]
    run = tmp_path / "runs" / "ddp" / "fix-seed0"
    assert (run / "DONE").exists() and json.loads((run / "summary.json").read_text())["processes"] == 2
    log = (run.parent / STATE_DIR / "fix-seed0.log").read_text()
    assert "torch.distributed.run" in log and "--nproc_per_node=2" in log


# --------------------------------------------------------------------------------- options and errors
def test_ray_options_check_their_values():
    assert RayOptions().processes == 1 and RayOptions(gpus_per_run=4).processes == 4
    assert RayOptions(gpus_per_run=0.5).processes == 1 and RayOptions(processes_per_run=2).processes == 2
    for kwargs, words in [({"cpus_per_run": 0}, "cpus_per_run must be > 0"),
                          ({"gpus_per_run": 1.5}, "a whole number"),
                          ({"gpus_per_run": 4, "processes_per_run": 2}, r"must be 1 or gpus_per_run \(4\)"),
                          ({"max_retries": -1}, "max_retries"), ({"processes_per_run": 0}, "at least 1")]:
        with pytest.raises(ValueError, match=words):
            RayOptions(**kwargs)


def test_a_point_that_no_node_can_hold_is_refused_before_anything_runs():
    nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    with pytest.raises(ValueError, match="asks for 1 CPUs and 4 GPUs on one node, but the Ray cluster's nodes have "
                                         "16 CPUs [+] 2 GPUs, 16 CPUs [+] 2 GPUs"):
        _check_resources(nodes, RayOptions(gpus_per_run=4))  # 4 GPUs in all, but not on one node
    _check_resources(nodes, RayOptions(cpus_per_run=8, gpus_per_run=2))
    with pytest.raises(ValueError, match="no live node"):
        _check_resources([], RayOptions())


def test_a_cluster_where_nothing_listens_is_one_line_naming_its_address_at_once(tmp_path, capsys):
    pytest.importorskip("ray")
    sweep = _sweep_file(tmp_path, "runs/x")
    with socket.socket() as held:  # a port of this machine that no one listens on (connections are refused)
        held.bind((LOOPBACK, 0))
        address = f"{LOOPBACK}:{held.getsockname()[1]}"
        t0 = time.monotonic()
        assert main(["-q", "sweep", str(sweep), "--ray", address]) == 2
        seconds = time.monotonic() - t0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"cannot reach the Ray cluster at {address}: nothing listens on port" in err
    assert "ray start --head --port" in err and seconds < 5, seconds  # not Ray's 20 s of retries


def test_a_cluster_that_refuses_the_driver_names_token_authentication(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    try:  # as ray.init fails, after 20 s of retries, against a head started with RAY_AUTH_MODE=token
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                               "...\nray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication "
                               "token is missing or incorrect. Note: RAY_AUTH_MODE is currently 'disabled' (not "
                               "'token'). Ensure that the token for the cluster is available in a local file ...")
        except RuntimeError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from cause
    except ConnectionError as err:
        message = _join_failure("10.0.0.1:6379", err)
    assert message.startswith("the Ray cluster at 10.0.0.1:6379 refused this driver: it uses token authentication "
                              "(RAY_AUTH_MODE here: disabled); set RAY_AUTH_MODE=token and the cluster's token")
    other = _join_failure("10.0.0.1:8265", ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:8265"))
    assert other.startswith("cannot join the Ray cluster at 10.0.0.1:8265: Failed to connect") and "token" in other
    assert "\n" not in message + other and issubclass(ClusterError, ConnectionError)


def test_ray_addresses_without_a_port_are_refused_before_anything_runs():
    for address in ("10.0.0.1", "head:", "ray://head", "head:99999"):
        with pytest.raises(ConfigError, match=f"address '{address}' is not HOST:PORT: give the address `ray start"):
            RayOptions(address=address)
    for address in (None, "auto", "10.0.0.1:6379", "[::1]:6379", "ray://head:10001"):
        RayOptions(address=address)


def test_cli_ray_flags_need_ray_and_exclude_jobs(tmp_path, capsys):
    sweep = _sweep_file(tmp_path, "runs/x")
    assert main(["-q", "sweep", str(sweep), "--gpus-per-run", "2"]) == 2
    assert "--gpus-per-run only apply to sweeps on Ray: add --ray" in capsys.readouterr().err
    assert main(["-q", "sweep", str(sweep), "--ray", "--jobs", "2"]) == 2
    assert "--jobs and --ray exclude each other" in capsys.readouterr().err
    assert main(["-q", "sweep", str(sweep), "--ray", "--gpus-per-run", "1.5"]) == 2
    assert "a whole number" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------------- bases
def test_bases_cross_every_config_with_the_variants_and_the_grid(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "configs" / f"{name}.yaml").parent.mkdir(exist_ok=True)
        (tmp_path / "configs" / f"{name}.yaml").write_text(yaml.safe_dump({"data": {"name": "digits"},
                                                                           "train": {"epochs": 1 + (name == "b")}}))
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"bases": ["configs/*.yaml"], "out_dir": "o", "grid": {"train.seed": [0, 1]},
                                    "variants": {"fix": {"schedule.kind": "fix"}, "scheduled": {}}}))
    points = expand(load_sweep(spec))
    assert [p.name for p in points] == ["a-fix-seed0", "a-fix-seed1", "a-scheduled-seed0", "a-scheduled-seed1",
                                        "b-fix-seed0", "b-fix-seed1", "b-scheduled-seed0", "b-scheduled-seed1"]
    assert [p.config.train.epochs for p in points] == [1] * 4 + [2] * 4
    assert points[0].config.schedule.kind == "fix" and points[2].config.schedule.kind != "fix"


@pytest.mark.parametrize("entry,error,words", [
    ("configs/none*.yaml", FileNotFoundError, "matches no config file"),
    (7, ConfigError, "bases is a list of config files"),
])
def test_bases_errors(tmp_path, entry, error, words):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"bases": [entry], "out_dir": "o"}))
    with pytest.raises(error, match=words):
        load_sweep(spec)


def test_base_and_bases_together_are_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {name: digits}\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": "c.yaml", "bases": ["c.yaml"], "out_dir": "o"}))
    with pytest.raises(ConfigError, match="give base .* or bases"):
        load_sweep(spec)


def test_the_paper_grid_is_the_60_presets_times_fix_and_scheduled():
    points = expand(load_sweep(ROOT / "sweeps" / "paper.yaml"))
    assert len(points) == 120 and len({p.name for p in points}) == 120
    kinds = {}
    for p in points:
        kinds.setdefault(p.name.rsplit("-", 2)[0], set()).add(p.config.schedule.kind)
    assert len(kinds) == 60 and all(k == {"fix", "hinge"} for k in kinds.values())
    assert all(p.config.train.epochs == 50 and p.config.data.image_size == 224 for p in points)
