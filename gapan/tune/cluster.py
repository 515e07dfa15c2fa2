"""Where trials run: Ray started or joined, and the checks that fail fast before it starts."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import socket
from pathlib import Path
from typing import Any

import ray
import torch

from gapan.tune.faults import FAULT_VARIABLE, parse_faults
from gapan.tune.options import StudyError, StudyOptions

LOOPBACK = ("127.0.0.1", "localhost", "::1")
EXPERIMENT_STATE_PERIOD_S = 2


def start_ray(options: StudyOptions) -> None:
    """Start a Ray instance for this study on this machine, or join the cluster at --address.

    Prints the dashboard's address. The `TUNE_*` variables set here are Tune's documented
    settings (its environment-variable reference); a value the user set is kept.
    """
    # Keeping few checkpoints makes Tune snapshot the experiment state every few checkpoints; on
    # cached features that is many times a second, and cheap.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune copies its experiment state (and the trials' result files) into the study folder
    # periodically; a driver killed in between loses the trials finished since, and --resume
    # runs them again. The state of a study is small, so it is saved often.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(EXPERIMENT_STATE_PERIOD_S))
    if ray.is_initialized():
        return
    # Ray's token authentication is left on: every request to the dashboard's API and to the
    # cluster needs the token under ~/.ray.
    try:
        if options.address:
            context = ray.init(address=options.address)
        else:
            if options.dashboard_host not in LOOPBACK:
                print(
                    f"warning: the Ray dashboard listens on {options.dashboard_host}, open to "
                    "every machine that reaches this one (Ray's token guards its API); an SSH "
                    "tunnel to 127.0.0.1 is safer (docs/when-things-go-wrong.md)",
                    flush=True,
                )
            # address="local": a new instance for this study, never a cluster that happens to
            # run here; the dashboard starts wherever ray[default] is installed.
            context = ray.init(
                address="local",
                num_cpus=options.num_cpus,
                include_dashboard=None,
                dashboard_host=options.dashboard_host,
                dashboard_port=dashboard_port(options.dashboard_host, options.dashboard_port),
            )
    except ConnectionError as error:
        raise StudyError(
            f"cannot join the Ray cluster at --address {options.address}: {error}. Start it with "
            "`ray start --head` (and `ray start --address HEAD:6379` on the other nodes), or run "
            "without --address to start Ray on this machine."
        ) from None
    _say_dashboard(context)


def _say_dashboard(context: Any) -> None:
    """Where the dashboard of the Ray instance `context` (`ray.init`'s) listens, or why not."""
    url = context.dashboard_url
    if not url:
        if importlib.util.find_spec("aiohttp") is None:
            print("Ray dashboard: not running (install ray[default])", flush=True)
        else:
            logs = Path(context.address_info.get("session_dir", "/tmp/ray/session_latest"))
            print(
                f"Ray dashboard: did not start; its log says why: {logs / 'logs'}/dashboard.log",
                flush=True,
            )
        return
    print(f"Ray dashboard: http://{url}", flush=True)
    token = make_token_private()
    if token is not None:
        print(
            f"  it asks for Ray's token: paste the output of `ray get-auth-token` (the file "
            f"{token}, readable by you only)",
            flush=True,
        )


def dashboard_port(host: str, port: int) -> int:
    """`port` if it is free on `host`, else a free one, saying so: Ray would start without a
    dashboard rather than say that another study's dashboard holds the port."""
    if port == 0:
        return 0
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As a server binds: a port that only waits out a closed connection is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            return port  # not this machine's address, say: Ray's own message says so
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, 0))
            free = probe.getsockname()[1]
        print(
            f"Ray dashboard: port {port} on {host} is taken ({error.strerror}; another study's "
            f"dashboard?), so this study's listens on port {free}",
            flush=True,
        )
        return free
    return port


def make_token_private() -> Path | None:
    """Ray's token file, made readable by its owner only; None when Ray wrote none here.

    Ray writes the token that guards its cluster and dashboard readable by every local user.
    """
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    try:
        token.chmod(0o600)
    except OSError:
        return None
    return token


def trial_slots(options: StudyOptions) -> int:
    """How many trials the cluster runs at once, as it is now."""
    resources = ray.cluster_resources()
    limits = [options.max_concurrent] if options.max_concurrent else []
    for name, per_trial in (("CPU", options.cpus_per_trial), ("GPU", options.gpus_per_trial)):
        if per_trial:
            limits.append(resources.get(name, 0.0) / per_trial)
    return max(1, int(min(limits, default=1)))


@contextlib.contextmanager
def pending_trials_limit(slots: int):
    """Let Tune prepare a trial for every slot, not one at a time.

    With a searcher, Tune keeps one pending trial: the second slot's trial is created only once
    the first one runs, and its worker (importing torch, loading the data) starts seconds later.
    A limit of one per slot starts them all together. It caps pending trials only, so a cluster
    that grows still gets more trials. A value the user set is kept.
    """
    name = "TUNE_MAX_PENDING_TRIALS_PG"
    if name in os.environ:
        yield
        return
    os.environ[name] = str(slots)
    try:
        yield
    finally:
        del os.environ[name]


def check_before_ray(options: StudyOptions) -> None:
    """Options that would make Ray wait or retry for minutes fail here, in seconds."""
    parse_faults(os.environ.get(FAULT_VARIABLE, ""))
    if options.address:
        _check_address(options.address)
    elif not ray.is_initialized():
        _check_resources(options)


def _check_address(address: str) -> None:
    # Ray retries an address where no head node answers for minutes before it gives up.
    if address == "auto" or "://" in address:
        return  # auto fails at once when no cluster runs here; ray:// is Ray Client's
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(
            f"--address {address!r}: expected auto or HOST:PORT (the head node's "
            "port, 6379 unless `ray start --head --port` chose another)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as error:
        raise StudyError(
            f"--address {address}: no Ray head node answers there ({error}). Start one with "
            "`ray start --head` on that machine, or fix --address."
        ) from None


def _check_resources(options: StudyOptions) -> None:
    # A trial that asks for more than the Ray instance started here has would wait forever. (A
    # cluster may grow with its autoscaler, so --address skips this; Tune reports what it
    # cannot place.)
    have = {
        "--cpus-per-trial": options.num_cpus or os.cpu_count() or 1,
        "--gpus-per-trial": torch.cuda.device_count(),
    }
    asked = {"--cpus-per-trial": options.cpus_per_trial, "--gpus-per-trial": options.gpus_per_trial}
    for flag, wanted in asked.items():
        if wanted < 0 or wanted > have[flag]:
            raise StudyError(
                f"{flag} {wanted:g}, but the Ray instance this study starts here has "
                f"{have[flag]:g}, so no trial could ever start. Give {flag} between 0 and "
                f"{have[flag]:g}"
                + (" (or raise --num-cpus)" if flag == "--cpus-per-trial" else "")
                + ", or join a larger cluster with --address."
            )
