"""``nonxfer-bench ui``: the MLflow UI on the store a suite logs to, as one process group stopped as a whole."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.loading import load_suite
from nonxfer_bench.tracking.tracker import check_tracking_uri, experiment_url, find_experiment, tracking_uri


def serve_ui(suite_file: Path, host: str, port: int) -> int:
    """The MLflow UI on the store ``suite_file`` logs to, until Ctrl-C or SIGTERM (a server's own UI: its link only);
    returns the server's exit code."""
    suite = load_suite(suite_file, require_weights=False)
    uri = tracking_uri(suite)
    served = uri.startswith(("http://", "https://"))  # a tracking server already serves its own UI
    if not served:
        _check_listen(host, port)  # before the link: a taken port or an unknown host is one line, not a dead link
    check_tracking_uri(uri)  # a server that is down: one line now, not minutes of MLflow's retries
    experiment = find_experiment(uri, suite.tracking.experiment or suite.name)
    if served:
        print(f"{suite.name} logs to the MLflow server {uri}: open {experiment_url(uri, experiment)}")
        return 0
    print(f"MLflow UI for {uri}: {experiment_url(f'http://{host}:{port}', experiment)}", flush=True)
    # one worker: a local UI for one person starts about twice as fast as mlflow's default pool on 2 cores
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "1"]
    # its own session: the server, its job runner and their workers form one process group that we stop as a whole
    server = subprocess.Popen([sys.executable, "-m", *command], start_new_session=True)
    try:
        return server.wait()
    finally:  # SIGTERM (raised here as Terminated), Ctrl-C, or the server exiting on its own
        _stop_group(server)


def _check_listen(host: str, port: int) -> None:
    """That a server can listen on ``host``:``port``: the name resolves to an address of this machine and the port is
    free (bound and released at once, with SO_REUSEADDR as servers bind, so a port in TIME_WAIT counts as free)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, ValueError) as error:  # unknown name, NUL byte, a label too long for IDNA
        raise UserError(
            f"ui: --host {excerpt(host)} does not resolve ({error}); use an address of this machine, e.g. --host "
            "127.0.0.1"
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise UserError(
                f"ui: cannot listen on --host {excerpt(host)} --port {port} ({error.strerror or error}): another "
                "server on that port, or not an address of this machine; give another --port or --host"
            ) from None


def _stop_group(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM to ``process``'s process group, then SIGKILL to whatever is left of it after ``grace`` seconds."""
    # a second Ctrl-C or kill must not cut the clean-up short
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()  # reaps the server itself once it has exited
            os.killpg(process.pid, 0)  # ProcessLookupError once every member of the group has exited
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # every member of the server's group has exited: nothing left to stop
    finally:
        process.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
