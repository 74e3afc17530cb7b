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


def _authorised(request: Request) -> bool:
    if settings.api_token is None:
        return True
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {settings.api_token.get_secret_value()}"
    return hmac.compare_digest(given.encode(), expected.encode())


@app.page("/users/{user_id}/")
class UserView(View):
    """A user's state, features and last decision, from the worker that owns the user."""

    # Faust's ViewDecorator type leaves out the path parameters that match_info passes.
    @app.table_route(table=users, match_info="user_id")  # type: ignore[arg-type]
    async def get(self, request: Request, user_id: str) -> Response:
        """Answer locally if this worker owns the user's partition; Faust forwards otherwise."""
        if not _authorised(request):
            return self.json({"error": "unauthorised"}, status=401)
        try:
            state = runtime.store[user_id]
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
