"""Alert webhooks: a JSON POST to a rule's webhook_url when one of its alerts fires or resolves,
retried with backoff on a failure (a connection error, a timeout, a 5xx or 429), then given up
and logged. Sent in the background: an evaluation round never waits on a receiver. The body:

    {"event": "alert.firing" | "alert.resolved", "alert": {...}, "rule": {"ruleId", "name", ...}}

with the alert as the REST API shows it (ListAlerts' JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request

from google.protobuf import json_format

from .domain.monitoring import Alert, AlertRule, AlertState
from .monitoring_rpcs import alert_to_pb

log = logging.getLogger(__name__)


class WebhookNotifier:
    def __init__(self, *, timeout_s: float = 5.0, attempts: int = 4, first_backoff_s: float = 0.5,
                 max_in_flight: int = 100):
        self._timeout_s, self._attempts, self._backoff_s = timeout_s, attempts, first_backoff_s
        self._tasks: set[asyncio.Task] = set()
        self._max_in_flight = max_in_flight
        self.sent = 0  # deliveries that succeeded (for tests and metrics)
        self.failed = 0  # deliveries given up

    async def notify(self, rule: AlertRule, alert: Alert) -> None:
        if not rule.webhook_url:
            return
        if len(self._tasks) >= self._max_in_flight:
            log.warning("alert webhook to %s dropped: %d deliveries in flight", rule.webhook_url, len(self._tasks))
            self.failed += 1
            return
        task = asyncio.create_task(self._deliver(rule.webhook_url, _body(rule, alert)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: bytes) -> None:
        delay = self._backoff_s
        for attempt in range(1, self._attempts + 1):
            try:
                status = await asyncio.to_thread(self._post, url, body)
            except (OSError, urllib.error.URLError) as error:
                status, why = None, str(error)[:200]
            else:
                why = f"HTTP {status}"
                if status < 300:
                    self.sent += 1
                    return
                if 400 <= status < 500 and status != 429:
                    break  # the receiver refuses this body: another try changes nothing
            log.info("alert webhook to %s failed (attempt %d): %s", url, attempt, why)
            if attempt < self._attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.failed += 1
        log.warning("alert webhook to %s given up", url)

    def _post(self, url: str, body: bytes) -> int:
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "ml-serving-mesh"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310 - http(s) checked
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    async def close(self) -> None:
        """Waits a little for deliveries in flight, then cancels the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._timeout_s)
            for task in pending:
                task.cancel()


def _body(rule: AlertRule, alert: Alert) -> bytes:
    event = "alert.firing" if alert.state is AlertState.FIRING else "alert.resolved"
    return json.dumps({
        "event": event,
        "alert": json_format.MessageToDict(alert_to_pb(alert)),
        "rule": {"ruleId": rule.rule_id, "name": rule.name, "modelName": rule.model_name,
                 "metricName": rule.metric_name, "severity": rule.severity.value},
    }).encode()
