"""ArtifactStore over an S3-compatible bucket (AWS S3, SeaweedFS, MinIO), with boto3.

Layout under the registry's root (REGISTRY_ARTIFACT_ROOT, s3://<bucket>/<prefix>):
  <prefix>/models/<model>/<unique>/<file>   versions' artifacts (domain.artifacts.artifact_key)
  <prefix>/uploads/<unique>/<file>          UploadArtifact results until a version copies them;
                                            prune_uploads deletes those older than the retention
Every object the registry writes carries its checksum and format as metadata:
x-amz-meta-sha256 (hex) and x-amz-meta-format (an ArtifactFormat name).

boto3 is synchronous: every call runs in one bounded thread pool (`max_workers`), so a slow
S3 never blocks the event loop and never takes more threads than that; multipart transfers
use up to TRANSFER_THREADS more threads each. ping has a thread and a client of its own, so a
busy store still answers health checks. Artifacts are staged in temporary files in
`temp_dir` while they are received, hashed (SHA-256) and checked, never held in memory.

Failures become the port's exceptions, never botocore's: no object (404; for stage_uri also
AccessDenied, an object the caller named that the registry may not read) is ArtifactMissing;
anything else (refused connection, timeouts, 5xx, wrong keys, a missing registry bucket) is
BackendUnavailable. Each call times out after `timeout_seconds` per connect or read, and is
tried at most twice. delete only ever deletes under the registry's root.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import shutil
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator, Callable, TypeVar

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer import exceptions as transfer_errors

from ...errors import InvalidArgument
from .domain.artifacts import UPLOADS_DIR, parse_artifact_uri
from .domain.model import ArtifactFormat
from .domain.ports import ArtifactMissing, ArtifactTooLarge, BackendUnavailable, StagedFile, StoredObject

MIB = 1024 * 1024
PART_BYTES = 16 * MIB  # multipart threshold and part size
TRANSFER_THREADS = 4  # threads of one multipart upload or copy
READ_BYTES = 1 * MIB  # what is hashed and written at a time
FLUSH_BYTES = 4 * MIB  # stage_stream writes once this much arrived (or at the end)
PING_TIMEOUT_SECONDS = 2.0
DELETE_BATCH = 1000  # keys per DeleteObjects call (S3's maximum)
LIST_PAGE = 1000  # keys per ListObjectsV2 call (S3's maximum)

T = TypeVar("T")

_TRANSFER_ERRORS = (transfer_errors.RetriesExceededError, transfer_errors.S3UploadFailedError,
                    transfer_errors.S3DownloadFailedError, transfer_errors.S3CopyFailedError)
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_UNREADABLE = {"AccessDenied", "AllAccessDisabled"}  # valid keys, not allowed to read that object


_session: boto3.session.Session | None = None
_session_lock = threading.Lock()


def _new_client(**kwargs):
    """An S3 client from one boto3 session that every store shares: the session parses S3's API
    description once (most of the second a client takes to make). Each client is given its
    keys, so none are shared; the lock because sessions make clients one thread at a time."""
    global _session
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client("s3", **kwargs)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(exc: BaseException, doing: str) -> BackendUnavailable:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return BackendUnavailable(f"S3 {doing} failed: {_code(exc) or 'error'} (HTTP {status})")
    return BackendUnavailable(f"S3 {doing} failed: {type(exc).__name__}: {exc}")


def parse_root(root_uri: str) -> tuple[str, str]:
    """s3://bucket/prefix -> (bucket, prefix without slashes at either end; may be empty)."""
    if not root_uri.startswith("s3://"):
        raise ValueError(f"the artifact root must be s3://<bucket>[/<prefix>], not {root_uri!r}")
    bucket, _, prefix = root_uri[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    if not bucket or any(part in ("", ".", "..") for part in prefix.split("/") if prefix):
        raise ValueError(f"the artifact root must be s3://<bucket>[/<prefix>], not {root_uri!r}")
    return bucket, prefix


class _Staging:
    """A temporary file being written, hashed and counted; one writer at a time."""

    def __init__(self, directory: Path):
        handle, name = tempfile.mkstemp(prefix="artifact-", suffix=".part", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(handle, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)

    def write_all(self, parts: list[bytes]) -> None:
        for part in parts:
            self.write(part)

    def finish(self) -> StagedFile:
        self._file.close()
        return StagedFile(self.path, self._hash.hexdigest(), self.size)

    def abort(self) -> None:
        try:
            self._file.close()
        finally:
            self.path.unlink(missing_ok=True)


class S3ArtifactStore:
    def __init__(self, root_uri: str, endpoint_url: str, access_key_id: str, secret_access_key: str, region: str,
                 timeout_seconds: float, temp_dir: Path | None = None, upload_retention_hours: float = 24,
                 *, max_workers: int = 8):
        self.bucket, self.prefix = parse_root(root_uri)
        self.upload_retention = timedelta(hours=upload_retention_hours)
        self._temp_dir = Path(temp_dir) if temp_dir is not None else Path(tempfile.gettempdir())
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="s3-artifacts")
        self._ping_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="s3-artifacts-ping")
        self._ping_timeout = min(timeout_seconds, PING_TIMEOUT_SECONDS)
        connection = dict(endpoint_url=endpoint_url or None, aws_access_key_id=access_key_id or None,
                          aws_secret_access_key=secret_access_key or None, region_name=region or "us-east-1")
        # A custom endpoint (SeaweedFS, MinIO) takes the bucket in the path, AWS in the host name.
        addressing = {"addressing_style": "path" if endpoint_url else "auto"}
        self._client = _new_client(config=Config(
            signature_version="s3v4", s3=addressing, connect_timeout=timeout_seconds, read_timeout=timeout_seconds,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=max_workers * TRANSFER_THREADS), **connection)
        self._ping_client = _new_client(config=Config(
            signature_version="s3v4", s3=addressing, connect_timeout=self._ping_timeout,
            read_timeout=self._ping_timeout, retries={"max_attempts": 1, "mode": "standard"}), **connection)
        self._transfer = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES,
                                        max_concurrency=TRANSFER_THREADS, use_threads=True)
        self._closed = False

    # ----- URIs and keys -----

    def uri(self, key: str) -> str:
        """The s3:// URI of `key` (relative to the registry's prefix)."""
        return f"s3://{self.bucket}/{self._full_key(key)}"

    def _full_key(self, key: str) -> str:
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"not a key relative to the registry's prefix: {key[:100]!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _own_prefix(self, directory: str = "") -> str:
        base = f"{self.prefix}/" if self.prefix else ""
        return f"{base}{directory}/" if directory else base

    @staticmethod
    def _location(uri: str) -> tuple[str, str]:
        try:
            location = parse_artifact_uri(uri)
        except InvalidArgument:
            location = None
        if location is None or location.scheme != "s3":
            raise ValueError(f"not an s3://<bucket>/<key> URI: {uri[:100]!r}")
        return location.container, location.path

    def _is_own(self, uri: str, directory: str = "") -> bool:
        try:
            bucket, key = self._location(uri)
        except ValueError:
            return False
        return bucket == self.bucket and key.startswith(self._own_prefix(directory))

    def is_upload(self, uri: str) -> bool:
        return self._is_own(uri, UPLOADS_DIR)

    # ----- running blocking calls -----

    def _submit(self, fn: Callable[..., T], *args) -> concurrent.futures.Future[T]:
        if self._closed:
            raise BackendUnavailable("the artifact store is closed")
        try:
            return self._executor.submit(fn, *args)
        except RuntimeError:  # shut down meanwhile
            raise BackendUnavailable("the artifact store is closed") from None

    async def _run(self, doing: str, fn: Callable[..., T], *args) -> T:
        return await self._outcome(doing, self._submit(fn, *args))

    @staticmethod
    async def _outcome(doing: str, future: concurrent.futures.Future[T]) -> T:
        try:
            return await asyncio.wrap_future(future)
        except (ClientError, BotoCoreError, Boto3Error, *_TRANSFER_ERRORS) as exc:
            raise _unavailable(exc, doing) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():  # close() dropped it
                raise BackendUnavailable("the artifact store is closed") from None
            raise

    async def _run_staging(self, doing: str, fn: Callable[..., StagedFile], *args) -> StagedFile:
        """Like _run; when the caller gives up first, the file the thread still makes is deleted."""
        future = self._submit(fn, *args)
        try:
            return await self._outcome(doing, future)
        except asyncio.CancelledError:
            future.add_done_callback(_discard_result)
            raise

    # ----- staging -----

    def _new_staging(self) -> _Staging:
        return _Staging(self._temp_dir)

    async def stage_bytes(self, data: bytes) -> StagedFile:
        def stage() -> StagedFile:
            staging = self._new_staging()
            try:
                staging.write(data)
                return staging.finish()
            except BaseException:
                staging.abort()
                raise

        return await self._run_staging("staging", stage)

    async def stage_stream(self, chunks: AsyncIterator[bytes], max_bytes: int) -> StagedFile:
        if self._closed:
            raise BackendUnavailable("the artifact store is closed")
        staging = self._new_staging()
        pending: concurrent.futures.Future | None = None  # the write in progress, one at a time
        buffered: list[bytes] = []
        buffered_bytes = received = 0
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                received += len(chunk)
                if received > max_bytes:
                    raise ArtifactTooLarge(f"more than {max_bytes} bytes")
                buffered.append(chunk)
                buffered_bytes += len(chunk)
                if buffered_bytes >= FLUSH_BYTES:
                    if pending is not None:
                        await asyncio.wrap_future(pending)
                    pending = self._submit(staging.write_all, buffered)  # hashed and written while more arrive
                    buffered, buffered_bytes = [], 0
            if pending is not None:
                await asyncio.wrap_future(pending)
            pending = self._submit(staging.write_all, buffered)
            await asyncio.wrap_future(pending)
            pending = self._submit(staging.finish)
            return await asyncio.wrap_future(pending)
        except BaseException as exc:
            if pending is None or pending.done():
                staging.abort()
            else:  # a thread still writes to it: delete it once that write is done
                pending.add_done_callback(lambda _: staging.abort())
                if not isinstance(exc, asyncio.CancelledError):
                    await asyncio.wait([asyncio.wrap_future(pending)])  # so the file is gone when we raise
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # noqa: BLE001 - the sender's problem; ours is already raised
                    pass
            raise

    async def stage_uri(self, uri: str, max_bytes: int) -> StagedFile:
        bucket, key = self._location(uri)

        def download() -> StagedFile:
            # GET, not HEAD then GET: the size is in the answer's headers before any of the body
            # is read, and an error body tells "you may not read this" (AccessDenied: missing,
            # for the caller) from "these keys are wrong" (SignatureDoesNotMatch: unavailable).
            try:
                response = self._client.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _MISSING | _UNREADABLE:
                    raise ArtifactMissing(f"no object the registry can read at {uri[:200]}") from None
                raise
            body = response["Body"]
            try:
                if response["ContentLength"] > max_bytes:
                    raise ArtifactTooLarge(f"{response['ContentLength']} bytes, more than {max_bytes}")
                staging = self._new_staging()
                try:
                    for chunk in body.iter_chunks(READ_BYTES):
                        if staging.size + len(chunk) > max_bytes:
                            raise ArtifactTooLarge(f"more than {max_bytes} bytes")
                        staging.write(chunk)
                    return staging.finish()
                except BaseException:
                    staging.abort()
                    raise
            finally:
                body.close()  # early, it drops the connection: nothing more is read

        return await self._run_staging("download", download)

    async def stage_file(self, path: Path, max_bytes: int | None = None) -> StagedFile:
        """Move `path` into the staging directory (copy when it is on another file system), then
        hash it; the original is gone afterwards. ArtifactMissing when it is not a regular file."""

        def take() -> StagedFile:
            source = Path(path)
            if not source.is_file():
                raise ArtifactMissing("the downloaded artifact is not a file")
            size = source.stat().st_size
            if max_bytes is not None and size > max_bytes:
                source.unlink(missing_ok=True)
                raise ArtifactTooLarge(f"{size} bytes, more than {max_bytes}")
            handle, name = tempfile.mkstemp(prefix="artifact-", suffix=".part", dir=self._temp_dir)
            os.close(handle)
            target = Path(name)
            try:
                shutil.move(source, target)
                digest = hashlib.sha256()
                with open(target, "rb") as file:
                    while block := file.read(READ_BYTES):
                        digest.update(block)
                return StagedFile(target, digest.hexdigest(), target.stat().st_size)
            except BaseException:
                target.unlink(missing_ok=True)
                raise

        return await self._run_staging("staging", take)

    def discard(self, staged: StagedFile) -> None:
        Path(staged.path).unlink(missing_ok=True)

    # ----- objects -----

    async def put(self, staged: StagedFile, key: str, format: ArtifactFormat) -> str:
        full_key = self._full_key(key)
        extra = {"Metadata": {"sha256": staged.sha256, "format": format.name},
                 "ContentType": "application/octet-stream"}

        def upload() -> None:
            self._client.upload_file(str(staged.path), self.bucket, full_key, ExtraArgs=extra, Config=self._transfer)

        await self._run("upload", upload)
        return f"s3://{self.bucket}/{full_key}"

    async def stat(self, uri: str) -> StoredObject | None:
        bucket, key = self._location(uri)

        def head() -> StoredObject | None:
            try:
                found = self._client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
            metadata = found.get("Metadata") or {}
            return StoredObject(uri, found["ContentLength"], metadata.get("sha256", ""),
                                _format(metadata.get("format", "")))

        return await self._run("stat", head)

    async def copy(self, source_uri: str, key: str) -> str:
        bucket, source_key = self._location(source_uri)
        full_key = self._full_key(key)

        def copy() -> None:
            try:
                head = self._client.head_object(Bucket=bucket, Key=source_key)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    raise ArtifactMissing(f"no object at {source_uri[:200]}") from None
                raise
            # Said, not left to the transfer manager: single and multipart copies keep the same.
            extra = {"Metadata": head.get("Metadata") or {}, "MetadataDirective": "REPLACE",
                     "ContentType": head.get("ContentType") or "application/octet-stream"}
            self._client.copy({"Bucket": bucket, "Key": source_key}, self.bucket, full_key, ExtraArgs=extra,
                              Config=self._transfer)

        await self._run("copy", copy)
        return f"s3://{self.bucket}/{full_key}"

    async def delete(self, uri: str) -> None:
        """Idempotent. Only objects under the registry's root are deleted: a version whose
        source someone else stored (an MLflow version made outside the registry) keeps it."""
        if not self._is_own(uri):
            return
        _, key = self._location(uri)

        def delete() -> None:
            try:
                self._client.delete_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) not in _MISSING:
                    raise

        await self._run("delete", delete)

    async def read(self, uri: str) -> bytes:
        bucket, key = self._location(uri)

        def read() -> bytes:
            try:
                response = self._client.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    raise ArtifactMissing(f"no object at {uri[:200]}") from None
                raise
            body = response["Body"]
            try:
                return body.read()
            finally:
                body.close()

        return await self._run("read", read)

    async def prune_uploads(self, older_than: datetime | None = None) -> int:
        """Delete uploads last modified before `older_than` (default: now minus the upload
        retention); returns how many were deleted."""
        if older_than is None:
            older_than = datetime.now(timezone.utc) - self.upload_retention
        elif older_than.tzinfo is None:
            older_than = older_than.replace(tzinfo=timezone.utc)
        prefix = self._own_prefix(UPLOADS_DIR)

        def prune() -> int:
            deleted = 0
            stale: list[str] = []
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE})
            for page in pages:
                stale.extend(item["Key"] for item in page.get("Contents", ()) if item["LastModified"] < older_than)
                while len(stale) >= DELETE_BATCH:
                    deleted += self._delete_keys(stale[:DELETE_BATCH])
                    del stale[:DELETE_BATCH]
            if stale:
                deleted += self._delete_keys(stale)
            return deleted

        return await self._run("prune", prune)

    def _delete_keys(self, keys: list[str]) -> int:
        response = self._client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True})
        return len(keys) - len(response.get("Errors") or ())

    # ----- health and life -----

    async def ping(self) -> bool:
        """Whether the bucket answers, within about PING_TIMEOUT_SECONDS; never raises."""
        if self._closed:
            return False
        try:
            future = self._ping_executor.submit(self._ping_client.head_bucket, Bucket=self.bucket)
            await asyncio.wait_for(asyncio.wrap_future(future), timeout=2 * self._ping_timeout + 1)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not now"
            return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for executor in (self._executor, self._ping_executor):
            executor.shutdown(wait=False, cancel_futures=True)
        for client in (self._client, self._ping_client):
            client.close()


def _format(name: str) -> ArtifactFormat:
    try:
        return ArtifactFormat[name]
    except KeyError:
        return ArtifactFormat.UNSPECIFIED


def _discard_result(future: concurrent.futures.Future) -> None:
    if not future.cancelled() and future.exception() is None:
        Path(future.result().path).unlink(missing_ok=True)
