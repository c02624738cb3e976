"""Smoke test of ``neuro-pipeline ui``: start it with a fresh home, ask the webserver and the
daemon whether they are healthy, then stop it with a signal and time the shutdown.

Usage: ``.venv/bin/python scripts/ui_smoke.py [--port 3999] [--signal TERM|INT] [-c pipeline.yaml]``

It checks what a user relies on: ``/server_info`` answers, the code location loads, every
daemon is healthy, the sensors run, the output carries no SupersessionWarning, and one
signal to the command's process stops the whole process tree. Exit status 0 when all hold.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=3999)
    parser.add_argument("--signal", choices=["TERM", "INT"], default="TERM")
    parser.add_argument("-c", "--config")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ui-smoke-"))
    cmd = [sys.executable, "-m", "neuro_pipeline.cli", "ui", "--home", str(home), "--port", str(args.port),
           *(["-c", args.config] if args.config else [])]
    with open(home / "ui.log", "w+", encoding="utf-8") as log:
        start = time.perf_counter()
        ui = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        failures: list[str] = []
        try:
            _check(args.port, ui, start, failures)
        finally:
            stop = time.perf_counter()
            if ui.poll() is not None:
                failures.append(f"neuro-pipeline ui exited by itself (exit {ui.returncode})")
            else:
                os.kill(ui.pid, getattr(signal, f"SIG{args.signal}"))  # the command's own process, as kill or Ctrl-C
                try:
                    ui.wait(timeout=30)
                    print(f"SIG{args.signal} to pid {ui.pid}: stopped in {time.perf_counter() - stop:.1f} s "
                          f"(exit {ui.returncode})")
                except subprocess.TimeoutExpired:
                    failures.append(f"SIG{args.signal} did not stop it within 30 s")
                    os.killpg(ui.pid, signal.SIGKILL)
            _wait_for_group(ui.pid, failures)
            log.seek(0)
            output = log.read()
            print("first output line:", output.splitlines()[0] if output else "(none)")
            if "SupersessionWarning" in output or "superseded" in output:
                failures.append("the output carries a SupersessionWarning")
            if failures:
                print("last output lines:", *output.splitlines()[-15:], sep="\n  ")
            for failure in failures:
                print("FAILED:", failure)
            print(f"full output: {home / 'ui.log'}")
    return 1 if failures else 0


def _wait_for_group(pgid: int, failures: list[str], timeout: float = 60) -> None:
    """Wait until the command's process group is empty: the code server that ``dg dev`` (and
    ``dagster dev``) started exits by itself once its heartbeat stops."""
    start = time.perf_counter()
    seen: dict[str, str] = {}
    while time.perf_counter() - start < timeout:
        left = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True, check=False).stdout.split()
        if not left:
            if seen:
                print(f"its group was empty {time.perf_counter() - start:.1f} s after it exited; "
                      f"the last to go: {'; '.join(seen.values())}")
            return
        for pid in left:
            seen.setdefault(pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:90]
                            if Path(f"/proc/{pid}/cmdline").exists() else pid)
        time.sleep(0.5)
    failures.append(f"processes of its group still running {timeout:.0f} s after it exited: {list(seen.values())}")
    os.killpg(pgid, signal.SIGKILL)


def _check(port: int, ui: subprocess.Popen, start: float, failures: list[str]) -> None:
    """Wait for the webserver, then query the code location, the daemons and the sensors."""
    while True:
        try:
            info = urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2).read()
            break
        except OSError:
            if ui.poll() is not None or time.perf_counter() - start > 120:
                failures.append("the webserver did not answer /server_info within 120 s")
                return
            time.sleep(0.5)
    print(f"/server_info after {time.perf_counter() - start:.1f} s: {info.decode()}")
    time.sleep(5)  # let the daemon report its first heartbeats
    locations = graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                              "locationOrLoadError { __typename } } } } }")
    print("code locations:", locations["workspaceOrError"]["locationEntries"])
    daemons = graphql(port, "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }")
    statuses = daemons["instance"]["daemonHealth"]["allDaemonStatuses"]
    print("daemons:", ", ".join(f"{d['daemonType']}={'ok' if d['healthy'] else 'UNHEALTHY'}" for d in statuses))
    if not all(d["healthy"] for d in statuses):
        failures.append("a daemon is unhealthy")
    sensors = graphql(port, '{ sensorsOrError(repositorySelector: {repositoryName: "__repository__", '
                            'repositoryLocationName: "neuro"}) { ... on Sensors { results { name '
                            'sensorState { status } } } } }')["sensorsOrError"]["results"]
    print("sensors:", ", ".join(f"{s['name']}={s['sensorState']['status']}" for s in sensors))
    if not sensors or any(s["sensorState"]["status"] != "RUNNING" for s in sensors):
        failures.append("not every sensor is running")
    print(f"asset nodes: {len(graphql(port, '{ assetNodes { id } }')['assetNodes'])}")


if __name__ == "__main__":
    sys.exit(main())
