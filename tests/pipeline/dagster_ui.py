"""Helpers for tests that talk to a running Dagster webserver on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    """The ``data`` of a GraphQL query to the webserver on ``port``; GraphQL errors fail the test."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert not body.get("errors"), body["errors"]
    return body["data"]


def wait_for_ui(port: int, timeout: float = 120) -> None:
    """Wait until the webserver on ``port`` answers ``/server_info``."""
    import time

    import pytest

    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            return
        except OSError:
            if time.time() > deadline:
                pytest.fail(f"the Dagster UI did not answer /server_info within {timeout:.0f} s")
            time.sleep(1)
