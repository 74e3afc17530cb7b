"""A /users request one worker forwards to the user's owner, with fakes: no second worker here.

The forward is marked with the forwarding worker's URL, so that an owner which disagrees
never sends it on; it has a time limit; and the answer keeps the owner's ``Retry-After`` and
``WWW-Authenticate``, which Faust's own table routing drops. Two workers over a broker are in
test_worker_scale.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace, TracebackType
from typing import Any

import aiohttp
import pytest
from faust.web import Response
from multidict import CIMultiDict
from yarl import URL

from streams import web


class _Answer:
    """The owner's response, as ``aiohttp`` gives it in ``async with``."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self._body = status, CIMultiDict(headers), body

    async def read(self) -> bytes:
        return self._body

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class _Client:
    """``app.http_client``, recording each GET and giving the one answer."""

    def __init__(self, answer: _Answer) -> None:
        self.answer = answer
        self.calls: list[tuple[URL, dict[str, str], aiohttp.ClientTimeout]] = []

    def get(self, url: URL, headers: dict[str, str], timeout: aiohttp.ClientTimeout) -> _Answer:
        self.calls.append((url, dict(headers), timeout))
        return self.answer


def _forward(
    monkeypatch: pytest.MonkeyPatch, answer: _Answer, **request: Any
) -> tuple[Response, _Client]:
    """The response of forwarding ``request`` to an owner that gives ``answer``, and the client."""
    client = _Client(answer)
    monkeypatch.setattr(type(web.app), "http_client", property(lambda _: client))
    view = web.UserView(web.app, web.app.web)
    response = asyncio.run(view.forwarded(SimpleNamespace(**request), URL("http://owner:6067")))
    return response, client


def test_a_forwarded_answer_keeps_the_owners_status_content_type_and_retry_headers_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = _Answer(
        503,
        {
            "Retry-After": "7",
            "WWW-Authenticate": 'Bearer realm="x"',
            "Content-Type": "application/json; charset=utf-8",
            "X-Other": "no",
        },
        b"{}",
    )
    response, _ = _forward(monkeypatch, answer, headers={}, rel_url=URL("/users/u-1/"))
    assert response.status == 503
    assert response.headers["Retry-After"] == "7"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="x"'
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "X-Other" not in response.headers


def test_a_forwarded_request_is_marked_has_a_time_limit_and_keeps_its_path_and_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, client = _forward(
        monkeypatch,
        _Answer(200, {}, b"{}"),
        headers={"Authorization": "Bearer t"},
        rel_url=URL("/users/u%2F1/?x=1", encoded=True),
    )
    ((url, headers, timeout),) = client.calls
    assert str(url) == "http://owner:6067/users/u%2F1/?x=1"  # percent escapes as they came
    # marked, so that an owner that takes another worker for the owner answers 503
    assert headers[web.FORWARDED_BY] == str(web.app.conf.canonical_url)
    assert headers["Authorization"] == "Bearer t"
    assert timeout.total == 5
