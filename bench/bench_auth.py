"""What identity checks cost.

1. The mesh's own token check, in process: a cached verification (every call after a
   caller's first) vs a full ES256 signature check, per call.
2. Select through Envoy with auth on (Envoy's jwt_authn and RBAC, then the mesh's check)
   vs the same stack with auth off, p50 of sequential REST calls.

    python bench/bench_auth.py [--quick] [--reps N]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import _harness as h
import grpc

from ml_serving_server.runtime.auth import JwksFile, TokenVerifier
from ml_serving_tools.devauth import ensure_dev_keys, mint_token


def token_check_micros(reps: int, calls: int = 20_000) -> tuple[list[float], list[float]]:
    keys = ensure_dev_keys(Path(tempfile.mkdtemp(prefix="bench-auth-")))
    cached, uncached = [], []

    async def measure() -> None:
        for _ in range(reps):
            verifier = TokenVerifier(JwksFile(str(keys.jwks)), keys.issuer, keys.audience)
            token = mint_token(keys, scopes=["bandit.write"])
            await verifier.verify(token)  # the caller's first call fills the cache
            started = time.perf_counter()
            for _ in range(calls):
                await verifier.verify(token)
            cached.append((time.perf_counter() - started) / calls * 1e6)
            fresh = [mint_token(keys, scopes=["bandit.write"], subject=f"u{i}") for i in range(calls // 20)]
            started = time.perf_counter()
            for t in fresh:
                await verifier.verify(t)
            uncached.append((time.perf_counter() - started) / len(fresh) * 1e6)

    asyncio.run(measure())
    return cached, uncached


def envoy_select_p50(args, reps: int, calls: int, warmup: int) -> dict[str, list[float]]:
    bandit = "bench-auth"
    with ExitStack() as stack:
        meshes = {name: stack.enter_context(h.Mesh(f"auth-{name}", access_log=args.access_log == "on", envoy=True,
                                                   keep_logs=args.keep_logs, auth=name == "on"))
                  for name in ("on", "off")}
        callers = {}
        for name, mesh in meshes.items():
            with grpc.insecure_channel(mesh.grpc_addr) as direct:
                metadata = [("authorization", f"Bearer {mesh.token}")] if mesh.token else None
                h.create_bandit(direct, bandit, 10, metadata=metadata)
            conn, callers[name] = h.rest_select_caller(mesh, bandit)
            stack.callback(conn.close)
            callers[name](b"")
        h.progress(f"REST select through Envoy: {calls} calls x 2 stacks x {reps} repetitions")
        seq = h.alternating(reps, {name: (lambda c=caller: h.sequential_latencies(c, b"", calls, warmup))
                                   for name, caller in callers.items()})
    return {name: [h.percentile(v, 50) for v in values] for name, values in seq.items()}


def main() -> int:
    args = h.parser(__doc__.splitlines()[0]).parse_args()
    reps = h.reps_of(args)
    h.progress(f"token check: {reps} repetitions")
    cached, uncached = token_check_micros(reps, 5_000 if args.quick else 20_000)
    h.result(f"# bench_auth: token check in process, {reps} reps")
    h.result(h.ratio_line("token check cached", cached, uncached, "us", "full ES256 check"))
    ok = h.median(cached) < 50
    h.result(f"token check cached {h.fmt(h.median(cached))} us per call [target < 50 us: {'met' if ok else 'MISSED'}]")
    calls, warmup = (300, 50) if args.quick else (2000, 300)
    p50 = envoy_select_p50(args, reps, calls, warmup)
    h.result(f"# bench_auth: REST Select via Envoy, auth on (Envoy jwt_authn + RBAC, mesh check) vs off, "
             f"{calls} sequential calls, {reps} reps")
    h.result(h.ratio_line("rest select p50 auth on", p50["on"], p50["off"], "ms", "auth off", target=1.15))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
