"""The model monitor: metric values recorded (one or a batch, checked whole first), alert rules
kept, and evaluation rounds that fire and resolve alerts, notify webhooks and trigger retraining.

A round looks at every enabled rule: its window's values (and its baseline's or reference's),
one evaluation (alerting.py), then the hysteresis decides. A drift against training compares a
feature instead of a metric: the values of its view's source rows whose event time falls in the
window, against the sample of it that the model's newest successful retraining run kept; until
a run has kept one, the reference has too few values and the rule neither fires nor resolves. A firing rule that says
`trigger_retraining` queues a run of its model (trigger ALERT, the alert's id recorded on it); the
run store keeps at most one such run per model queued or running, so an alert storm queues one.
Several replicas may run rounds at once: the alert store keeps one firing alert per rule, and
only the replica whose alert was stored notifies and triggers.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence
from urllib.parse import urlsplit

from ....errors import DomainError, InvalidArgument, NotFound, quoted
from . import paging
from .alerting import Change, decide, evaluate
from .errors import ErrorReason
from .feature_views import FeatureView, ValueType
from .monitoring import (
    Alert,
    AlertNotifier,
    AlertRule,
    AlertState,
    AlertStore,
    Degradation,
    Drift,
    DriftReference,
    MetricStore,
    MetricValue,
    Severity,
    Threshold,
)
from .ports import FeatureSource
from .retraining import TrainingDistributions, Trigger
from .runs import RetrainingRuns
from .schema import FeatureSchema

log = logging.getLogger(__name__)

MAX_BATCH = 10_000
MAX_LABELS = 16
MAX_NAME_CHARS = 128
MAX_MODEL_NAME_CHARS = 256
MAX_LABEL_CHARS = 128
MAX_EVENT_ID_CHARS = 128
MAX_WINDOW = timedelta(days=30)
MAX_FOR_DURATION = timedelta(days=7)
MAX_VALUES_PER_WINDOW = 100_000  # the newest ones, when a window holds more
FUTURE_SLACK = timedelta(minutes=5)  # a value stamped later than this after now is refused
_RULE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_NUMERIC = (ValueType.INT, ValueType.FLOAT)  # what a drift against training can bin
_TICK = timedelta(microseconds=1)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Monitor:
    def __init__(self, metrics: MetricStore, alerts: AlertStore, runs: RetrainingRuns, notifier: AlertNotifier, *,
                 schema: FeatureSchema | None = None, source: FeatureSource | None = None,
                 distributions: TrainingDistributions | None = None, clock: Callable[[], datetime] = _now):
        """`schema`, `source` and `distributions` serve drift against training: without all three, no
        feature can be watched (such a rule is refused)."""
        self._metrics, self._alerts, self._runs, self._notifier = metrics, alerts, runs, notifier
        self._source, self._distributions = source, distributions
        watchable = schema is not None and source is not None and distributions is not None
        self._views = {view.name: view for view in schema.views} if watchable else {}
        self._clock = clock

    # ----- values -----

    async def record(self, values: Sequence[MetricValue], *, batch: bool = False) -> tuple[int, int]:
        """Checks every value (a batch whole, naming `metrics[i].<field>`; a value without a time
        is stamped now), then stores them: (newly recorded, duplicates of an event id already
        recorded for the same model and metric)."""
        if batch and not 1 <= len(values) <= MAX_BATCH:
            raise InvalidArgument("metrics", f"must hold 1 to {MAX_BATCH} values, got {len(values)}")
        now = self._clock()
        latest = now + FUTURE_SLACK
        checked = list(values)
        for index, value in enumerate(checked):
            problem = _problem(value, latest)
            if problem is not None:
                field, why, reason = problem
                prefix, extra = (f"metrics[{index}].", {"index": index}) if batch else ("", {})
                raise InvalidArgument(f"{prefix}{field}", why, reason=reason, **extra)
            if value.time is None:
                checked[index] = value._replace(time=now)
        return await self._metrics.record(checked)

    async def forget_before(self, keep: timedelta) -> int:
        """Retention: deletes the values recorded longer than `keep` ago; how many."""
        deleted = await self._metrics.delete_before(self._clock() - keep)
        if deleted:
            log.info("monitor retention: %d metric values older than %s deleted", deleted, keep)
        return deleted

    # ----- rules -----

    async def create_rule(self, rule: AlertRule) -> AlertRule:
        now = self._clock()
        rule = replace(rule, rule_id=str(uuid.uuid4()), create_time=now, update_time=now)
        self._check_rule(rule)
        await self._alerts.create_rule(rule)
        return rule

    async def get_rule(self, rule_id: str) -> AlertRule:
        rule = await self._alerts.get_rule(_check_id(rule_id, "rule_id"))
        if rule is None:
            raise NotFound(f"no alert rule {rule_id}", reason=ErrorReason.ALERT_RULE_NOT_FOUND,
                           metadata={"rule_id": rule_id})
        return rule

    async def list_rules(self, *, model_name: str = "", page_size: int = 0, page_token: str = ""
                         ) -> tuple[list[AlertRule], str]:
        rules, after = await self._alerts.list_rules(model_name=model_name, enabled_only=False,
                                                     limit=paging.page_size(page_size),
                                                     after_seq=paging.position(page_token))
        return rules, paging.token(after)

    async def update_rule(self, rule_id: str, change: Callable[[AlertRule], AlertRule]) -> AlertRule:
        """`change` gives the rule's new version from the stored one (the caller applies a field mask)."""
        current = await self.get_rule(rule_id)
        updated = replace(change(current), rule_id=current.rule_id, create_time=current.create_time,
                          update_time=self._clock())
        self._check_rule(updated)
        if not await self._alerts.update_rule(updated):
            raise NotFound(f"no alert rule {rule_id}", reason=ErrorReason.ALERT_RULE_NOT_FOUND,
                           metadata={"rule_id": rule_id})
        firing = await self._alerts.firing_alert(rule_id)
        if firing is not None and _watched(current) != _watched(updated):
            # The alert stood for a condition the rule no longer has: the next rounds judge anew.
            now = self._clock()
            firing.state, firing.resolve_time, firing.last_evaluation_time = AlertState.RESOLVED, now, now
            firing.message = f"{firing.message} (resolved: its rule changed)"[:1000]
            if await self._alerts.update_alert(firing):
                await self._notifier.notify(updated, firing)
        return updated

    async def delete_rule(self, rule_id: str) -> None:
        if not await self._alerts.delete_rule(_check_id(rule_id, "rule_id"), self._clock()):
            raise NotFound(f"no alert rule {rule_id}", reason=ErrorReason.ALERT_RULE_NOT_FOUND,
                           metadata={"rule_id": rule_id})

    def _check_rule(self, rule: AlertRule) -> None:
        def bad(field: str, why: str, reason=ErrorReason.INVALID_FIELD) -> InvalidArgument:
            return InvalidArgument(f"rule.{field}", why, reason=reason)

        if not _RULE_NAME.match(rule.name):
            raise bad("name", f"must be 1 to 128 characters of [A-Za-z0-9._-], got {quoted(rule.name)}")
        for field, text, limit in (("model_name", rule.model_name, MAX_MODEL_NAME_CHARS),
                                   ("metric_name", rule.metric_name, MAX_NAME_CHARS)):
            if not text or len(text) > limit:
                raise bad(field, f"is required, at most {limit} characters")
        if len(rule.description) > 2000 or len(rule.model_version) > MAX_NAME_CHARS:
            raise bad("description" if len(rule.description) > 2000 else "model_version", "is too long")
        if len(rule.label_filter) > MAX_LABELS:
            raise bad("label_filter", f"at most {MAX_LABELS} labels")
        if not timedelta(seconds=1) <= rule.window <= MAX_WINDOW:
            raise bad("window", f"must be 1 s to {MAX_WINDOW.days} days")
        if not timedelta(0) <= rule.for_duration <= MAX_FOR_DURATION:
            raise bad("for_duration", f"must be 0 to {MAX_FOR_DURATION.days} days")
        if not 1 <= rule.min_samples <= MAX_VALUES_PER_WINDOW:
            raise bad("min_samples", f"must be 1 to {MAX_VALUES_PER_WINDOW}")
        self._check_condition(rule, bad)
        if rule.webhook_url:
            _check_webhook(rule.webhook_url)
        if rule.trigger_retraining:
            rule.retraining_parameters = self._runs.check_trigger(
                rule.model_name, reason="", parameters=rule.retraining_parameters, field_prefix="rule.retraining_")

    def _check_condition(self, rule: AlertRule, bad) -> None:
        condition = rule.condition
        if isinstance(condition, Threshold):
            if not math.isfinite(condition.threshold):
                raise bad("threshold.threshold", "must be a finite number", ErrorReason.INVALID_CONDITION)
        elif isinstance(condition, Degradation):
            if not timedelta(seconds=1) <= condition.baseline_window <= timedelta(days=90):
                raise bad("degradation.baseline_window", "must be 1 s to 90 days", ErrorReason.INVALID_CONDITION)
            if not (math.isfinite(condition.max_relative_change) and condition.max_relative_change > 0):
                raise bad("degradation.max_relative_change", "must be a positive number",
                          ErrorReason.INVALID_CONDITION)
        elif isinstance(condition, Drift):
            if condition.reference is DriftReference.TRAINING:
                self._feature(condition.feature)
            elif condition.feature:
                raise bad("drift.feature", "is only for a drift against training (DRIFT_REFERENCE_TRAINING)",
                          ErrorReason.INVALID_CONDITION)
            elif not timedelta(seconds=1) <= condition.reference_window <= timedelta(days=90):
                raise bad("drift.reference_window", "must be 1 s to 90 days", ErrorReason.INVALID_CONDITION)
            if not 2 <= condition.bins <= 100:
                raise bad("drift.bins", "must be 2 to 100", ErrorReason.INVALID_CONDITION)
            if not (math.isfinite(condition.psi_threshold) and condition.psi_threshold > 0):
                raise bad("drift.psi_threshold", "must be a positive number", ErrorReason.INVALID_CONDITION)
        else:
            raise bad("condition", "one of threshold, degradation and drift is required", ErrorReason.INVALID_CONDITION)

    # ----- alerts -----

    async def list_alerts(self, *, model_name: str = "", states: Sequence[AlertState] = (), rule_id: str = "",
                          min_severity: Severity | None = None, page_size: int = 0, page_token: str = ""
                          ) -> tuple[list[Alert], str]:
        if rule_id:
            _check_id(rule_id, "rule_id")
        alerts, after = await self._alerts.list_alerts(
            model_name=model_name, states=list(states) or [AlertState.FIRING], rule_id=rule_id,
            min_severity=min_severity, limit=paging.page_size(page_size), after_seq=paging.position(page_token))
        return alerts, paging.token(after)

    async def evaluate_round(self) -> int:
        """Evaluates every enabled rule once; the number of alerts that fired or resolved."""
        changed, after = 0, 0
        while True:
            rules, after = await self._alerts.list_rules(model_name="", enabled_only=True, limit=200,
                                                         after_seq=after)
            for rule in rules:
                try:
                    changed += await self.evaluate_rule(rule)
                except DomainError as error:  # PostgreSQL down: the next round looks again
                    log.warning("alert rule %s not evaluated: %s", rule.name, error.message)
            if after is None:
                return changed

    async def evaluate_rule(self, rule: AlertRule) -> int:
        now = self._clock()
        current, reference = await self._values(rule, now)
        evaluation = evaluate(rule, current, reference)
        firing = await self._alerts.firing_alert(rule.rule_id)
        decision = decide(rule, await self._alerts.rule_state(rule.rule_id), evaluation, firing, now)
        await self._alerts.save_rule_state(decision.state)
        if decision.change is Change.FIRE:
            await self._fire(rule, evaluation, now)
        elif decision.change is Change.UPDATE and firing is not None:
            if evaluation.holds is not None:
                firing.value, firing.message = evaluation.value, evaluation.message[:1000]
            firing.last_evaluation_time = now
            await self._alerts.update_alert(firing)
        elif decision.change is Change.RESOLVE and firing is not None:
            firing.state, firing.resolve_time, firing.last_evaluation_time = AlertState.RESOLVED, now, now
            firing.value, firing.message = evaluation.value, evaluation.message[:1000]
            if await self._alerts.update_alert(firing):  # another replica may have resolved it first
                await self._notifier.notify(rule, firing)
                log.info("alert %s of rule %s resolved", firing.alert_id, rule.name)
        return int(decision.change in (Change.FIRE, Change.RESOLVE))

    async def _fire(self, rule: AlertRule, evaluation, now: datetime) -> None:
        alert = Alert(alert_id=str(uuid.uuid4()), rule_id=rule.rule_id, rule_name=rule.name,
                      model_name=rule.model_name, metric_name=rule.metric_name, state=AlertState.FIRING,
                      severity=rule.severity, value=evaluation.value, reference_value=evaluation.reference_value,
                      message=evaluation.message[:1000], fire_time=now, last_evaluation_time=now,
                      model_version=rule.model_version)
        stored = await self._alerts.open_alert(alert)
        if stored.alert_id != alert.alert_id:
            return  # another replica fired it first: it notifies and triggers
        log.warning("alert %s of rule %s fired: %s", alert.alert_id, rule.name, alert.message)
        if rule.trigger_retraining:
            try:
                run, _ = await self._runs.trigger(
                    rule.model_name, reason=f"alert {rule.name}: {alert.message}"[:1000],
                    parameters=rule.retraining_parameters, trigger=Trigger.ALERT, alert_id=alert.alert_id)
                alert.retraining_run_id = run.run_id
                await self._alerts.update_alert(alert)
            except DomainError as error:  # the alert stands; the retraining is what failed
                log.warning("alert %s: retraining of %s not queued: %s", alert.alert_id, rule.model_name,
                            error.message)
        await self._notifier.notify(rule, alert)

    async def _values(self, rule: AlertRule, now: datetime) -> tuple[list[float], list[float]]:
        """The window's values and the reference's: the baseline window's, the reference window's or
        the training sample's; none for a threshold."""
        condition = rule.condition
        if isinstance(condition, Drift) and condition.reference is DriftReference.TRAINING:
            view, name = self._feature(condition.feature)  # a view gone since the rule was made: logged
            current = await self._source.recent_values(view, name, start=now - rule.window, end=now,
                                                       limit=MAX_VALUES_PER_WINDOW)
            # Empty until a run of the model kept a sample: too few values, the rule's state stays.
            return current, await self._distributions.latest(rule.model_name, condition.feature)
        current = await self._window(rule, now - rule.window, now + _TICK)  # a value stamped now counts
        if isinstance(condition, (Degradation, Drift)):
            span = condition.baseline_window if isinstance(condition, Degradation) else condition.reference_window
            return current, await self._window(rule, now - rule.window - span, now - rule.window)
        return current, []

    def _feature(self, reference: str) -> tuple[FeatureView, str]:
        """The view and the feature of a drift against training ("view:feature"): a numeric scalar
        feature of a declared view, else InvalidArgument naming rule.drift.feature."""
        def bad(why: str) -> InvalidArgument:
            return InvalidArgument("rule.drift.feature", why, reason=ErrorReason.INVALID_CONDITION)

        view_name, _, name = reference.partition(":")
        if not view_name or not name:
            raise bad(f'must be "view:feature", got {quoted(reference)}')
        view = self._views.get(view_name)
        if view is None:
            raise bad(f"no feature view named {quoted(view_name)}")
        feature = next((f for f in view.features if f.name == name), None)
        if feature is None:
            raise bad(f"feature view {view_name} has no feature {quoted(name)}")
        if feature.type not in _NUMERIC:
            raise bad(f"{view_name}:{name} is a {feature.type.value} feature: drift is measured on an int or "
                      f"float one")
        return view, name

    async def _window(self, rule: AlertRule, start: datetime, end: datetime) -> list[float]:
        return await self._metrics.values(model_name=rule.model_name, metric_name=rule.metric_name,
                                          model_version=rule.model_version, label_filter=rule.label_filter,
                                          start=start, end=end, limit=MAX_VALUES_PER_WINDOW)


def _problem(value: MetricValue, latest: datetime) -> tuple[str, str, ErrorReason] | None:
    """What is wrong with a value to record, as (field, why, reason); None when nothing is. Plain
    comparisons first: a batch of ten thousand is checked in a few milliseconds."""
    number = value.value
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        return "value", f"must be a finite number, got {quoted(number)}", ErrorReason.INVALID_METRIC_VALUE
    for field, text, limit in (("model_name", value.model_name, MAX_MODEL_NAME_CHARS),
                               ("metric_name", value.metric_name, MAX_NAME_CHARS)):
        if not text or len(text) > limit:
            return field, f"is required, at most {limit} characters", ErrorReason.INVALID_FIELD
    if len(value.model_version) > MAX_NAME_CHARS:
        return "model_version", f"must be at most {MAX_NAME_CHARS} characters", ErrorReason.INVALID_FIELD
    if len(value.event_id) > MAX_EVENT_ID_CHARS:
        return "event_id", f"must be at most {MAX_EVENT_ID_CHARS} characters", ErrorReason.INVALID_FIELD
    if value.labels:
        if len(value.labels) > MAX_LABELS:
            return "labels", f"at most {MAX_LABELS} labels, got {len(value.labels)}", ErrorReason.INVALID_FIELD
        for key, text in value.labels.items():
            if not key or len(key) > MAX_LABEL_CHARS or len(text) > MAX_LABEL_CHARS:
                return "labels", (f"keys of 1 to {MAX_LABEL_CHARS} characters and values of at most "
                                  f"{MAX_LABEL_CHARS}: {quoted(key)}"), ErrorReason.INVALID_FIELD
    if value.time is not None and value.time > latest:
        return "time", f"is in the future ({value.time.isoformat()})", ErrorReason.INVALID_FIELD
    return None


def _watched(rule: AlertRule) -> tuple:
    """What a rule's alerts are about: a change of any of it resolves the alert firing."""
    return (rule.model_name, rule.model_version, rule.metric_name, rule.label_filter, rule.condition, rule.window,
            rule.aggregation, rule.enabled)


def _check_webhook(url: str) -> None:
    parts = urlsplit(url)
    if len(url) > 2048 or parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        raise InvalidArgument("rule.webhook_url", f"must be an http(s) URL without credentials, got {quoted(url)}",
                              reason=ErrorReason.INVALID_WEBHOOK_URL)


def _check_id(value: str, field: str) -> str:
    try:
        if len(value) != 36 or str(uuid.UUID(value)) != value:
            raise ValueError
    except ValueError:
        raise InvalidArgument(field, f"must be an id (a lowercase UUID), got {quoted(value)}") from None
    return value

