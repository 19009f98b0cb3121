"""One caller's oversized or malformed requests never fail another caller's requests:
eight clients through Envoy at once, two of them sending garbage."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import grpc

from ...support import call

GOOD_CLIENTS = 6
GOOD_REQUESTS_EACH = 400


def test_bad_callers_do_not_fail_good_ones(stack):
    victim = f"iso-victim-{uuid.uuid4().hex[:8]}"
    target = f"iso-target-{uuid.uuid4().hex[:8]}"
    for name in (victim, target):
        reply = call(stack.front_door, "POST", "/api/v1/bandits/definitions",
                     {"name": name, "arms": [{"id": "a"}, {"id": "b"}]}, token=stack.token)
        assert reply.status == 200, reply.body

    bad_requests = [
        lambda: call(stack.front_door, "POST", "/api/v1/bandits/select",
                     {"bandit": target, "candidateArmIds": [f"nope-{i}" for i in range(20_000)]}, token=stack.token),
        lambda: call(stack.front_door, "PATCH", f"/api/v1/bandits/definitions/{target}",
                     {"description": "x" * 600_000}, token=stack.token),
        lambda: call(stack.front_door, "POST", "/api/v1/bandits/select", raw=b'{"bandit": "tr', token=stack.token),
        lambda: call(stack.front_door, "POST", "/api/v1/bandits/select", {"bandit": target},
                     token=stack.token, headers={"x-padding": "p" * 12_000}),
        lambda: call(stack.front_door, "POST", "/api/v1/bandits/reward",
                     {"bandit": target, "armId": "a", "reward": 7}, token="not-a-token"),
        lambda: _garbage_grpc(stack.front_door, stack.token),
    ]
    good: Counter = Counter()
    bad: Counter = Counter()
    done = threading.Event()

    def bad_client(offset: int) -> None:
        i = offset
        while not done.is_set():
            outcome = bad_requests[i % len(bad_requests)]()
            bad[getattr(outcome, "status", outcome)] += 1
            i += 1

    def good_client() -> None:
        for _ in range(GOOD_REQUESTS_EACH):
            reply = call(stack.front_door, "POST", "/api/v1/bandits/select", {"bandit": victim}, token=stack.token)
            good[reply.status] += 1

    bad_threads = [threading.Thread(target=bad_client, args=(k,)) for k in range(2)]
    good_threads = [threading.Thread(target=good_client) for _ in range(GOOD_CLIENTS)]
    started = time.monotonic()
    for thread in bad_threads + good_threads:
        thread.start()
    for thread in good_threads:
        thread.join(timeout=120)
    done.set()
    for thread in bad_threads:
        thread.join(timeout=30)
    assert good == {200: GOOD_CLIENTS * GOOD_REQUESTS_EACH}, (good, bad, time.monotonic() - started)
    assert sum(bad.values()) >= len(bad_requests)  # the bad callers really were at it
    assert not [status for status in bad if isinstance(status, int) and status >= 500 and status != 503], bad


def _garbage_grpc(front_door: str, token: str) -> str:
    with grpc.insecure_channel(front_door) as channel:
        garbage = channel.unary_unary("/mnbara.mlserving.bandit.v1.BanditService/Select",
                                      request_serializer=None, response_deserializer=None)
        try:
            garbage(b"\xff\xff\xff\xff", metadata=[("authorization", f"Bearer {token}")], timeout=5)
        except grpc.RpcError as error:
            return error.code().name
    return "OK"
