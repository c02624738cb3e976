"""Real services for the distributed tests, on 127.0.0.1 and free ports: a PostgreSQL server
(Debian's postgresql package; the machine image has it) and a Redis server (installed with
``apt-get install -y redis-server`` when missing and we are root, as CI is). Each start
function returns the URL and a stop function; the caller stops what it started."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.pipeline.dagster_ui import free_port

Stop = Callable[[], None]


class Unavailable(RuntimeError):
    """The service's programs are not on this machine and cannot be installed."""


def _find_postgres() -> Path | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / "postgres").is_file() and (root / "initdb").is_file():
            return root
    found = shutil.which("postgres")
    return Path(found).resolve().parent if found else None


def _postgres_bin() -> Path:
    found = _find_postgres()
    if found is None and _can_apt():
        _apt("postgresql")
        found = _find_postgres()
    if found is None:
        raise Unavailable("PostgreSQL's server is not installed (apt-get install postgresql)")
    return found


def _can_apt() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt(package: str) -> None:
    for cmd in (["apt-get", "install", "-y", "-q", package],
                ["sh", "-c", f"apt-get update -q && apt-get install -y -q {package}"]):
        if subprocess.run(cmd, capture_output=True, timeout=600,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}).returncode == 0:
            return
    raise Unavailable(f"apt-get install {package} failed")


def _wait(check: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s: {log.read_text(errors='replace')[-2000:]}")


def _stopper(proc: subprocess.Popen, cleanup: Callable[[], None] | None = None) -> Stop:
    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if cleanup is not None else signal.SIGTERM)  # postgres: fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        if cleanup is not None:
            cleanup()
    return stop


def start_postgres() -> tuple[str, Stop]:
    """A throw-away PostgreSQL cluster (trust authentication, no fsync) on 127.0.0.1; its URL.
    As root the server runs as the ``postgres`` user (PostgreSQL refuses root)."""
    bindir = _postgres_bin()
    data = Path(tempfile.mkdtemp(prefix="neuro-pg-"))
    as_user: dict = {}
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
    log = data / "server.log"
    init = subprocess.run([str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U",
                           "postgres", "--no-sync"], capture_output=True, text=True, timeout=120, cwd=data, **as_user)
    if init.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
    port = free_port()
    with open(log, "wb") as out:
        if as_user:
            shutil.chown(log, "postgres", "postgres")
        proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(data / "db"), "-p", str(port),
                                 "-k", str(data), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                 "-c", "max_connections=200"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=data, **as_user)

    def ready() -> bool:
        return subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                              capture_output=True).returncode == 0

    stop = _stopper(proc, lambda: shutil.rmtree(data, ignore_errors=True))
    try:
        _wait(ready, proc, "postgres", log)
    except BaseException:
        stop()
        raise
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


def start_redis() -> tuple[str, Stop]:
    """A Redis server on 127.0.0.1 keeping nothing on disk; its URL (without a database number)."""
    server = shutil.which("redis-server")
    if server is None and _can_apt():
        _apt("redis-server")
        server = shutil.which("redis-server")
    if server is None:
        raise Unavailable("redis-server is not installed (apt-get install redis-server)")
    folder = Path(tempfile.mkdtemp(prefix="neuro-redis-"))
    port = free_port()
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(folder), "--protected-mode", "yes"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def ready() -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    stop = _stopper(proc)
    try:
        _wait(ready, proc, "redis-server", log)
    except BaseException:
        stop()
        shutil.rmtree(folder, ignore_errors=True)
        raise

    def stop_and_clean() -> None:
        stop()
        shutil.rmtree(folder, ignore_errors=True)
    return f"redis://127.0.0.1:{port}", stop_and_clean


def stop_group(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM to a process started with ``start_new_session=True`` and its whole group (a
    Celery worker's warm shutdown), SIGKILL after ``timeout``; returns once no process of
    the group is left."""
    deadline = time.monotonic() + timeout
    sig = signal.SIGTERM
    while True:
        proc.poll()  # reap the leader: a zombie would keep the group alive
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        time.sleep(0.5)
    proc.wait(timeout=10)


def start_workers(folder: Path, names: list[str], env: dict[str, str], home: str | Path = "home",
                  timeout: float = 180) -> list[subprocess.Popen]:
    """``neuro-pipeline worker -c pipeline.yaml`` in ``folder``, one per name (each in its own
    process group, logging to ``worker-<name>.log``); returns once every one is ready. A
    worker that exits or is not ready in time stops them all and raises with its log."""
    procs = []
    for name in names:
        with open(folder / f"worker-{name}.log", "wb") as log:  # the child keeps its own descriptor
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "neuro_pipeline.cli", "worker", "-c", "pipeline.yaml", "--home", str(home),
                 "--name", name], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def text(name: str) -> str:
        return (folder / f"worker-{name}.log").read_text(errors="replace")

    deadline = time.monotonic() + timeout
    problem = None
    while problem is None:
        exited = [(n, p.returncode) for n, p in zip(names, procs) if p.poll() is not None]
        if exited:
            problem = f"worker {exited[0][0]} exited with {exited[0][1]}: {text(exited[0][0])[-3000:]}"
        elif all(f"{n}@" in text(n) and "ready." in text(n) for n in names):
            return procs
        elif time.monotonic() > deadline:
            problem = f"the Celery workers were not ready within {timeout:.0f} s: {text(names[0])[-3000:]}"
        else:
            time.sleep(0.5)
    for proc in procs:
        stop_group(proc)
    raise RuntimeError(problem)


def new_database(url: str, name: str) -> str:
    """A new, empty database ``name`` on the PostgreSQL server of ``url`` (one of
    :func:`start_postgres`, with or without ``+psycopg2``); its URL, in the form of ``url``."""
    import psycopg2

    base, _, _ = url.rpartition("/")
    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return f"{base}/{name}"
