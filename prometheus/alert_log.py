"""The webhook receiver of the compose stack: prints each Alertmanager notification.

docker-compose.yml runs it as the ``alert-log`` service, so that the alert subscriptions
in ``alertmanager.yml`` have somewhere to go and can be watched with
``docker compose logs -f alert-log``. Standard library only: it runs in the plain Python
image. In production, point the webhook URLs at a pager or ticket system instead.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = 9099
MAX_BODY = 1 << 20
"""Alertmanager batches alerts per group; a megabyte is far more than one group needs."""


class AlertLog(BaseHTTPRequestHandler):
    """One line per alert: receiver path, status, name, labels, summary, description, runbook.

    The description says what the alert measured and the runbook link where to go next:
    without them whoever watches this log had a name and a sentence, and had to find the
    rule to learn either.
    """

    def do_POST(self) -> None:
        """Print the alerts of one webhook call and answer 200, or 400 for a bad body."""
        length = int(self.headers.get("Content-Length") or 0)
        try:
            if length > MAX_BODY:
                raise ValueError(f"body of {length} bytes")
            body = json.loads(self.rfile.read(length))
            alerts = body["alerts"]
        except (ValueError, KeyError, TypeError) as error:
            self.send_error(400, f"not an Alertmanager webhook: {error}")
            return
        for alert in alerts:
            labels = alert.get("labels", {})
            annotations = alert.get("annotations", {})
            print(
                f"{self.path.strip('/')} {alert.get('status')} {labels.get('alertname')}"
                f" {json.dumps(labels, sort_keys=True)} {_one_line(annotations, 'summary')}"
                f" | {_one_line(annotations, 'description')}"
                f" | runbook: {_one_line(annotations, 'runbook_url')}",
                flush=True,
            )
        self.send_response(200)
        self.end_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log: the alerts are the log. Errors still go to stderr."""


def _one_line(annotations: dict[str, str], name: str) -> str:
    """An annotation with its runs of whitespace as one space, so an alert stays one line.

    ``-`` for one the alert lacks, so that each field keeps its place.
    """
    return " ".join(str(annotations.get(name, "")).split()) or "-"


def main() -> None:
    """Serve until the container stops."""
    server = ThreadingHTTPServer(("0.0.0.0", PORT), AlertLog)  # noqa: S104 - compose network only
    print(f"alert-log listening on :{PORT}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
