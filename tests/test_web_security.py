"""The worker's web server: loopback by default, and /users only for those let in.

Faust's /table and /router views being off is checked in test_worker.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_worker import records_of, start_worker, topics
from worker_harness import Topics, Worker, produce, wait_for

from builders import purchase

pytestmark = pytest.mark.integration
__all__ = ["start_worker", "topics"]  # fixtures shared with test_worker

TOKEN = "t0ken-for-a-loopback-test-worker"  # noqa: S105 - a test token, never deployed
LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp


def listening_addresses(port: int) -> set[str]:
    """The local addresses of every socket on this machine that listens on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == LISTEN and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word of the address in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


def test_by_default_the_web_server_listens_on_loopback_only(
    start_worker: Callable[..., Worker],
) -> None:
    # Faust's own variable for the interface must not widen it either.
    worker = start_worker(extra_env={"FAUST_WEB_BIND": "0.0.0.0"})  # noqa: S104
    worker.wait_ready()
    assert listening_addresses(worker.port) == {"127.0.0.1"}


def test_without_a_token_user_state_is_refused_but_health_and_metrics_answer(
    start_worker: Callable[..., Worker],
) -> None:
    worker = start_worker()
    worker.wait_ready()
    status, body = worker.get("/users/u-1/")
    assert status == 403
    assert body["error"] == "forbidden"
    assert "LINEGUARD_API_TOKEN" in body["detail"]
    assert "LINEGUARD_API_ALLOW_ANONYMOUS=true" in body["detail"]
    assert worker.get("/users/u-1/", TOKEN) == (status, body)  # no token set: none is right
    assert worker.get("/healthz")[0] == 200
    assert worker.get("/metrics")[0] == 200


def test_anonymous_access_is_served_only_when_asked_for(
    kafka_bootstrap: str, topics: Topics, start_worker: Callable[..., Worker]
) -> None:
    records = records_of([purchase("2026-02-01T00:00:00Z", 35000, user="anon-1")])
    asyncio.run(produce(kafka_bootstrap, topics, records))
    worker = start_worker(extra_env={"LINEGUARD_API_ALLOW_ANONYMOUS": "true"})
    worker.wait_ready()
    wait_for(lambda: worker.metric("lineguard_events_total") >= 1, 60, "the purchase")
    status, body = worker.get("/users/anon-1")
    assert status == 200, body
    assert body["user_id"] == "anon-1"
    assert worker.get("/users/anon-1/") == (status, body)  # with a trailing slash too


def test_with_a_token_only_the_exact_bearer_token_is_let_in(
    start_worker: Callable[..., Worker],
) -> None:
    worker = start_worker(extra_env={"LINEGUARD_API_TOKEN": TOKEN})
    worker.wait_ready()
    for wrong in (None, TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        status, body = worker.get("/users/u-1/", wrong)
        assert status == 401, wrong
        assert body["error"] == "unauthorised"
        assert TOKEN not in str(body)
    status, body = worker.get("/users/u-1/", TOKEN)
    assert (status, body["error"]) == (404, "unknown user")  # let in; this user has no state
    assert worker.get("/users/u-1", None)[0] == 401  # the path without the slash is guarded too
    for scheme, token, expected in (
        ("bearer", TOKEN, 404), ("BEARER", TOKEN, 404),  # the scheme is case-insensitive
        ("Basic", TOKEN, 401), ("Bearer", f" {TOKEN}", 401), ("", TOKEN, 401),
    ):  # fmt: skip
        status, _, _ = worker.request("/users/u-1/", {"Authorization": f"{scheme} {token}"})
        assert status == expected, (scheme, token)


def test_a_token_that_is_not_utf8_is_refused_not_an_error(
    start_worker: Callable[..., Worker],
) -> None:
    # aiohttp keeps the byte as a surrogate; encoding it strictly raised, and answered 500.
    worker = start_worker(extra_env={"LINEGUARD_API_TOKEN": TOKEN})
    worker.wait_ready()
    connection = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=10)
    try:
        connection.putrequest("GET", "/users/u-1")
        connection.putheader("Authorization", b"Bearer \xff")
        connection.endheaders()
        assert connection.getresponse().status == 401
    finally:
        connection.close()


def test_user_state_is_not_served_before_the_worker_is_ready(
    start_worker: Callable[..., Worker],
) -> None:
    # Before recovery ends the table may lack a user it will hold, or hold an old state.
    worker = start_worker(extra_env={"LINEGUARD_API_TOKEN": TOKEN})
    # (/readyz, /users) status pairs, /users asked first: a worker that becomes ready in
    # between has answered /users while not ready, never the other way round.
    answers: list[tuple[int, int]] = []
    deadline = time.monotonic() + 90
    while not answers or answers[-1][0] != 200:
        assert time.monotonic() < deadline, f"not ready: {worker.log()}"
        try:
            user = worker.get("/users/u-1", TOKEN)[0]
            ready = worker.get("/readyz")[0]
        except OSError:  # the web server is not up yet
            time.sleep(0.02)
            continue
        answers.append((ready, user))
    unready = [user for ready, user in answers if ready == 503]
    assert unready, "no answer came while the worker was not ready"
    assert set(unready) == {503}, answers
    assert worker.get("/users/u-1", TOKEN)[0] == 404  # ready: this user has no state
