"""REST through Envoy (grpc_json_transcoder) against direct gRPC, same server, sequential.

Subjects, alternated within each repetition:
  grpc       Select over a direct gRPC channel (raw bytes, request built once)
  rest       POST /api/v1/bandits/select through Envoy on one keep-alive HTTP/1.1 connection
  health     grpc.health.v1.Health/Check, direct
  health-env grpc.health.v1.Health/Check over gRPC through Envoy (Envoy's own cost, no transcoding)

    python bench/bench_gateway.py [--quick] [--reps N] [--access-log on|off]
"""

from __future__ import annotations

import json

import _harness as h
import grpc

ARMS = 10


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=None, help="sequential calls per repetition (default 2000)")
    args = p.parse_args()
    reps = h.reps_of(args)
    calls = args.calls or (300 if args.quick else 2000)
    warmup = 50 if args.quick else 300
    bandit = "bench-gateway"

    with h.Mesh("gateway", access_log=args.access_log == "on", envoy=True, keep_logs=args.keep_logs) as mesh, \
            grpc.insecure_channel(mesh.grpc_addr) as direct, grpc.insecure_channel(mesh.front_door) as via_envoy:
        h.create_bandit(direct, bandit, ARMS)
        h.check_select(direct, bandit)
        select = h.raw_unary(direct, h.BANDIT_SERVICE + "Select")
        health = h.raw_unary(direct, h.HEALTH_CHECK)
        health_envoy = h.raw_unary(via_envoy, h.HEALTH_CHECK)
        select_req, health_req = h.select_request_bytes(bandit), h.health_request_bytes()

        conn, rest_select = h.rest_select_caller(mesh, bandit, user_id="bench-user")

        reply = json.loads(rest_select(b""))
        assert reply.get("decisionId") and len(reply.get("choices", [])) == 1, reply
        health_envoy(health_req, timeout=10)

        try:
            h.progress(f"sequential: {calls} calls x 4 subjects x {reps} repetitions (after {warmup} warm-up)")
            seq = h.alternating(reps, {
                "grpc": lambda: h.sequential_latencies(select, select_req, calls, warmup),
                "rest": lambda: h.sequential_latencies(rest_select, b"", calls, warmup),
                "health": lambda: h.sequential_latencies(health, health_req, calls, warmup),
                "health-env": lambda: h.sequential_latencies(health_envoy, health_req, calls, warmup),
            })
        finally:
            conn.close()

    p50 = {k: [h.percentile(v, 50) for v in seq[k]] for k in seq}
    p99 = {k: [h.percentile(v, 99) for v in seq[k]] for k in seq}
    delta = [r - g for r, g in zip(p50["rest"], p50["grpc"])]
    delta_health = [e - d for e, d in zip(p50["health-env"], p50["health"])]
    h.result(f"# bench_gateway: REST via Envoy vs direct gRPC, {calls} sequential calls, {reps} reps, "
             f"keep-alive HTTP/1.1, access log {args.access_log}")
    h.result(h.ratio_line("rest select p50", p50["rest"], p50["grpc"], "ms", "grpc", target=1.3))
    h.result(h.ratio_line("rest select p99", p99["rest"], p99["grpc"], "ms", "grpc"))
    h.result(f"rest select p50 overhead over grpc: {h.fmt(h.median(delta))} ms (median of {reps})")
    h.result(h.ratio_line("envoy health p50", p50["health-env"], p50["health"], "ms", "direct"))
    h.result(h.ratio_line("envoy health p99", p99["health-env"], p99["health"], "ms", "direct"))
    h.result(f"envoy grpc pass-through p50 overhead: {h.fmt(h.median(delta_health))} ms (median of {reps})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
