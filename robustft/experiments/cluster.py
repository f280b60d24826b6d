"""Sweeps on a Ray cluster: every point of a sweep a Ray task, on a laptop or on a cluster alike.

``robustft sweep FILE --ray [ADDRESS]`` (no address: a Ray instance started on this machine for the sweep)
submits every point not yet DONE as a task asking for ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs;
Ray runs as many at once as the cluster holds. A task whose worker dies (a killed process, a lost node) is
retried up to ``--max-retries`` times, and the retry resumes the run from its last checkpoint
(:func:`robustft.api.fine_tune` with ``resume``), so it ends with the run an uninterrupted one gives. A
failing run (an exception in training) is recorded, not retried, as in a sequential sweep.

A point with ``processes_per_run`` > 1 (by default ``--gpus-per-run`` when it is 2 or more) trains under
``torchrun`` with that many processes inside its task, on the GPUs Ray gave it (NCCL; gloo on CPUs): the run
``torchrun --nproc_per_node N -m robustft train`` gives by hand, with robustft's DDP equivalence.

Every node must have robustft installed and see the run directories at the same path: run the sweep from a
folder on a shared file system (relative ``out_dir`` and data paths are resolved against the driver's working
directory, which each task enters). Next to the run directories, ``OUT_DIR/.sweep/`` keeps each point's
attempt file (host, process id, attempt number) and its log (``NAME.log``: the worker's log lines, or
torchrun's output).

While the sweep runs, a line is logged whenever a point is queued, starts (host, pid, attempt) or finishes an
epoch, and ``OUT_DIR/sweep.json`` holds every point's state and epoch.

A cluster that cannot be reached or joined is a :class:`~robustft.errors.ClusterError` naming the address and the
likely cause: the driver first opens a TCP connection to the address (``JOIN_PROBE_SECONDS`` at most), so nothing
listening there, a wrong host or a firewall is told at once instead of after Ray's own retries. A cluster started
with token authentication (``RAY_AUTH_MODE=token``) is joined only by a driver with ``RAY_AUTH_MODE=token`` and the
cluster's token (``RAY_AUTH_TOKEN``, or the file ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from robustft.config import Config, save_config
from robustft.errors import ClusterError, ConfigError, MissingDependencyError
from robustft.experiments.point import SweepPoint, default_train, run_point
from robustft.experiments.state import SweepRecorder
from robustft.runs import RunDir, write_json

log = logging.getLogger(__name__)

STATE_DIR = ".sweep"
"""Folder of OUT_DIR with each point's attempt file, config (torchrun points) and log."""

Result = tuple[str, "str | None", "str | None", float]

JOIN_PROBE_SECONDS = 5.0
"""How long the driver waits for a TCP connection to a cluster's address before it calls the cluster unreachable."""

_AUTH_WORDS = ("AuthenticationError", "InvalidAuthToken", "Unauthenticated")
"""Words of Ray's errors when a cluster with token authentication refuses a driver."""


@dataclass(frozen=True)
class RayOptions:
    """How a sweep runs on Ray.

    Args:
        address: the cluster to join (``ray start --head`` prints it; ``auto`` finds one started on this
            machine); None starts a Ray instance on this machine for the sweep and stops it after.
        cpus_per_run: CPUs each point asks for (also its torch threads).
        gpus_per_run: GPUs each point asks for (0: CPU only).
        processes_per_run: processes of each point's run (torchrun); None: ``gpus_per_run`` when ≥ 2, else 1.
        max_retries: how often a point whose worker died is started again (resuming its run).
        poll_seconds: how often the driver looks at the running points (their epoch, a new attempt).
    """

    address: str | None = None
    cpus_per_run: float = 1
    gpus_per_run: float = 0
    processes_per_run: int | None = None
    max_retries: int = 2
    poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        problems = []
        if not self.cpus_per_run > 0:
            problems.append(f"cpus_per_run must be > 0, got {self.cpus_per_run}")
        if self.gpus_per_run < 0 or (self.gpus_per_run > 1 and self.gpus_per_run != int(self.gpus_per_run)):
            problems.append(f"gpus_per_run: 0, a fraction of one GPU, or a whole number, got {self.gpus_per_run}")
        if self.processes_per_run is not None and self.processes_per_run < 1:
            problems.append(f"processes_per_run must be at least 1, got {self.processes_per_run}")
        if self.gpus_per_run >= 2 and self.processes not in (1, int(self.gpus_per_run)):
            problems.append(f"processes_per_run ({self.processes}) must be 1 or gpus_per_run "
                            f"({int(self.gpus_per_run)}): each process of a run uses one GPU")
        if self.max_retries < 0:
            problems.append(f"max_retries must be ≥ 0, got {self.max_retries}")
        if self.address not in (None, "", "auto", "local") and _host_port(self.address) is None:
            problems.append(f"address {self.address!r} is not HOST:PORT: give the address `ray start --head` "
                            "printed (port 6379 unless it was given --port), or auto for the cluster started on this "
                            "machine")
        if problems:
            raise ConfigError(problems)

    @property
    def processes(self) -> int:
        """Processes of each point's run."""
        if self.processes_per_run is not None:
            return self.processes_per_run
        return int(self.gpus_per_run) if self.gpus_per_run >= 2 else 1


def run_on_ray(todo: list[tuple[int, SweepPoint]], out_dir: Path, train: Callable[[Config], Any] | None,
               options: RayOptions, record: SweepRecorder) -> None:
    """Run the sweep points ``todo`` (``(index, SweepPoint)``) as Ray tasks; ``record`` hears of each point
    queued, running (its epoch and attempt) and ended (see :func:`robustft.experiments.sweep.run_sweep`).

    Raises:
        MissingDependencyError: Ray is not installed.
        ClusterError: the cluster at ``options.address`` cannot be reached or joined.
        ConfigError: no node of the cluster can hold a point (fewer CPUs or GPUs than it asks for), or a custom
            ``train`` with more than one process per run.
    """
    try:
        import ray
        from ray.exceptions import RayError
    except ImportError as err:
        raise MissingDependencyError("sweeps on Ray need Ray: pip install 'robustft[cluster]' (or pip install ray)"
                                     ) from err
    if train is not None and options.processes > 1:
        raise ConfigError("a sweep with its own train function runs one process per point; several processes per "
                          "point train with robustft's trainer under torchrun")
    total = len(record.points)
    started = not ray.is_initialized()
    if started:
        log.info("sweep: %s", f"joining the Ray cluster at {options.address}" if options.address else
                 "Ray on this machine (one started with `ray start`, else a new one for this sweep)")
        join_ray(options.address)
    try:
        _check_resources(ray.nodes(), options)
        state = out_dir / STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        for _, point in todo:  # attempts are counted per sweep invocation
            attempt_path(out_dir, point.name).unlink(missing_ok=True)
        task = ray.remote(_point_task)
        cwd, threads = os.getcwd(), max(1, int(options.cpus_per_run))
        refs = {task.options(name=f"robustft:{p.name}", num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run,
                             max_retries=options.max_retries, retry_exceptions=False)
                .remote(train, p, cwd, options.processes, threads): (i, p) for i, p in todo}
        view = _View(total, out_dir, record)
        for i, point in todo:
            view.queued(i, point)
        log.info("sweep: %d runs on Ray, each with %g CPU%s and %g GPU%s, %d process%s; retried up to %d times",
                 len(todo), options.cpus_per_run, "s" * (options.cpus_per_run != 1), options.gpus_per_run,
                 "s" * (options.gpus_per_run != 1), options.processes, "es" * (options.processes > 1),
                 options.max_retries)
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=options.poll_seconds)
                for ref in ready:
                    i, point = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayError as err:  # the worker died more often than max_retries allows
                        result = ("failed", f"{type(err).__name__}: the point's worker died "
                                  f"{options.max_retries + 1} time(s) ({str(err).splitlines()[0][:300]})",
                                  traceback.format_exc(), math.nan)
                    view.poll(i, point)
                    record.finished(i, point, result)
                    log.info("[%d/%d] %s: %s", i, total, point.name, result[0])
                for i, point in refs.values():
                    view.poll(i, point)
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


def join_ray(address: str | None) -> None:
    """``ray.init`` on the cluster at ``address`` (``HOST:PORT``, ``auto``; None: ``RAY_ADDRESS``, else the one
    started on this machine with ``ray start``, else a new Ray instance for this process).

    Raises:
        ClusterError: the cluster cannot be reached (nothing listens at the address, no answer, a host name that
            does not resolve: told within ``JOIN_PROBE_SECONDS``) or refuses this driver (token authentication,
            another Ray version); the message names the address and the likely cause.
    """
    import ray
    from ray.exceptions import RayError

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and (target := _host_port(address)):
        _probe(address, *target)
    try:
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, RayError) as err:
        if address is None and not isinstance(err, (ConnectionError, RayError)):
            raise  # starting Ray on this machine failed: not a cluster to join
        raise ClusterError(_join_failure(address, err)) from err


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST:PORT``; None when there is no port."""
    host, colon, port = address.split("://", 1)[-1].rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def _probe(address: str, host: str, port: int) -> None:
    """Open (and close) a TCP connection to ``host:port``; a ClusterError with the cause when none opens."""
    try:
        with socket.create_connection((host, port), timeout=JOIN_PROBE_SECONDS):
            return
    except socket.gaierror as err:
        cause = f"the host name {host!r} does not resolve ({err.strerror}): check the address"
    except ConnectionRefusedError:
        cause = (f"nothing listens on port {port} of {host}: start the cluster's head there with `ray start --head "
                 f"--port {port}`, or give the address that `ray start --head` printed")
    except TimeoutError:
        cause = (f"no answer within {JOIN_PROBE_SECONDS:g} s: the host is down, or a firewall drops port {port}; "
                 "open it (and Ray's other ports) between this machine and the cluster")
    except OSError as err:
        cause = (f"{err.strerror or err}: check the host, and that no firewall stands between this machine and port "
                 f"{port}")
    raise ClusterError(f"cannot reach the Ray cluster at {address}: {cause}")


def _join_failure(address: str | None, err: BaseException) -> str:
    """One line naming ``address`` and the likely cause of ``err``, which ``ray.init`` raised."""
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(str(e) for e in chain)
    where = f"the Ray cluster at {address}" if address else "a Ray cluster"
    if any(word in text for word in _AUTH_WORDS):
        mode = os.environ.get("RAY_AUTH_MODE", "disabled")
        return (f"{where} refused this driver: it uses token authentication (RAY_AUTH_MODE here: {mode}); set "
                "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or the file RAY_AUTH_TOKEN_PATH or "
                "~/.ray/auth_token; `ray get-auth-token` on the head prints it) here and on every node")
    if "version mismatch" in text.lower():
        return f"cannot join {where}: {_first_line(text)}: run the same Ray and Python versions on every machine"
    if address in (None, "auto"):
        return (f"no Ray cluster runs on this machine ({_first_line(str(err))}): start one with `ray start --head`, "
                "or give the address of the cluster to join")
    return (f"cannot join {where}: {_first_line(str(err))}: check that {address} is the address `ray start --head` "
            "printed (the GCS port, 6379 unless given --port, not the dashboard's), that this machine runs the "
            "cluster's Ray and Python versions, and, if the cluster uses token authentication, that RAY_AUTH_MODE=token "
            "and its token are set here")


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300].rstrip(".")


def _check_resources(nodes: list[dict[str, Any]], options: RayOptions) -> None:
    """Refuse a point that no live node can hold (Ray would keep it pending for ever); ``nodes`` as
    ``ray.nodes()`` gives them."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    if any(r.get("CPU", 0.0) >= options.cpus_per_run and r.get("GPU", 0.0) >= options.gpus_per_run for r in alive):
        return
    have = ", ".join(f"{r.get('CPU', 0.0):g} CPUs + {r.get('GPU', 0.0):g} GPUs" for r in alive) or "no live node"
    raise ConfigError(f"each point asks for {options.cpus_per_run:g} CPUs and {options.gpus_per_run:g} GPUs on one "
                      f"node, but the Ray cluster's nodes have {have}: lower --cpus-per-run / --gpus-per-run, or add "
                      "a larger node")


class _View:
    """What the driver shows of the running points: a log line at each change of state, attempt or epoch,
    and the same in ``sweep.json`` (through the sweep's recorder)."""

    def __init__(self, total: int, out_dir: Path, record: SweepRecorder):
        self.total, self.out_dir, self.record = total, out_dir, record
        self.seen: dict[str, tuple] = {}

    def queued(self, i: int, point: SweepPoint) -> None:
        self.seen[point.name] = ("queued",)
        self.record.queued(point)

    def poll(self, i: int, point: SweepPoint) -> None:
        attempt = read_attempt(self.out_dir, point.name)
        if attempt is None:
            return
        run = RunDir(self.out_dir / point.name)
        epoch = len(run.epoch_rows()) if run.metrics_path.is_file() else 0
        now = ("running", attempt.get("attempt"), epoch)
        if self.seen.get(point.name) == now:
            return
        self.seen[point.name] = now
        self.record.running(point, epoch, attempt.get("attempt"), attempt.get("host"), attempt.get("pid"))
        log.info("[%d/%d] %s: running, epoch %d/%d (attempt %s on %s, pid %s)", i, self.total, point.name, epoch,
                 point.config.train.epochs, attempt.get("attempt"), attempt.get("host"), attempt.get("pid"))


def attempt_path(out_dir: Path, name: str) -> Path:
    """The attempt file of the point ``name``: ``OUT_DIR/.sweep/NAME.json``."""
    return Path(out_dir) / STATE_DIR / f"{name}.json"


def read_attempt(out_dir: Path, name: str) -> dict[str, Any] | None:
    """The last attempt of a point's Ray task (``attempt``, ``host``, ``pid``, ``started``, and ``launcher_pid``
    under torchrun), or None before its first attempt started (or while the file is being replaced)."""
    try:
        attempt = json.loads(attempt_path(out_dir, name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return attempt if isinstance(attempt, dict) else None


# ------------------------------------------------------------------------------------ in the Ray worker
def _point_task(train: Callable[[Config], Any] | None, point: Any, cwd: str, processes: int, threads: int) -> Result:
    """One sweep point in a Ray worker: record the attempt, then train (in this process, or under torchrun)."""
    host = socket.gethostname()
    if not os.path.isdir(cwd):
        return ("failed", f"the sweep's working directory {cwd} does not exist on {host}: run sweeps on Ray from a "
                "folder every node sees at the same path (a shared file system)", None, 0.0)
    with _entered(cwd):
        out = Path(point.config.train.out_dir)
        state = out / STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        attempt_file = attempt_path(out, point.name)
        previous = read_attempt(out, point.name) or {}
        _stop_leftover(previous, host)
        attempt = {"attempt": int(previous.get("attempt", 0)) + 1, "host": host, "pid": os.getpid(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(attempt_file, attempt)
        os.environ["TQDM_DISABLE"] = "1"
        torch.set_num_threads(threads)
        if processes == 1:
            with _logged_to(state / f"{point.name}.log", point.name):
                return run_point(train or default_train, point)
        return _run_under_torchrun(point, processes, threads, attempt_file, attempt)


@contextlib.contextmanager
def _entered(folder: str) -> Iterator[None]:
    here = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


@contextlib.contextmanager
def _logged_to(path: Path, name: str) -> Iterator[None]:
    """The run's log lines (INFO and up) appended to ``path`` while it trains."""
    root = logging.getLogger()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [{name}] %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def _run_under_torchrun(point: Any, processes: int, threads: int, attempt_file: Path, attempt: dict) -> Result:
    """Train ``point`` with ``torchrun --nproc_per_node processes -m robustft train`` (resuming), its output
    appended to the point's log."""
    t0 = time.perf_counter()
    state = attempt_file.parent
    config = state / f"{point.name}.yaml"
    save_config(point.config, config)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "robustft", "train", str(config), "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes)), "TQDM_DISABLE": "1"}
    logfile = state / f"{point.name}.log"
    with open(logfile, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        write_json(attempt_file, {**attempt, "launcher_pid": proc.pid})
        code = proc.wait()
    seconds = time.perf_counter() - t0
    if code == 0 and RunDir(Path(point.config.train.out_dir) / point.name).done:
        return "ran", None, None, seconds
    tail = logfile.read_text().splitlines()[-15:]
    return ("failed", f"torchrun with {processes} processes exited with {code} (log: {logfile})", "\n".join(tail),
            seconds)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """torchrun gets SIGTERM when the Ray worker that started it dies (Linux), and stops its processes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_leftover(previous: dict, host: str) -> None:
    """Stop a torchrun that an earlier attempt of this point left running on this host (its worker died
    where PR_SET_PDEATHSIG does not exist), so two attempts never write one run directory."""
    pid = previous.get("launcher_pid")
    if not pid or previous.get("host") != host:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return
    if "torch.distributed.run" in cmdline:
        log.warning("stopping torchrun (pid %d) left by attempt %s", pid, previous.get("attempt"))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(120):  # torchrun stops its processes first
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
