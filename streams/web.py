"""HTTP views on the Faust web server: user state, health, readiness and metrics."""

from __future__ import annotations

import hmac
import logging
import typing
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

import aiohttp
import msgspec
import structlog
from aiohttp import web as aiohttp_web
from aiohttp.http_exceptions import HttpProcessingError
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from agents.assess import policy, runtime
from risk.clock import format_timestamp
from risk.contract import UserId
from risk.decision import LIMIT_FRACTIONS
from risk.limits import features, restore_path, status
from risk.rules import Measures
from streams import metrics
from streams.app import app, settings
from streams.topics import users

log = structlog.get_logger(__name__)

FORWARDED_BY: Final = "X-Lineguard-Forwarded-By"
"""Set on a request one worker forwards to the user's owner: the forwarding worker's URL."""
FORWARD_TIMEOUT: Final = aiohttp.ClientTimeout(total=5)
"""How long a forwarded request may take before the caller is told to ask again."""
KEPT_HEADERS: Final = ("Retry-After", "WWW-Authenticate")
"""The owner's response headers a forwarded response keeps, besides its content type."""

_USER_ID: Final[msgspec.Meta] = typing.get_args(UserId)[1]
USER_ID_LENGTHS: Final = (
    typing.cast(int, _USER_ID.min_length),
    typing.cast(int, _USER_ID.max_length),
)
"""The contract's bounds on a user id's length, in code points (DESIGN.md §1)."""


class _MalformedRequests(logging.Filter):
    """aiohttp's log of a request it could not parse, as one line without the request.

    aiohttp logs each at ERROR, with a traceback and the first 100 bytes of the request
    line: a path or query that holds a user id put it in the log, and anyone who can
    reach the port could fill the log with tracebacks. It answers 400 all the same.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Let every other record through; log a parse error as one warning instead."""
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        log.warning("http_request_malformed", error=type(error).__name__, status=error.code)
        return False


logging.getLogger("aiohttp.server").addFilter(_MalformedRequests())

PATHS: Final = "/users/{user_id}, /healthz, /readyz and /metrics"
"""Every path the worker serves, for the answer to any other."""


@aiohttp_web.middleware
async def _json_errors(request: aiohttp_web.Request, handler: Any) -> aiohttp_web.StreamResponse:
    """Aiohttp's own 404 and 405 as JSON, in the shape of lineguard's other errors.

    They were plain text, where every other error of the worker is a JSON object with
    ``error`` and ``detail``, so a client had to tell the two apart before reading one.
    """
    try:
        response: aiohttp_web.StreamResponse = await handler(request)
    except aiohttp_web.HTTPNotFound:
        return aiohttp_web.json_response(
            {"error": "not found", "detail": f"no such path; the paths are {PATHS}"}, status=404
        )
    except aiohttp_web.HTTPMethodNotAllowed as error:
        allowed = ", ".join(sorted(error.allowed_methods))
        return aiohttp_web.json_response(
            {"error": "method not allowed", "detail": f"{error.method} here; only {allowed}"},
            status=405,
            headers={"Allow": error.headers["Allow"]},
        )
    return response


typing.cast(AiohttpWeb, app.web).web_app.middlewares.append(_json_errors)  # Faust's aiohttp driver

_CLOSED = (
    "no LINEGUARD_API_TOKEN is set, so /users is closed: set a token, or set"
    " LINEGUARD_API_ALLOW_ANONYMOUS=true to serve user state without one"
)


def _refusal(view: View, request: Request) -> Response | None:
    """Why this request may not read a user's state, as a JSON response; None if it may.

    User state is personal data, so a worker without a token refuses everyone unless
    anonymous access was asked for explicitly. The token is compared in constant time.
    """
    token = settings.api_token
    if token is None:
        if settings.api_allow_anonymous:
            return None
        return view.json({"error": "forbidden", "detail": _CLOSED}, status=403)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # The scheme is case-insensitive (RFC 7235); the token is compared in constant time.
    # aiohttp keeps a header's undecodable bytes as surrogates: encoded back, not refused.
    matches = hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), token.get_secret_value().encode()
    )
    if scheme.lower() == "bearer" and matches:
        return None
    return view.json(
        {"error": "unauthorised", "detail": "send Authorization: Bearer <LINEGUARD_API_TOKEN>"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="lineguard"'},
    )


@app.page("/users/{user_id}/")
class UserView(View):
    """A user's state, features and last decision, from the worker that owns the user."""

    async def get(self, request: Request, user_id: str) -> Response:
        """Refuse, answer 400 for an id no user can have, or 503 while not ready, first.

        A request is forwarded to the owner of the user's partition: checked first, the
        token is never sent on for a caller who lacks it. While this worker
        rebalances or recovers, its table may hold no state, or an old one, for users it is
        about to own, and its view of who owns what is moving: 503, as ``/readyz``. So
        does a worker that holds no partition: 503 is what a client already retries,
        elsewhere behind a load balancer, and ``Retry-After: 1`` still fits: a worker
        that leaves hands this one a partition, seconds after a clean stop.
        """
        refusal = _refusal(self, request)
        if refusal is not None:
            return refusal
        named = _user_id(request)
        if isinstance(named, _Problem):
            return self.json({"error": "bad request", "detail": named.detail}, status=400)
        user_id = named  # strictly decoded: aiohttp's own keeps a bad escape as it came
        unready = _unready()
        if unready is not None:
            return _ask_again(self, unready)
        try:
            owner = app.router.key_store(users.name, user_id)
        except KeyError:  # the assignor has no owner for the partition yet
            return _ask_again(self, "no worker owns this user's partition yet")
        if _same_worker(owner, URL(app.conf.canonical_url)):
            return self.local(user_id)
        if request.headers.get(FORWARDED_BY) is not None:
            # Forwarded here by a worker that takes this one for the owner, while this one
            # takes another: sent on, it could bounce between them until the rebalance ends.
            return _ask_again(self, "the workers disagree on who owns this user; ask again")
        return await self.forwarded(request, owner)

    async def forwarded(self, request: Request, owner: URL) -> Response:
        """The owner's answer, asked once and marked so that the owner never sends it on.

        Faust's own table routing forwards without a mark or a time limit, and drops the
        owner's ``Retry-After`` and ``WWW-Authenticate``.
        """
        headers = {FORWARDED_BY: str(app.conf.canonical_url)}
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            headers["Authorization"] = authorization
        # The owner's address, and this request's path and query as they came (percent
        # escapes kept): nothing from the Host header, which the caller chose.
        scheme = owner.scheme or "http"
        url = URL(f"{scheme}://{owner.raw_authority}{request.rel_url.raw_path_qs}", encoded=True)
        try:
            async with app.http_client.get(url, headers=headers, timeout=FORWARD_TIMEOUT) as answer:
                body = await answer.read()
                kept = {
                    name: answer.headers[name] for name in KEPT_HEADERS if name in answer.headers
                }
                if "Content-Type" in answer.headers:  # as it came, its charset included
                    kept["Content-Type"] = answer.headers["Content-Type"]
                return self.bytes(body, status=answer.status, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("user_request_forward_failed", owner=str(owner), error=type(error).__name__)
            return _ask_again(self, "the worker that owns this user did not answer; ask again")

    def local(self, user_id: str) -> Response:
        """The user's state from this worker, which owns the user's partition."""
        try:
            state = runtime.state(user_id)
        except KeyError:
            return self.json(
                {
                    "error": "unknown user",
                    "detail": "no state for this user: no accepted event of theirs yet",
                    "user_id": user_id,
                },
                status=404,
            )
        last = state.last_decision
        measures = Measures(state, policy)
        card = measures.scorecard
        current = status(state)
        return self.json(
            {
                "user_id": state.user_id,
                "status": current,
                "limit_fraction": LIMIT_FRACTIONS[current],
                "freeze_reasons": state.freeze_reasons,
                "reduce_reasons": state.reduce_reasons,
                "restore_path": restore_path(state, measures, policy),
                "clock": format_timestamp(state.clock),
                "first_seen": format_timestamp(state.first_seen),
                "last_activity": format_timestamp(state.last_activity),
                "features": features(state, policy, measures),
                "score": {
                    "score": card.score,
                    "odds": round(card.odds(policy), 2),
                    "points": card.points,
                },
                "last_decision": None
                if last is None
                else {
                    "type": last.type,
                    "event_id": last.event_id,
                    "occurred_at": format_timestamp(last.occurred_at),
                    "caused_by": last.caused_by,
                },
                "policy_version": policy.version,
            }
        )


@dataclass(frozen=True, slots=True)
class _Problem:
    """Why a path cannot name a user."""

    detail: str


def _user_id(request: Request) -> str | _Problem:
    """The user id the path names, or why no user can have it.

    Asked for, such an id was looked up, forwarded and answered "unknown user", as if it
    might exist. aiohttp keeps a percent escape that is not UTF-8 as it came (``%FF``),
    which would name the user ``%FF``; the path is decoded strictly here instead.
    """
    segment = request.rel_url.raw_path.split("/")[2]
    try:
        user_id = unquote(segment, errors="strict")
    except UnicodeDecodeError:
        return _Problem("the user_id in the path is not UTF-8 once its %-escapes are decoded")
    low, high = USER_ID_LENGTHS
    if not low <= len(user_id) <= high:
        return _Problem(
            f"a user_id is {low} to {high} characters; this one has {len(user_id)},"
            " so no user has it (DESIGN.md, input events)"
        )
    return user_id


NO_PARTITION: Final = (
    "this worker holds no partition: there are more workers than partitions (README,"
    " Scaling out); ask another worker"
)
"""Why an idle worker is not ready. It stays so until another worker leaves the group."""


def _unready() -> str | None:
    """Why this worker cannot answer for its partitions, as ``/users`` and ``/readyz`` say.

    None when it is ready. A worker whose rebalance and recovery are done with no input
    partition stays so until another worker leaves: "rebalancing or recovering" would
    send its clients back to it for an answer that does not come.
    """
    if runtime.ready():
        return None
    recovery_done = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
    settled = recovery_done and not app.rebalancing
    if settled and not runtime.assignment():
        return NO_PARTITION
    return "rebalancing or recovering; ask again"


def _ask_again(view: View, detail: str) -> Response:
    """503 with ``Retry-After``: the answer exists, but not here or not yet."""
    return view.json(
        {"error": "not ready", "detail": detail}, status=503, headers={"Retry-After": "1"}
    )


def _same_worker(one: URL, other: URL) -> bool:
    """Whether two worker URLs name one web server, as Faust's router compares them."""
    return (one.host or one.path, one.port or 80) == (other.host or other.path, other.port or 80)


@app.page("/users/{user_id}")
class UserViewWithoutSlash(UserView):
    """:class:`UserView` at the path DESIGN.md gives; the form with the slash stays for clients."""


@app.page("/healthz")
class Health(View):
    """Liveness: the web server and event loop answer."""

    async def get(self, request: Request) -> Response:
        """Always ok while the process serves requests."""
        return self.json({"status": "ok"})


@app.page("/readyz")
class Ready(View):
    """Readiness: partitions are assigned and table recovery has finished."""

    async def get(self, request: Request) -> Response:
        """503 while rebalancing, recovering or holding no partition, saying which."""
        recovery_done = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        unready = _unready()
        partitions = sorted({tp.partition for tp in runtime.assignment()})
        body: dict[str, Any] = {
            "ready": unready is None,
            "rebalancing": app.rebalancing,
            "recovery_done": recovery_done,
            "partitions": partitions,
        }
        if unready is not None:
            body["detail"] = unready
        return self.json(body, status=200 if unready is None else 503)


@app.page("/metrics")
class Metrics(View):
    """Prometheus exposition of lineguard's own metrics."""

    async def get(self, request: Request) -> Response:
        """The registry in the text format."""
        # aiohttp wants the charset apart from the content type.
        return self.bytes(
            generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )
