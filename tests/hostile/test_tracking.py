"""Defect 7: every use of a tracking server is bounded in time and ends in one line when the server is dead,
silent, speaks another protocol or fails."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import digits_suite
from tests.hostile.conftest import refused

BOUND = 30.0  # seconds a refused command may take against a server that never answers


@contextlib.contextmanager
def server(kind: str) -> Iterator[str]:
    """A loopback server that misbehaves as ``kind`` says; yields its ``host:port``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    if kind == "dead":
        listener.close()  # nothing listens on this port any more
        yield address
        return
    held: list[socket.socket] = []
    replies = {
        "http": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
        "error": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "garbage": b"\x00\xff not http at all \r\n\r\n",
    }

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            if kind == "silent":
                held.append(connection)  # accept, read nothing, answer nothing
                continue
            with connection:
                connection.settimeout(2)
                with contextlib.suppress(OSError):
                    connection.recv(65536)
                    connection.sendall(replies[kind])

    thread = threading.Thread(target=serve, daemon=True)
    if kind != "backlog":  # "backlog": the kernel completes connections that nobody ever accepts
        thread.start()
    try:
        yield address
    finally:
        listener.close()
        for connection in held:
            connection.close()


KINDS = ["dead", "silent", "backlog", "error", "garbage"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_run_against_a_broken_server(tmp_path: Path, cwd: Path, digits_zoo: Path, kind: str) -> None:
    with server(kind) as address:
        suite = digits_suite(tmp_path, digits_zoo, tracking={"enabled": True, "uri": f"http://{address}"})
        refused("run", suite, cwd=cwd, timeout=BOUND, isolate=True, expected=("MLflow", address))


@pytest.mark.slow
def test_https_to_a_plain_http_port(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    with server("http") as address:
        suite = digits_suite(tmp_path, digits_zoo, tracking={"enabled": True, "uri": f"https://{address}"})
        refused("run", suite, cwd=cwd, timeout=BOUND, isolate=True, expected=("MLflow", address))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "command"), [(kind, "leaderboard") for kind in KINDS] + [("silent", "report"), ("dead", "report")]
)
def test_reading_back_from_a_broken_server(cwd: Path, kind: str, command: str) -> None:
    with server(kind) as address:
        refused(
            command,
            "--experiment",
            "x",
            "--tracking-uri",
            f"http://{address}",
            cwd=cwd,
            timeout=BOUND,
            isolate=True,
            expected=(address,),
        )


@pytest.mark.slow
def test_tracking_uri_from_the_environment_is_probed(tmp_path: Path, cwd: Path, digits_zoo: Path) -> None:
    suite = digits_suite(tmp_path, digits_zoo)
    with server("silent") as address:
        refused(
            "leaderboard",
            suite,
            "--mlflow",
            cwd=cwd,
            timeout=BOUND,
            isolate=True,
            env={"MLFLOW_TRACKING_URI": f"http://{address}"},
            expected=(address,),
        )


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://example.invalid/x",
        "http://",
        "http://[::1",
        "http://127.0.0.1:99999",
        "no-scheme-at-all",
        "sqlite:///",
        "http://user:pw@127.0.0.1:1/" + "x" * 5000,
    ],
    ids=["ftp", "no host", "bad ipv6", "port out of range", "no scheme", "empty sqlite", "long"],
)
def test_malformed_tracking_uris(cwd: Path, uri: str) -> None:
    line = refused("leaderboard", "--experiment", "x", "--tracking-uri", uri, cwd=cwd)  # no server: in-process
    assert len(line) < 600
