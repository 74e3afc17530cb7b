"""HTTP views on the Faust web server: user state, health, readiness and metrics."""

from __future__ import annotations

import hmac
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.assess import policy, runtime
from risk.clock import format_timestamp
from risk.decision import LIMIT_FRACTIONS
from risk.limits import features, restore_path, status
from risk.rules import Measures
from streams import metrics
from streams.app import app, settings
from streams.topics import users

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
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    # aiohttp keeps a header's undecodable bytes as surrogates: encoded back, not refused.
    if hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
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
        """Refuse, or answer 503 while not ready, before the request goes anywhere.

        Faust's routing forwards a request to the owner of the user's partition: checked
        first, the token is never sent on for a caller who lacks it. While this worker
        rebalances or recovers, its table may hold no state, or an old one, for users it is
        about to own, and its view of who owns what is moving: 503, as ``/readyz``.
        """
        refusal = _refusal(self, request)
        if refusal is not None:
            return refusal
        if not runtime.ready():
            return self.json(
                {"error": "not ready", "detail": "rebalancing or recovering; ask again"},
                status=503,
                headers={"Retry-After": "1"},
            )
        # Faust types the routed view without the path parameters match_info passes.
        return await self.owned(request, user_id=user_id)  # type: ignore[call-arg]

    # Faust's ViewDecorator type leaves out the path parameters that match_info passes.
    @app.table_route(table=users, match_info="user_id")  # type: ignore[arg-type]
    async def owned(self, request: Request, user_id: str) -> Response:
        """Answer locally if this worker owns the user's partition; Faust forwards otherwise."""
        try:
            state = runtime.state(user_id)
        except KeyError:
            return self.json({"error": "unknown user", "user_id": user_id}, status=404)
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
        """503 while rebalancing or recovering."""
        recovery_done = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        ready = runtime.ready()
        partitions = sorted({tp.partition for tp in runtime.assignment()})
        body: dict[str, Any] = {
            "ready": ready,
            "rebalancing": app.rebalancing,
            "recovery_done": recovery_done,
            "partitions": partitions,
        }
        return self.json(body, status=200 if ready else 503)


@app.page("/metrics")
class Metrics(View):
    """Prometheus exposition of lineguard's own metrics."""

    async def get(self, request: Request) -> Response:
        """The registry in the text format."""
        # aiohttp wants the charset apart from the content type.
        return self.bytes(
            generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )
