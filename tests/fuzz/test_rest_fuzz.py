"""Generated bad REST requests against every REST path of every mesh service, through the
real Envoy in front of a real mesh process (the `stack` fixture), with a token carrying
every scope.

The paths come from the `google.api.http` rules in `gen/descriptor.binpb` (the file Envoy's
transcoder reads): each RPC's HTTP method and path template. Path variables are filled with
generated strings (empty, very long, percent-encoded junk such as %00 / %FF / a lone %,
unicode); bodies are generated JSON objects keyed by the request message's real JSON field
names with values of any JSON type (wrong types, nested junk, now and then strings or lists
of a few MB), or raw bytes that are not JSON; random query parameters are added.

Whatever is sent, the answer is one the mesh means: never a 5xx except 503, and 501 only
from RPCs that are not built yet (every bandit RPC is built; of the pipeline's, all but
GetFeatureSchema are let answer 501); every error is a google.rpc.Status JSON body with a
message; the mesh logs no traceback or ERROR line; afterwards a normal create and select
through REST work.

Deterministic (derandomize, no example database) and bounded (a few hundred requests).
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from ..support import call

DESCRIPTOR = Path(__file__).resolve().parents[2] / "gen" / "descriptor.binpb"
PACKAGE_PREFIX = "mnbara.mlserving."
BANDIT_SERVICE = "mnbara.mlserving.bandit.v1.BanditService"
REGISTRY_SERVICE = "mnbara.mlserving.registry.v1.RegistryService"
NAMED_SERVICES = {BANDIT_SERVICE: ("name", "bandit"), REGISTRY_SERVICE: ("name", "model_name")}
"""Built services, and the fields naming what they store: generated names there get PREFIX."""
UNBUILT_BANDIT_RPCS: set[str] = set()
BUILT_PIPELINE_RPCS = {"GetFeatureSchema"}

PREFIX = f"restfuzz-{uuid.uuid4().hex[:6]}-"
"""Every bandit name the fuzzer sends starts with this, so it cannot touch another test's bandits."""

SETTINGS = {"deadline": None, "derandomize": True, "database": None,
            "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.data_too_large, HealthCheck.filter_too_much]}


# ----- the REST surface, from the descriptor -----

@dataclass(frozen=True)
class Field:
    name: str  # proto name, e.g. decision_id
    json_name: str  # e.g. decisionId
    message: str | None  # fully qualified message type of a message field, else None


@dataclass(frozen=True)
class Route:
    service: str  # fully qualified
    method: str  # RPC name
    verb: str  # GET, POST, ...
    template: str  # e.g. /api/v1/bandits/definitions/{name}
    body: str  # "", "*" or a field name
    input_type: str  # fully qualified request message

    @property
    def unbuilt(self) -> bool:
        """The mesh answers this RPC UNIMPLEMENTED (501 over REST)."""
        return (self.service not in NAMED_SERVICES and self.method not in BUILT_PIPELINE_RPCS) \
            or self.method in UNBUILT_BANDIT_RPCS

    def __str__(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}.{self.method} {self.verb} {self.template}"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _load() -> tuple[list[Route], dict[str, list[Field]]]:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(DESCRIPTOR.read_bytes())
    messages: dict[str, list[Field]] = {}

    def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        full = f"{prefix}.{message.name}"
        if message.options.map_entry:
            return
        messages[full] = [Field(f.name, f.json_name or _camel(f.name),
                                f.type_name.lstrip(".") if f.type == f.TYPE_MESSAGE else None)
                          for f in message.field]
        for nested in message.nested_type:
            walk(full, nested)

    routes = []
    for file in fds.file:
        for message in file.message_type:
            walk(file.package, message)
        if not file.package.startswith(PACKAGE_PREFIX):
            continue
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                bindings = [rule, *rule.additional_bindings]
                for binding in bindings:
                    kind = binding.WhichOneof("pattern")
                    if kind is None or kind == "custom" or method.server_streaming:
                        continue  # a server stream (WatchEvents) is endless by design: not fuzzed here
                    routes.append(Route(f"{file.package}.{service.name}", method.name, kind.upper(),
                                        getattr(binding, kind), binding.body, method.input_type.lstrip(".")))
    return routes, messages


ROUTES, MESSAGES = _load()
SERVICES = sorted({route.service for route in ROUTES})
VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")


# ----- strategies -----

LONG = 5000
JUNK_SEGMENTS = ["", "%00", "%FF", "%ff%fe", "%", "%zz", "%2F", "%2f..%2f", "..", ".", "%2e%2e", "a%00b", "%C0%AF",
                 "%E2%80%AE", "%F0%9F%92%A9", "%EF%BF%BF", "%25", "%20", "+", "a:b", ":evaluatePolicy", "~", "*",
                 "%3F", "%23", "x" * LONG, "%FF" * (LONG // 3), urllib.parse.quote("é\U0001f4a9" * 10)]



def segment_text() -> st.SearchStrategy[str]:
    """Raw text for a path variable (percent-encoded before sending), and ready-made junk segments."""
    quoted = st.one_of(
        st.text(max_size=20),
        st.sampled_from(["", " ", "é", "\x00", "../", "\U0001f4a9", "\ufffe", "\u202e", "a/b", "?x=1", "#f"]),
        st.builds(lambda char, n: char * n, st.sampled_from("xé\x00/%"), st.sampled_from([129, 1025, LONG])),
    ).map(lambda text: urllib.parse.quote(text, safe=""))
    return st.one_of(quoted, st.sampled_from(JUNK_SEGMENTS))


def fill_path(route: Route, draw) -> str:
    """The route's template with every variable replaced by a generated segment (bandit names prefixed)."""
    def replace(match: re.Match) -> str:
        segment = draw(segment_text(), label=match.group(1))
        if route.service in NAMED_SERVICES:
            segment = urllib.parse.quote(PREFIX, safe="") + segment
        return segment
    return VARIABLE.sub(replace, route.template)


def huge() -> st.SearchStrategy:
    """Now and then a value of a few MB: one long string or a long list of one small value."""
    return st.one_of(
        st.builds(lambda n: "x" * n, st.sampled_from([70_000, 2_000_000])),
        st.builds(lambda char, n: char * n, st.sampled_from("é\x00\""), st.sampled_from([70_000, 300_000])),
        st.builds(lambda value, n: [value] * n, st.sampled_from([0, 1.5, "a", None, {}, [], True]),
                  st.sampled_from([1001, 10_001, 300_000])),
    )


SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-2, 10), st.integers(-2 ** 70, 2 ** 70),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308, 5e-324, 0.5, -0.0]),
    st.text(max_size=20), st.sampled_from(["", "NaN", "Infinity", "-1", "1e999", "0x10", "true", "null",
                                           "CONTEXTUAL_ALGORITHM_LINEAR_THOMPSON", "1970-01-01T00:00:00Z"]),
)
JSON_JUNK = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=12)


def json_values(field: Field, route: Route, depth: int) -> st.SearchStrategy:
    """Any JSON for a field; for a message field also objects of its own fields; bandit names prefixed."""
    options = [JSON_JUNK, JSON_JUNK, JSON_JUNK, huge()]
    if field.message and field.message in MESSAGES and depth < 3:
        nested = json_objects(field.message, route, depth + 1)
        options += [nested, st.lists(nested, max_size=3)]
    if field.name in NAMED_SERVICES.get(route.service, ()):
        options.append(st.builds(lambda suffix: PREFIX + suffix, st.one_of(st.text(max_size=20),
                                                                            st.just("é" * 300))))
    value = st.one_of(options)
    if field.name in NAMED_SERVICES.get(route.service, ()):
        # Nothing may be created outside the prefix: a string name always carries it.
        value = value.map(lambda v: PREFIX + v if isinstance(v, str) and not v.startswith(PREFIX) else v)
    return value


def json_objects(message: str, route: Route, depth: int = 0) -> st.SearchStrategy[dict]:
    """Objects with any subset of the message's fields (by JSON name, sometimes by proto name) and stray keys."""
    fields = MESSAGES.get(message, [])
    optional = {}
    for field in fields:
        optional[field.json_name] = json_values(field, route, depth)
        if field.name != field.json_name:
            optional[field.name] = json_values(field, route, depth)
    stray = st.dictionaries(st.text(max_size=10), JSON_JUNK, max_size=2)
    known = st.fixed_dictionaries({}, optional=optional)
    return st.builds(lambda a, b: {**b, **a}, known, stray)


def body_message(route: Route) -> str:
    if route.body in ("", "*"):
        return route.input_type
    field = next((f for f in MESSAGES[route.input_type] if f.name == route.body), None)
    return field.message if field and field.message else route.input_type


@st.composite
def bodies(draw, route: Route) -> tuple[object, bytes | None]:
    """(JSON value, None) or (None, raw bytes); (None, None) is no body."""
    kind = draw(st.sampled_from(["object", "object", "object", "any", "raw", "none"] if route.body
                                else ["none", "none", "object", "raw"]), label="body kind")
    if kind == "object":
        return draw(json_objects(body_message(route), route), label="body"), None
    if kind == "any":
        return draw(JSON_JUNK, label="body"), None
    if kind == "raw":
        raw = draw(st.one_of(st.binary(max_size=64), st.sampled_from(
            [b"{", b"{\"a\":", b"[1,2", b"\xff\xfe{}", b"{\"bandit\": \"\\ud800\"}", b"NaN", b"{} {}",
             b"{\"k\": 1e99999}", b"\x00" * 1000, b"[" * 5000, b"{\"a\":" * 3000])), label="raw body")
        return None, raw
    return None, None


def query(route: Route) -> st.SearchStrategy[str]:
    """A query string of the request's field names and random names with junk values."""
    names = [f.json_name for f in MESSAGES.get(route.input_type, [])] + [
        f.name for f in MESSAGES.get(route.input_type, [])]
    key = st.one_of(st.sampled_from(names or ["x"]), st.text(max_size=10), st.sampled_from(
        ["%00", "%FF", "a.b.c", "bandit.name", "", "=", "%", "x" * 3000]))
    value = st.one_of(st.text(max_size=20), st.sampled_from(["", "%00", "%FF", "%", "-1", "1e999", "true", "x" * 3000]))

    def encode(pairs) -> str:
        parts = []
        for (k, v), quote in pairs:
            parts.append(f"{urllib.parse.quote(k, safe='%')}={urllib.parse.quote(v, safe='%')}"
                         if quote else f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}")
        return "&".join(parts)

    return st.lists(st.tuples(st.tuples(key, value), st.booleans()), max_size=4).map(encode)


# ----- judging -----

def check_reply(route: Route, request: str, reply) -> None:
    status = reply.status
    where = f"{route}: {request} -> {status} {reply.content_type} {reply.body[:300]!r}"
    if status == 501:
        assert route.unbuilt, f"501 from a built RPC: {where}"
    elif status >= 500:
        assert status == 503, f"5xx: {where}"
    if status >= 400:
        assert reply.content_type.startswith("application/json"), f"error not JSON: {where}"
        try:
            error = json.loads(reply.body)
        except ValueError:
            raise AssertionError(f"error body not JSON: {where}") from None
        assert isinstance(error, dict) and isinstance(error.get("code"), int), f"not a google.rpc.Status: {where}"
        message = error.get("message")
        assert isinstance(message, str) and message.strip(), f"no message: {where}"


def log_problems(text: str) -> list[str]:
    problems = []
    for line in text.splitlines():
        if "Traceback" in line:
            problems.append(line)
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            if re.search(r"\bERROR\b|\bCRITICAL\b", line):
                problems.append(line)
            continue
        if isinstance(entry, dict) and (entry.get("level") in ("ERROR", "CRITICAL") or entry.get("exc_info")
                                        or entry.get("exception") or entry.get("exc")):
            problems.append(line)
    return problems


@pytest.fixture(scope="module")
def log_start(stack) -> int:
    """Where the mesh log stood before this file's requests."""
    return stack.log_path.stat().st_size if stack.log_path.exists() else 0


def new_log(stack, start: int) -> str:
    with open(stack.log_path, "rb") as log:
        log.seek(start)
        return log.read().decode(errors="replace")


# ----- the tests -----

@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.rsplit(".", 1)[-1])
@settings(max_examples=100, **SETTINGS)
@given(data=st.data())
def test_bad_rest_requests(stack, log_start, service, data):
    route = data.draw(st.sampled_from([r for r in ROUTES if r.service == service]), label="route")
    path = fill_path(route, data.draw)
    params = data.draw(query(route), label="query")
    if params:
        path = f"{path}?{params}"
    body, raw = data.draw(bodies(route), label="body")
    encoded = raw if raw is not None else json.dumps(body).encode() if body is not None else b""
    # Past Envoy's 4 MiB body limit Envoy answers 413 before reading the body and closes the
    # connection, which a client still sending sees as a reset (413 is tested in tests/gateway).
    assume(len(encoded) < 3_500_000)
    reply = call(stack.front_door, route.verb, path, body, raw, token=stack.token)
    event(f"HTTP {reply.status}")
    event("body over 1 MB" if len(encoded) > 1_000_000 else "raw body" if raw is not None else "no body" if body is None
          else "JSON body")
    sent = raw[:100] if raw is not None else json.dumps(body)[:200] if body is not None else None
    check_reply(route, f"{route.verb} {path[:300]} body={sent!r}", reply)


def test_every_mesh_service_has_rest_paths():
    assert BANDIT_SERVICE in SERVICES and len(SERVICES) >= 2
    bandit = {r.method for r in ROUTES if r.service == BANDIT_SERVICE}
    assert {"CreateBandit", "Select", "Reward", *UNBUILT_BANDIT_RPCS} <= bandit


def test_the_mesh_logged_no_error_and_stays_healthy(stack, log_start):
    name = f"{PREFIX}after"
    created = call(stack.front_door, "POST", "/api/v1/bandits/definitions",
                   {"name": name, "arms": [{"id": "a"}, {"id": "b"}]}, token=stack.token)
    assert created.status == 200, created.body
    selected = call(stack.front_door, "POST", "/api/v1/bandits/select", {"bandit": name}, token=stack.token)
    assert selected.status == 200, selected.body
    assert selected.json()["decisionId"]
    problems = log_problems(new_log(stack, log_start))
    assert not problems, "\n".join(problems[:5])


@pytest.mark.parametrize("segment", JUNK_SEGMENTS, ids=lambda s: s[:12] or "empty")
def test_junk_path_segments(stack, segment):
    """Each junk segment in one built and one unbuilt RPC's path: a mesh-meant answer, as JSON with a message."""
    for route in (next(r for r in ROUTES if r.method == "GetBandit"),
                  next(r for r in ROUTES if r.service not in NAMED_SERVICES and "{" in r.template and r.verb == "GET")):
        prefix = urllib.parse.quote(PREFIX, safe="") if route.service in NAMED_SERVICES else ""
        path = VARIABLE.sub(lambda _, prefix=prefix: prefix + segment, route.template)
        reply = call(stack.front_door, route.verb, path, token=stack.token)
        check_reply(route, f"{route.verb} {path[:300]}", reply)
