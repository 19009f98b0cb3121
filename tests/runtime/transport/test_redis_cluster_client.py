"""The mesh's Redis Cluster client (runtime/redis_client.py) on a real three-node cluster: a burst
far beyond its connections waits for them instead of failing, and nothing is sent twice."""

from __future__ import annotations

import asyncio
import uuid

from ml_serving_server.runtime.redis_client import connect, is_cluster
from ml_serving_server.runtime.settings import RedisSettings

BURST = 300


async def test_a_burst_of_commands_waits_for_connections_and_counts_once(redis_cluster_url):
    client = connect(RedisSettings(url=redis_cluster_url, cluster=True, max_connections=8))
    key = f"{{burst-{uuid.uuid4().hex[:8]}}}:n"
    try:
        assert is_cluster(client)
        await asyncio.gather(*(client.incr(key) for _ in range(BURST)))
        assert int(await client.get(key)) == BURST
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_burst_of_cross_slot_reads_waits_for_connections(redis_cluster_url):
    client = connect(RedisSettings(url=redis_cluster_url, cluster=True, max_connections=8))
    keys = [f"burst-{uuid.uuid4().hex[:8]}-{i}" for i in range(50)]  # no hash tag: spread over the nodes
    try:
        await client.mset_nonatomic({k: i for i, k in enumerate(keys)})
        replies = await asyncio.gather(*(client.mget_nonatomic(keys) for _ in range(BURST)))
        assert all(reply == [str(i).encode() for i in range(len(keys))] for reply in replies)
    finally:
        await asyncio.gather(*(client.delete(k) for k in keys))
        await client.aclose()
