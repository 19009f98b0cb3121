"""S3ArtifactStore against a real S3 (SeaweedFS, from the `s3_endpoint` fixture): staging,
metadata, copies, deletes, pruning, size limits, and failures that become the port's
exceptions within bounded time. Every run writes under a prefix of its own and deletes it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ml_serving_server.services.registry.domain.model import ArtifactFormat
from ml_serving_server.services.registry.domain.ports import (
    ArtifactMissing,
    ArtifactTooLarge,
    BackendUnavailable,
    StagedFile,
    StoredObject,
)
from ml_serving_server.services.registry import s3_artifacts
from ml_serving_server.services.registry.s3_artifacts import S3ArtifactStore
from ml_serving_tools import devservices

MIB = 1024 * 1024
MAR = ArtifactFormat.TORCHSERVE_MAR
BUCKET = devservices.MODELS_BUCKET


@pytest.fixture(scope="module")
def s3(s3_endpoint):
    """The endpoint, with the registry's bucket, and a raw client for looking behind the store."""
    devservices.ensure_buckets(s3_endpoint, BUCKET)
    return s3_endpoint


@pytest.fixture(scope="module")
def run_prefix(s3):
    """A prefix no other run uses; everything under it is deleted afterwards."""
    prefix = f"test-s3-artifacts-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})


@pytest.fixture
def staging_dir(tmp_path) -> Path:
    return tmp_path / "staging"


def make_store(endpoint, root: str, staging_dir: Path, timeout: float = 10.0, **kwargs) -> S3ArtifactStore:
    return S3ArtifactStore(root, endpoint.url, endpoint.access_key_id, endpoint.secret_access_key, endpoint.region,
                           timeout, temp_dir=staging_dir, **kwargs)


@pytest.fixture
async def store(s3, run_prefix, staging_dir, request):
    """A store rooted at a prefix of this test's own (under the run's)."""
    root = f"s3://{BUCKET}/{run_prefix}/{request.node.name[:60]}-{uuid.uuid4().hex[:6]}"
    store = make_store(s3, root, staging_dir)
    yield store
    await store.close()


def leftovers(staging_dir: Path) -> list[Path]:
    return sorted(staging_dir.iterdir()) if staging_dir.exists() else []


async def chunks_of(blocks):
    for block in blocks:
        yield block


# ----- round trips -----

async def test_stage_put_stat_read_round_trip(store, s3, staging_dir):
    data = os.urandom(100_000)
    staged = await store.stage_bytes(data)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.size_bytes == len(data)
    assert staged.path.parent == staging_dir and staged.path.read_bytes() == data

    uri = await store.put(staged, "models/resnet/u1/model.mar", MAR)
    assert uri == f"s3://{BUCKET}/{store.prefix}/models/resnet/u1/model.mar"
    assert await store.stat(uri) == StoredObject(uri, len(data), staged.sha256, MAR)
    assert await store.read(uri) == data

    head = s3.client().head_object(Bucket=BUCKET, Key=f"{store.prefix}/models/resnet/u1/model.mar")
    assert head["Metadata"] == {"sha256": staged.sha256, "format": "TORCHSERVE_MAR"}

    store.discard(staged)
    store.discard(staged)  # twice is fine
    assert leftovers(staging_dir) == []


async def test_objects_stored_by_others_have_no_checksum_or_format(store, s3, run_prefix):
    key = f"{run_prefix}/foreign/model.zip"
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=b"zip bytes")
    found = await store.stat(f"s3://{BUCKET}/{key}")
    assert found == StoredObject(f"s3://{BUCKET}/{key}", 9, "", ArtifactFormat.UNSPECIFIED)


async def test_stage_stream_and_stage_uri(store, staging_dir):
    blocks = [os.urandom(n) for n in (1, 3 * MIB, 10, 5 * MIB, 0, 7)]
    data = b"".join(blocks)
    staged = await store.stage_stream(chunks_of(blocks), max_bytes=len(data))  # exactly the limit passes
    assert (staged.sha256, staged.size_bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    uri = await store.put(staged, "uploads/u2/model.tar.gz", ArtifactFormat.DIRECTORY_TAR_GZ)
    store.discard(staged)

    back = await store.stage_uri(uri, max_bytes=len(data))
    assert (back.sha256, back.size_bytes) == (staged.sha256, len(data))
    assert back.path.read_bytes() == data
    store.discard(back)
    assert leftovers(staging_dir) == []


async def test_stage_uri_reads_any_readable_object(store, s3, run_prefix):
    key = f"{run_prefix}/elsewhere/weights.zip"
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=b"elsewhere")
    staged = await store.stage_uri(f"s3://{BUCKET}/{key}", max_bytes=100)
    assert staged.sha256 == hashlib.sha256(b"elsewhere").hexdigest()
    store.discard(staged)


async def test_stage_file_takes_the_file_over(store, tmp_path, staging_dir):
    downloaded = tmp_path / "download" / "model.mar"
    downloaded.parent.mkdir()
    downloaded.write_bytes(b"m" * 5000)
    staged = await store.stage_file(downloaded)
    assert not downloaded.exists()
    assert staged.path.parent == staging_dir
    assert (staged.sha256, staged.size_bytes) == (hashlib.sha256(b"m" * 5000).hexdigest(), 5000)
    store.discard(staged)

    downloaded.write_bytes(b"m" * 5000)
    with pytest.raises(ArtifactTooLarge):
        await store.stage_file(downloaded, max_bytes=4999)
    with pytest.raises(ArtifactMissing):
        await store.stage_file(tmp_path / "download")  # a directory
    with pytest.raises(ArtifactMissing):
        await store.stage_file(tmp_path / "nothing-here")
    assert leftovers(staging_dir) == []


@pytest.mark.timeout(120)
async def test_a_200_mib_artifact_streams_in_and_out(store, staging_dir):
    """LARGE: 200 MiB through S3 (7 to 16 s against SeaweedFS on a busy 2-CPU machine; the
    timings are printed with -s): 4 MiB chunks as UploadArtifact sends them, a multipart
    upload, a download back, and a multipart server-side copy."""
    block_count, block = 50, 4 * MIB
    random_block = os.urandom(block)  # 200 MiB from os.urandom would take seconds by itself
    expected = hashlib.sha256()

    async def chunks():
        for i in range(block_count):  # each chunk different, none compressible
            chunk = i.to_bytes(8, "big") + random_block[8:]
            expected.update(chunk)
            yield chunk

    t0 = time.perf_counter()
    staged = await store.stage_stream(chunks(), max_bytes=block_count * block)
    t_stage = time.perf_counter() - t0
    assert (staged.sha256, staged.size_bytes) == (expected.hexdigest(), block_count * block)

    t0 = time.perf_counter()
    uri = await store.put(staged, "uploads/big/model.mar", MAR)
    t_put = time.perf_counter() - t0
    store.discard(staged)

    t0 = time.perf_counter()
    back = await store.stage_uri(uri, max_bytes=block_count * block)
    t_download = time.perf_counter() - t0
    assert (back.sha256, back.size_bytes) == (staged.sha256, staged.size_bytes)
    store.discard(back)

    t0 = time.perf_counter()
    copied = await store.copy(uri, "models/big/v1/model.mar")
    t_copy = time.perf_counter() - t0
    assert await store.stat(copied) == StoredObject(copied, staged.size_bytes, staged.sha256, MAR)

    print(f"\n200 MiB: stage_stream {t_stage:.2f}s, put {t_put:.2f}s, stage_uri {t_download:.2f}s, "
          f"copy {t_copy:.2f}s")
    assert leftovers(staging_dir) == []


# ----- limits -----

async def test_too_large_stops_reading_and_keeps_nothing(store, staging_dir):
    sent, closed = 0, False

    async def endless():
        nonlocal sent, closed
        try:
            while True:
                sent += 1
                yield b"x" * MIB
        finally:
            closed = True

    with pytest.raises(ArtifactTooLarge):
        await store.stage_stream(endless(), max_bytes=5 * MIB + 1)
    assert sent == 6, "stops at the first chunk past the limit"
    assert closed, "the sender is told"
    assert leftovers(staging_dir) == []


async def test_too_large_while_a_write_is_in_flight_keeps_nothing(store, staging_dir):
    blocks = [os.urandom(4 * MIB) for _ in range(5)]
    with pytest.raises(ArtifactTooLarge):
        await store.stage_stream(chunks_of(blocks), max_bytes=18 * MIB)
    assert leftovers(staging_dir) == []


async def test_stage_uri_checks_the_size_before_downloading(store, staging_dir):
    staged = await store.stage_bytes(b"y" * 2000)
    uri = await store.put(staged, "uploads/u3/a.zip", ArtifactFormat.DIRECTORY_ZIP)
    store.discard(staged)
    with pytest.raises(ArtifactTooLarge):
        await store.stage_uri(uri, max_bytes=1999)
    assert leftovers(staging_dir) == []


async def test_a_cancelled_stream_keeps_nothing(store, staging_dir):
    started = asyncio.Event()

    async def slow():
        for _ in range(3):
            yield os.urandom(4 * MIB)
        started.set()
        await asyncio.sleep(60)
        yield b"never"

    task = asyncio.create_task(store.stage_stream(slow(), max_bytes=100 * MIB))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # a write still in flight deletes the file when it ends
        if not leftovers(staging_dir):
            break
        await asyncio.sleep(0.02)
    assert leftovers(staging_dir) == []


# ----- copies, deletes, missing objects -----

async def test_copy_keeps_the_metadata(store):
    staged = await store.stage_bytes(b"artifact")
    upload = await store.put(staged, "uploads/u4/model.mar", MAR)
    store.discard(staged)
    copied = await store.copy(upload, "models/m/u5/model.mar")
    assert copied == f"s3://{BUCKET}/{store.prefix}/models/m/u5/model.mar"
    assert await store.stat(copied) == StoredObject(copied, 8, staged.sha256, MAR)
    assert await store.read(copied) == b"artifact"
    assert await store.stat(upload) is not None, "a copy leaves the source"


async def test_delete_is_idempotent_and_only_touches_the_registrys_objects(store, s3, run_prefix):
    staged = await store.stage_bytes(b"gone soon")
    uri = await store.put(staged, "models/m/u6/model.mar", MAR)
    store.discard(staged)
    await store.delete(uri)
    assert await store.stat(uri) is None
    await store.delete(uri)
    await store.delete(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/k")

    foreign = f"{run_prefix}/user-owned/model.mar"  # e.g. the source of a version made in MLflow directly
    s3.client().put_object(Bucket=BUCKET, Key=foreign, Body=b"theirs")
    await store.delete(f"s3://{BUCKET}/{foreign}")
    assert await store.stat(f"s3://{BUCKET}/{foreign}") is not None


async def test_missing_objects(store):
    missing = f"s3://{BUCKET}/{store.prefix}/models/m/none/model.mar"
    other_bucket = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/model.mar"
    assert await store.stat(missing) is None
    assert await store.stat(other_bucket) is None
    for uri in (missing, other_bucket):
        with pytest.raises(ArtifactMissing):
            await store.stage_uri(uri, max_bytes=MIB)
        with pytest.raises(ArtifactMissing):
            await store.read(uri)
        with pytest.raises(ArtifactMissing):
            await store.copy(uri, "models/m/u7/model.mar")


async def test_keys_and_uris_are_checked(store):
    staged = await store.stage_bytes(b"k")
    try:
        for key in ("", "/abs", "models/../escape", "models//double", "models/./dot"):
            with pytest.raises(ValueError):
                await store.put(staged, key, MAR)
    finally:
        store.discard(staged)
    for uri in ("runs:/abc/model", "file:///etc/passwd", "s3://b"):
        with pytest.raises(ValueError):
            await store.stat(uri)


def test_uploads_are_recognised(s3, staging_dir):
    store = make_store(s3, f"s3://{BUCKET}/reg/prefix/", staging_dir)
    assert (store.bucket, store.prefix) == (BUCKET, "reg/prefix")
    assert store.is_upload(f"s3://{BUCKET}/reg/prefix/uploads/u1/model.mar")
    assert not store.is_upload(f"s3://{BUCKET}/reg/prefix/models/m/u1/model.mar")
    assert not store.is_upload(f"s3://{BUCKET}/reg/prefix-other/uploads/u1/model.mar")
    assert not store.is_upload(f"s3://{BUCKET}/uploads/u1/model.mar")
    assert not store.is_upload(f"s3://other-bucket/reg/prefix/uploads/u1/model.mar")
    assert not store.is_upload("runs:/abc/uploads/x")
    assert not store.is_upload("not a uri")
    bare = make_store(s3, f"s3://{BUCKET}", staging_dir)
    assert bare.prefix == "" and bare.uri("uploads/u/m.mar") == f"s3://{BUCKET}/uploads/u/m.mar"
    assert bare.is_upload(f"s3://{BUCKET}/uploads/u/m.mar")
    for bad in ("", "bucket/prefix", "http://bucket/prefix", "s3://", "s3://b/../x"):
        with pytest.raises(ValueError):
            make_store(s3, bad, staging_dir)


async def test_prune_uploads_deletes_old_uploads_only(store):
    uris = []
    for name in ("uploads/p1/a.mar", "uploads/p2/b.mar", "models/m/p3/c.mar"):
        staged = await store.stage_bytes(name.encode())
        uris.append(await store.put(staged, name, MAR))
        store.discard(staged)
    now = datetime.now(timezone.utc)
    assert await store.prune_uploads(now - timedelta(hours=1)) == 0
    assert await store.prune_uploads() == 0, "the default retention (24 h) keeps fresh uploads"
    assert await store.prune_uploads(now + timedelta(minutes=5)) == 2
    assert [await store.stat(uri) is None for uri in uris] == [True, True, False]
    assert await store.prune_uploads(now + timedelta(minutes=5)) == 0


async def test_prune_uploads_pages_through_many(store, monkeypatch):
    """Several listing pages and delete batches (made small here: S3 objects are slow to make)."""
    monkeypatch.setattr(s3_artifacts, "LIST_PAGE", 4)
    monkeypatch.setattr(s3_artifacts, "DELETE_BATCH", 3)
    staged = await store.stage_bytes(b"u")
    try:
        await asyncio.gather(*(store.put(staged, f"uploads/many/{i:02d}", MAR) for i in range(23)))
        await store.put(staged, "models/m/keep/m.mar", MAR)
    finally:
        store.discard(staged)
    assert await store.prune_uploads(datetime.now(timezone.utc) + timedelta(minutes=5)) == 23
    assert await store.stat(store.uri("models/m/keep/m.mar")) is not None


# ----- an S3 that is down, slow or refuses us -----

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def every_call_is_unavailable(store: S3ArtifactStore, staging_dir: Path, bound_s: float) -> None:
    staged_path = staging_dir / "by-hand.part"
    staging_dir.mkdir(parents=True, exist_ok=True)
    staged_path.write_bytes(b"s")
    staged = StagedFile(staged_path, hashlib.sha256(b"s").hexdigest(), 1)
    uri = f"s3://{BUCKET}/{store.prefix}/uploads/u/m.mar"
    calls = {
        "put": lambda: store.put(staged, "uploads/u/m.mar", MAR),
        "stat": lambda: store.stat(uri),
        "copy": lambda: store.copy(uri, "models/m/u/m.mar"),
        "stage_uri": lambda: store.stage_uri(uri, MIB),
        "read": lambda: store.read(uri),
        "delete": lambda: store.delete(uri),
        "prune_uploads": lambda: store.prune_uploads(),
    }
    for name, call in calls.items():
        t0 = time.perf_counter()
        with pytest.raises(BackendUnavailable):
            await call()
        elapsed = time.perf_counter() - t0
        assert elapsed < bound_s, f"{name} took {elapsed:.1f}s"
    t0 = time.perf_counter()
    assert await store.ping() is False
    assert time.perf_counter() - t0 < bound_s
    staged_path.unlink()
    assert leftovers(staging_dir) == []


async def test_nothing_listening_is_unavailable_quickly(staging_dir):
    endpoint = devservices.S3Endpoint(f"http://127.0.0.1:{closed_port()}", "k", "s")
    store = make_store(endpoint, f"s3://{BUCKET}/x", staging_dir, timeout=1.0)
    try:
        await every_call_is_unavailable(store, staging_dir, bound_s=4.0)
    finally:
        await store.close()


async def test_a_server_that_never_answers_is_unavailable_after_the_timeout(staging_dir):
    """Accepts connections, says nothing: each call waits out the read timeout, twice."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        endpoint = devservices.S3Endpoint(f"http://127.0.0.1:{listener.getsockname()[1]}", "k", "s")
        store = make_store(endpoint, f"s3://{BUCKET}/x", staging_dir, timeout=0.3)
        try:
            t0 = time.perf_counter()
            with pytest.raises(BackendUnavailable):
                await store.stat(f"s3://{BUCKET}/x/uploads/u/m.mar")
            assert 0.5 < time.perf_counter() - t0 < 4.0
            assert await store.ping() is False
        finally:
            await store.close()


async def test_wrong_keys_are_unavailable_not_missing(s3, run_prefix, staging_dir):
    endpoint = devservices.S3Endpoint(s3.url, s3.access_key_id, "not-the-secret", s3.region)
    store = make_store(endpoint, f"s3://{BUCKET}/{run_prefix}/wrong-keys", staging_dir, timeout=5.0)
    try:
        await every_call_is_unavailable(store, staging_dir, bound_s=5.0)
    finally:
        await store.close()


async def test_a_missing_registry_bucket_is_not_healthy(s3, staging_dir):
    """(Whether a put then fails depends on the server: SeaweedFS creates the bucket for an admin.)"""
    store = make_store(s3, f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/p", staging_dir)
    try:
        assert await store.ping() is False
    finally:
        await store.close()


async def test_ping_and_close(s3, run_prefix, staging_dir):
    store = make_store(s3, f"s3://{BUCKET}/{run_prefix}/ping", staging_dir)
    assert await store.ping() is True
    await store.close()
    await store.close()  # twice is fine
    assert await store.ping() is False
    with pytest.raises(BackendUnavailable):
        await store.stage_bytes(b"after close")
    with pytest.raises(BackendUnavailable):
        await store.stat(f"s3://{BUCKET}/{run_prefix}/ping/uploads/u/m.mar")
