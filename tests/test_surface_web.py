"""The worker's HTTP surface as an operator meets it: ids no user can have, errors, methods.

A real worker on the test broker answers every request.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from test_worker import start_worker, topics
from worker_harness import Worker, wait_for

pytestmark = pytest.mark.integration
__all__ = ["start_worker", "topics"]  # fixtures shared with test_worker

TOKEN = "t0ken-for-a-loopback-test-worker"  # noqa: S105 - a test token, never deployed
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_a_user_id_no_user_can_have_is_a_400_naming_the_rule(
    start_worker: Callable[..., Worker],
) -> None:
    worker = start_worker(extra_env={"LINEGUARD_API_TOKEN": TOKEN})
    worker.wait_ready()
    chinese = "%E4%B8%AD"  # one code point, three UTF-8 bytes: the rule counts code points
    for path, length in (("x" * 65, 65), (chinese * 65, 65)):
        status, body, headers = worker.request(f"/users/{path}", BEARER)
        assert status == 400, (path, body)
        assert headers["Content-Type"].startswith("application/json")
        assert body["error"] == "bad request"
        assert f"a user_id is 1 to 64 characters; this one has {length}" in body["detail"]
        assert "xxxx" not in body["detail"]  # the id is not echoed back
    status, body, _ = worker.request("/users/%FF", BEARER)  # not UTF-8: aiohttp kept "%FF"
    assert status == 400, body
    assert "not UTF-8" in body["detail"]
    for valid in ("x" * 64, chinese * 64, "%25FF", "u%2F1"):  # at the bound; "%FF"; "u/1"
        status, body, _ = worker.request(f"/users/{valid}", BEARER)
        assert (status, body["error"]) == (404, "unknown user"), valid
    assert worker.request("/users/%25FF", BEARER)[1]["user_id"] == "%FF"
    assert worker.request("/users/" + "x" * 65, {})[0] == 401  # the token is checked first


def test_a_request_aiohttp_cannot_parse_is_one_log_line_without_the_request(
    start_worker: Callable[..., Worker],
) -> None:
    worker = start_worker(extra_env={"LINEGUARD_API_TOKEN": TOKEN})
    worker.wait_ready()
    requests = (
        b"GET /users/u-4242-secret?" + b"x" * 9000 + b" HTTP/1.1\r\n",  # over 8190 bytes
        b"GET /users/u-4242-secret\xff HTTP/1.1\r\n",  # a byte no URL may hold
    )
    for request_line in requests:
        with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as connection:
            connection.sendall(request_line + b"Host: x\r\nConnection: close\r\n\r\n")
            answer = connection.recv(4096)
        assert answer.startswith(b"HTTP/1.0 400 "), answer[:100]
    wait_for(lambda: worker.log().count("http_request_malformed") == 2, 10, "the log lines")
    log = worker.log()
    assert "u-4242-secret" not in log
    assert "Traceback" not in log
    assert '"error": "LineTooLong"' in log


def test_every_error_is_json_with_error_and_detail(start_worker: Callable[..., Worker]) -> None:
    # aiohttp answered an unknown path or a method a path does not take in plain text.
    worker = start_worker(extra_env={"LINEGUARD_API_TOKEN": TOKEN})
    worker.wait_ready()
    answers = {
        ("GET", "/nope"): 404, ("GET", "/users"): 404, ("GET", "/healthz/x"): 404,
        ("POST", "/users/u-1"): 405, ("DELETE", "/metrics"): 405, ("PUT", "/readyz"): 405,
        ("PATCH", "/healthz"): 405, ("GET", "/users/u-1"): 404, ("GET", "/users/" + "x" * 65): 400,
    }  # fmt: skip
    for (method, path), expected in answers.items():
        status, headers, body = _exchange(worker, method, path)
        assert status == expected, (method, path, body)
        assert headers["Content-Type"] == "application/json; charset=utf-8", (method, path)
        document = orjson.loads(body)
        assert {"error", "detail"} <= document.keys(), (method, path, document)
        if expected == 405:
            assert headers["Allow"] == "GET,HEAD"
            assert f"{method} here; only GET, HEAD" in document["detail"]
    status, headers, body = _exchange(worker, "HEAD", "/healthz")
    assert (status, body) == (200, b"")
    assert headers["Content-Type"] == "application/json; charset=utf-8"


def _exchange(worker: Worker, method: str, path: str) -> tuple[int, Any, bytes]:
    """Status, headers and body of one request with the token."""
    connection = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=10)
    try:
        connection.request(method, path, headers=BEARER)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()
