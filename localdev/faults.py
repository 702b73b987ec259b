"""Fault injection for drills against the local stack and the local Airflow.

- ``TcpProxy``: a loopback TCP proxy in front of moto's S3 server that can be cut (every
  connection reset, new ones refused) and restored, or armed to cut in the middle of the
  next upload. Restarting moto instead would lose the objects it holds in memory.
- ``stop_server``, ``start_server``, ``restart_server``: one PostgreSQL server of the stack
  (``source``, ``warehouse``), through ``pg_ctl`` as ``LocalStack.servers()`` runs it.
- ``dbt_processes``, ``is_idle``, ``kill_dbt``: the dbt commands a process (e.g. the local
  Airflow's scheduler, whose LocalExecutor runs the tasks) started, whether one is idle, and
  SIGKILL of one of them by its pid.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

import psutil

from localdev.stack import running_pid

if TYPE_CHECKING:
    from localdev.airflow_local import LocalAirflow
    from localdev.stack import LocalStack, PostgresServer

T = TypeVar("T")

_CHUNK = 1 << 16
_HEADER_END = b"\r\n\r\n"


class FaultError(RuntimeError):
    """A fault could not be injected or a condition was not reached; the message says which."""


def wait_until(condition: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise FaultError(f"Timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return result


class TcpProxy:
    """Forward 127.0.0.1:``port`` to 127.0.0.1:``target_port``, with faults on demand.

    ``cut()`` resets every open connection and closes the listening socket, so that
    clients get "connection refused" as from a server that is down; ``restore()`` listens
    again on the same port. ``cut_during_upload(after_bytes)`` lets the next HTTP ``PUT``
    through with only its headers and ``after_bytes`` of its body, then cuts.
    """

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self.tripped = threading.Event()
        self.cut_request: str | None = None
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._upload_budget: int | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        """Listen (on a free port the first time) and forward; returns itself."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def restore(self) -> None:
        """Accept connections again after ``cut()``; disarms a pending upload cut."""
        with self._lock:
            self._upload_budget = None
        if self._listener is None:
            self.start()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until ``restore()``."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
            self._upload_budget = None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for connection in connections:
            _reset(connection)

    def cut_during_upload(self, after_bytes: int = 256 * 1024) -> None:
        """Cut once the next ``PUT`` has sent its headers and ``after_bytes`` of its body."""
        self.tripped.clear()
        self.cut_request = None
        with self._lock:
            self._upload_budget = after_bytes

    def close(self) -> None:
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- forwarding ------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut() closed the listener
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    _reset(client)
                    _reset(upstream)
                    return
                self._connections |= {client, upstream}
            threading.Thread(
                target=self._pump_requests, args=(client, upstream), daemon=True
            ).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source, sink)

    def _pump_requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to server, watching for the ``PUT`` that an armed upload cut waits for."""
        remaining: int | None = None  # body bytes still let through for the upload being cut
        try:
            while data := client.recv(_CHUNK):
                if remaining is None and data.startswith(b"PUT "):
                    with self._lock:
                        budget = self._upload_budget
                    if budget is not None:
                        self.cut_request = data.split(b"\r\n", 1)[0].decode("latin-1")
                        header_end = data.find(_HEADER_END)
                        headers = len(data) if header_end < 0 else header_end + len(_HEADER_END)
                        upstream.sendall(data[:headers])
                        data, remaining = data[headers:], budget
                if remaining is not None:
                    upstream.sendall(data[:remaining])
                    remaining -= min(len(data), remaining)
                    if remaining == 0:
                        self.cut()
                        self.tripped.set()
                        return
                    continue
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(client, upstream)

    def _drop(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._connections -= set(sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a peer that vanished does, rather than an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def aws_connection_through(stack: LocalStack, proxy: TcpProxy) -> dict[str, str]:
    """The ``AIRFLOW_CONN_AWS_DEFAULT`` variable of ``stack``, its S3 endpoint the proxy."""
    name = "AIRFLOW_CONN_AWS_DEFAULT"
    direct = quote(f"http://127.0.0.1:{stack.s3_port}", safe="")
    uri = stack.connection_uris()[name]
    if direct not in uri:
        raise FaultError(f"{name} does not name the S3 endpoint {direct}: {uri.split('@')[-1]}")
    return {name: uri.replace(direct, quote(proxy.endpoint_url, safe=""))}


# --- the stack's PostgreSQL servers ------------------------------------------------------


def stop_server(stack: LocalStack, role: str, mode: str = "fast") -> None:
    """Stop the ``source`` or ``warehouse`` server: ``fast`` ends its sessions and shuts down
    cleanly (``LocalStack``'s own stop); ``immediate`` kills it as a crash would, and the next
    start recovers from the WAL."""
    server = stack.servers()[role]
    if mode == "fast":
        server.stop()
    else:
        result = _pg_ctl(server, "stop", "-w", "-m", mode)
        if result.returncode != 0:
            raise FaultError(f"pg_ctl stop -m {mode} of the {role} server: {result.stderr}")
    if server.is_running():
        raise FaultError(f"The {role} server ({server.name}) did not stop; see {server.log_file}")


def start_server(stack: LocalStack, role: str) -> None:
    """Start a server that ``stop_server`` stopped, on its port and data directory."""
    stack.servers()[role].start()


def restart_server(
    stack: LocalStack, role: str, down_seconds: float = 0.0, mode: str = "fast"
) -> None:
    """Stop a server (``mode`` as ``stop_server``), leave it down ``down_seconds``, start it."""
    stop_server(stack, role, mode)
    time.sleep(down_seconds)
    start_server(stack, role)


def _pg_ctl(server: PostgresServer, *args: str) -> subprocess.CompletedProcess:
    """``pg_ctl <args> -D <data dir>``, as ``nobody`` when we are root (as the stack runs it)."""
    kwargs: dict = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        kwargs = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    command = [str(server.bin_dir / "pg_ctl"), *args, "-D", str(server.data_dir)]
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


# --- processes ----------------------------------------------------------------------------


def component_pid(airflow: LocalAirflow, name: str) -> int:
    """The pid of a running component of the local Airflow (``scheduler`` runs the tasks)."""
    pid = running_pid(airflow.home / f"{name}.pid")
    if pid is None:
        raise FaultError(f"The local Airflow's {name} is not running (home {airflow.home})")
    return pid


def dbt_processes(root_pid: int, *words: str) -> list[psutil.Process]:
    """The dbt commands running under ``root_pid`` whose arguments include every one of
    ``words`` (e.g. ``"build"``, or ``"run", "--select"``)."""
    found = []
    try:
        descendants = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for process in descendants:
        try:
            command = process.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        dbt = [i for i, part in enumerate(command) if Path(part).name == "dbt"]
        if dbt and all(word in command[dbt[0] + 1 :] for word in words):
            found.append(process)
    return found


def is_idle(process: psutil.Process, seconds: float = 2.0, cpu_seconds: float = 0.1) -> bool:
    """Whether ``process`` (all its threads) uses less than ``cpu_seconds`` of CPU over the
    next ``seconds``: a dbt command waiting on the warehouse, with nothing else left to run."""
    try:
        before = sum(process.cpu_times()[:2])
        time.sleep(seconds)
        return sum(process.cpu_times()[:2]) - before < cpu_seconds
    except psutil.NoSuchProcess:
        return False


def kill_dbt(root_pid: int, *words: str, timeout: float = 60) -> list[str]:
    """Wait for one dbt command under ``root_pid`` matching ``words``, SIGKILL it (and only
    it) by its pid; return its command line."""
    (process, *_) = wait_until(
        lambda: dbt_processes(root_pid, *words), timeout, f"a dbt {' '.join(words)} process"
    )
    command = process.cmdline()
    os.kill(process.pid, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        process.wait(timeout=10)  # gone once the task that ran it has reaped it
    return command
