"""What the registry accepts as an artifact, in plain Python: its format, a package that opens
to the end, its checksum, where it is stored and which URIs a caller may point at.

`check_package` reads a local binary file (the staged copy) and nothing else. It reads the
whole archive, so a truncated upload or a flipped bit is refused before anything is stored,
and it bounds its own work: the zip central directory and member count are checked from the
end record before the directory is read, the total size the members expand to is bounded
(`PackageLimits`), and data is decompressed in 1 MiB pieces. Member names must stay inside
the directory they are extracted to (TorchServe's `ZipUtils.unzip` writes `new File(dest,
name)` without checking).

A TorchServe model archive (.mar, the archiver's default format) is a zip read front to
back by Java's `ZipInputStream` (TorchServe's frontend), so the zip must be the portable
subset that reader handles: the first member at offset 0, members stored or deflated, none
encrypted, no stored member followed by a data descriptor. Its `MAR-INF/MANIFEST.json`
(written by torch-model-archiver) must be a JSON object whose "model" object has the string
fields "modelName" and "modelVersion": TorchServe's `ModelArchive.validate()` refuses an
archive without them. A manifest as the archiver writes it:

    {"createdOn": "...", "runtime": "python",
     "model": {"modelName": "m", "serializedFile": "m.pt", "handler": "h.py", "modelVersion": "1.0"},
     "archiverVersion": "0.12.0"}

Error messages quote file and member names through `errors.quoted` only.
"""

from __future__ import annotations

import gzip
import json
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from ....errors import InvalidArgument, quoted
from .errors import ErrorReason
from .model import ArtifactFormat

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

MAX_URI_LENGTH = 1024  # an artifact_uri
MAX_FILE_NAME_LENGTH = 128  # a file name as kept in an object key (longer ones keep their end)
MAX_MODEL_SEGMENT_LENGTH = 256  # a registered model's name, as a key segment
READ_CHUNK = 1 * MIB  # what check_package decompresses at a time

MANIFEST_NAME = "MAR-INF/MANIFEST.json"
UPLOADS_DIR = "uploads"
MODELS_DIR = "models"

_SUFFIXES = (
    (".mar", ArtifactFormat.TORCHSERVE_MAR),
    (".zip", ArtifactFormat.DIRECTORY_ZIP),
    (".tar.gz", ArtifactFormat.DIRECTORY_TAR_GZ),
    (".tgz", ArtifactFormat.DIRECTORY_TAR_GZ),
)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_UNIQUE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class PackageLimits:
    """How much work checking one package may take.

    Members may expand to `max_uncompressed(size)` bytes in total: `max_ratio` times the
    archive's size, but never more than `max_expansion_bytes` beyond it (weights barely
    compress, so a multi-gigabyte archive passes; a small archive of zeros does not), and
    always at least `min_allowance_bytes` (a small archive of text compresses well).
    """

    max_ratio: int = 20
    max_expansion_bytes: int = 1 * GIB
    min_allowance_bytes: int = 64 * MIB
    max_members: int = 100_000
    max_central_directory_bytes: int = 64 * MIB
    max_manifest_bytes: int = 1 * MIB

    def max_uncompressed(self, size_bytes: int) -> int:
        scaled = min(self.max_ratio * size_bytes, size_bytes + self.max_expansion_bytes)
        return max(self.min_allowance_bytes, scaled)


DEFAULT_LIMITS = PackageLimits()


class ArtifactLocation(NamedTuple):
    """A parsed artifact_uri: ("s3", bucket, key) or ("runs", run_id, path)."""

    scheme: str
    container: str  # the bucket, or the MLflow run id
    path: str  # the object key, or the path inside the run's artifacts


# ----- format and checksum -----

def infer_format(file_name: str, declared: ArtifactFormat) -> ArtifactFormat:
    """The declared format, else the one the file name's suffix names (any case)."""
    if declared is not ArtifactFormat.UNSPECIFIED:
        return declared
    lowered = file_name.lower()
    for suffix, fmt in _SUFFIXES:
        if lowered.endswith(suffix):
            return fmt
    raise InvalidArgument("artifact_format", f"is unset and the file name {quoted(file_name)} does not end in "
                          ".mar, .zip, .tar.gz or .tgz", reason=ErrorReason.ARTIFACT_INVALID)


def check_checksum(expected: str, actual: str, field: str) -> None:
    """`expected` (hex SHA-256, any case) against the `actual` digest of the bytes received.
    An empty `expected` is malformed too: callers skip the check when none was given."""
    if not _SHA256.fullmatch(expected):
        raise InvalidArgument(field, "must be a SHA-256 as 64 hexadecimal digits")
    if expected.lower() != actual.lower():
        raise InvalidArgument(field, f"the artifact's SHA-256 is {actual.lower()}, not {expected.lower()}",
                              reason=ErrorReason.CHECKSUM_MISMATCH)


# ----- object keys -----

def safe_file_name(file_name: str, default: str = "artifact") -> str:
    """The last path segment of `file_name`, with every character but [A-Za-z0-9._-] made
    "_", at most MAX_FILE_NAME_LENGTH characters (its end, so the suffix stays); `default`
    when nothing usable is left."""
    base = re.split(r"[/\\]", file_name)[-1]
    safe = _UNSAFE_KEY_CHARS.sub("_", base)[-MAX_FILE_NAME_LENGTH:]
    return default if safe.strip(".") == "" else safe


def artifact_key(model_name: str, file_name: str, unique: str) -> str:
    """Where a version's artifact is kept, relative to the registry's prefix:
    models/<model>/<unique>/<unique>-<file>. `unique` (the caller's, e.g. a UUID's hex) keeps keys
    apart, and the file names too: a model server that fetches the artifact by URL (TorchServe)
    stores it under the URL's last segment, so two versions' `model.mar` must not meet there."""
    model = _UNSAFE_KEY_CHARS.sub("_", model_name)[:MAX_MODEL_SEGMENT_LENGTH]
    if model.strip(".") == "":  # "", "." and ".." are path syntax, not names
        model = "_" * max(1, len(model))
    unique = _check_unique(unique)
    name = safe_file_name(file_name)[-(MAX_FILE_NAME_LENGTH - len(unique) - 1):]  # a file name, still
    return f"{MODELS_DIR}/{model}/{unique}/{unique}-{name}"


def upload_key(file_name: str, unique: str) -> str:
    """Where an UploadArtifact is kept until a version takes it: uploads/<unique>/<file>."""
    return f"{UPLOADS_DIR}/{_check_unique(unique)}/{safe_file_name(file_name)}"


def _check_unique(unique: str) -> str:
    if not _UNIQUE.fullmatch(unique):
        raise ValueError("unique must be 1 to 64 characters of [A-Za-z0-9_-]")
    return unique


# ----- URIs -----

def parse_artifact_uri(uri: str, field: str = "artifact_uri") -> ArtifactLocation:
    """s3://<bucket>/<key> or runs:/<run_id>/<path>; anything else (other schemes, relative
    paths, an empty key, "." or ".." segments, control characters) is INVALID_FIELD."""
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_URI_LENGTH} characters, got {len(uri)}")
    if _CONTROL_CHARS.search(uri):
        raise InvalidArgument(field, "must not contain control characters")
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise InvalidArgument(field, f"{quoted(uri)} does not name a bucket: s3://<bucket>/<key>")
        _check_path(key, uri, field, "key")
        return ArtifactLocation("s3", bucket, key)
    if uri.startswith("runs:/") and not uri.startswith("runs://"):
        run_id, _, path = uri[len("runs:/"):].partition("/")
        if not _RUN_ID.fullmatch(run_id):
            raise InvalidArgument(field, f"{quoted(uri)} does not name a run: runs:/<run_id>/<path>")
        _check_path(path, uri, field, "path")
        return ArtifactLocation("runs", run_id, path)
    raise InvalidArgument(field, f"{quoted(uri)} is neither s3://<bucket>/<key> nor runs:/<run_id>/<path>")


def _check_path(path: str, uri: str, field: str, what: str) -> None:
    if not path:
        raise InvalidArgument(field, f"{quoted(uri)} has no {what}")
    if any(segment in ("", ".", "..") for segment in path.split("/")):
        raise InvalidArgument(field, f"{quoted(uri)}: the {what} must not have empty, '.' or '..' segments")


# ----- packages -----

class _Invalid(Exception):
    """A reason to refuse the package, turned into InvalidArgument at the top."""


def check_package(fileobj: BinaryIO, fmt: ArtifactFormat, size_bytes: int, field: str = "artifact", *,
                  limits: PackageLimits = DEFAULT_LIMITS) -> None:
    """Refuse (InvalidArgument with reason ARTIFACT_INVALID) an empty, truncated, corrupt or
    unsafe package. `fileobj` is seekable and read from its start; `size_bytes` is its size."""
    if fmt is ArtifactFormat.UNSPECIFIED:
        raise ValueError("infer the format before checking the package")
    if size_bytes <= 0:
        raise InvalidArgument(field, "the artifact is empty", reason=ErrorReason.ARTIFACT_INVALID)
    fileobj.seek(0)
    try:
        if fmt is ArtifactFormat.DIRECTORY_TAR_GZ:
            _check_tar_gz(fileobj, size_bytes, limits)
        else:
            _check_zip(fileobj, size_bytes, limits, mar=fmt is ArtifactFormat.TORCHSERVE_MAR)
    except _Invalid as exc:
        raise InvalidArgument(field, str(exc), reason=ErrorReason.ARTIFACT_INVALID) from None
    finally:
        fileobj.seek(0)


# Everything the standard library's archive readers raise on malformed input.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, OSError, ValueError,
                zlib.error, struct.error, UnicodeDecodeError, OverflowError, NotImplementedError, RuntimeError,
                KeyError, IndexError)


def _unsafe_name(name: str) -> bool:
    """Absolute (/x, \\x, C:x) or climbing out (a '..' segment, either separator)."""
    if not name or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[/\\]", name)


# --- zip (.mar, .zip) ---

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


def _check_zip(fileobj: BinaryIO, size_bytes: int, limits: PackageLimits, *, mar: bool) -> None:
    _check_zip_end(fileobj, limits)
    try:
        with zipfile.ZipFile(fileobj) as archive:
            infos = archive.infolist()
            _check_zip_members(infos, size_bytes, limits, mar=mar)
            manifest = _read_zip_members(archive, infos, limits.max_uncompressed(size_bytes),
                                         MANIFEST_NAME if mar else None)
    except _Invalid:
        raise
    except _READ_ERRORS:
        raise _Invalid("is not a valid zip archive (truncated or corrupt)") from None
    if mar:
        _check_manifest(manifest, limits)


def _check_zip_end(fileobj: BinaryIO, limits: PackageLimits) -> None:
    """The end record must close the file (nothing cut off or appended after it) and describe
    a central directory that ends where the record starts and fits the limits, all before
    zipfile reads that directory into memory. That also means no data before the first
    member, which a front-to-back reader (TorchServe's) would not skip."""
    end = fileobj.seek(0, 2)
    tail_start = max(0, end - _EOCD.size - 0xFFFF)
    fileobj.seek(tail_start)
    tail = fileobj.read()
    # The last signature with room for a record after it, as zipfile finds it; it must be one
    # whose comment ends the file (else zipfile could be reading another record than this one).
    at = tail.rfind(b"PK\x05\x06", 0, max(0, len(tail) - _EOCD.size + 4))
    if at < 0 or at + _EOCD.size + _EOCD.unpack_from(tail, at)[7] != len(tail):
        raise _Invalid("is not a zip archive, or is truncated (no end of central directory at its end)")
    record = _EOCD.unpack_from(tail, at)
    _, _, _, _, count, cd_size, cd_offset, _ = record
    cd_end = tail_start + at
    locator_at = at - _ZIP64_LOCATOR.size
    if locator_at >= 0 and tail[locator_at:locator_at + 4] == b"PK\x06\x07":  # zip64: the values are there
        _, _, zip64_offset, _ = _ZIP64_LOCATOR.unpack_from(tail, locator_at)
        if zip64_offset + _ZIP64_EOCD.size > cd_end - _ZIP64_LOCATOR.size:
            raise _Invalid("is not a valid zip archive (bad zip64 locator)")
        fileobj.seek(zip64_offset)
        raw = fileobj.read(_ZIP64_EOCD.size)
        if len(raw) != _ZIP64_EOCD.size or raw[:4] != b"PK\x06\x06":
            raise _Invalid("is not a valid zip archive (bad zip64 end record)")
        *_, count, cd_size, cd_offset = _ZIP64_EOCD.unpack(raw)
        cd_end = zip64_offset
    elif count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        raise _Invalid("is not a valid zip archive (zip64 end record missing)")
    if count == 0:
        raise _Invalid("holds no files")
    if count > limits.max_members:
        raise _Invalid(f"holds {count} members, more than {limits.max_members}")
    if cd_size > limits.max_central_directory_bytes:
        raise _Invalid(f"has a central directory of {cd_size} bytes, more than {limits.max_central_directory_bytes}")
    if cd_offset + cd_size != cd_end:
        raise _Invalid("is not a valid zip archive (data before the first member, or a corrupt central directory)")


def _check_zip_members(infos: list[zipfile.ZipInfo], size_bytes: int, limits: PackageLimits, *, mar: bool) -> None:
    if not infos or all(info.is_dir() for info in infos):
        raise _Invalid("holds no files")
    if min(info.header_offset for info in infos) != 0:
        raise _Invalid("is not a valid zip archive (data before the first member)")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if _unsafe_name(name):
            raise _Invalid(f"member {quoted(name)} is an absolute path or leaves the archive's directory")
        if name in seen:
            raise _Invalid(f"member {quoted(name)} appears twice")
        seen.add(name)
        kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0  # 3: Unix
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise _Invalid(f"member {quoted(name)} is a link or special file")
        if info.flag_bits & 0x1:
            raise _Invalid(f"member {quoted(name)} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Invalid(f"member {quoted(name)} uses compression method {info.compress_type} "
                           "(stored or deflated only)")
        if mar and info.compress_type == zipfile.ZIP_STORED and info.flag_bits & 0x8:
            raise _Invalid(f"member {quoted(name)} is stored with a data descriptor, which TorchServe cannot read")
        if mar and name == MANIFEST_NAME and info.file_size > limits.max_manifest_bytes:
            raise _Invalid(f"{MANIFEST_NAME} is larger than {limits.max_manifest_bytes} bytes")
        total += info.file_size
    allowed = limits.max_uncompressed(size_bytes)
    if total > allowed:
        raise _Invalid(f"expands to {total} bytes, more than the {allowed} allowed for its size")


def _read_zip_members(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], allowed: int,
                      keep: str | None) -> bytes | None:
    """Decompress every member to its end (zipfile checks each CRC-32 there) counting bytes;
    the member named `keep` is returned."""
    kept = None
    total = 0
    for info in infos:
        if info.is_dir():
            continue
        parts = [] if info.filename == keep else None
        with archive.open(info) as member:
            while chunk := member.read(READ_CHUNK):
                total += len(chunk)
                if total > allowed:
                    raise _Invalid(f"expands to more than the {allowed} bytes allowed for its size")
                if parts is not None:
                    parts.append(chunk)
        if parts is not None:
            kept = b"".join(parts)
    return kept


def _check_manifest(manifest: bytes | None, limits: PackageLimits) -> None:
    if manifest is None:
        raise _Invalid(f"is not a TorchServe model archive: {MANIFEST_NAME} is missing")
    if len(manifest) > limits.max_manifest_bytes:
        raise _Invalid(f"{MANIFEST_NAME} is larger than {limits.max_manifest_bytes} bytes")
    try:
        document = json.loads(manifest.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Invalid(f"{MANIFEST_NAME} is not valid JSON") from None
    model = document.get("model") if isinstance(document, dict) else None
    if not isinstance(model, dict):
        raise _Invalid(f"{MANIFEST_NAME} has no \"model\" object")
    for key in ("modelName", "modelVersion"):
        if not isinstance(model.get(key), str) or not model[key]:
            raise _Invalid(f"{MANIFEST_NAME}: model.{key} must be a non-empty string")


# --- tar.gz ---

class _CountingReader:
    """A read-only view of the decompressed stream that stops at `allowed` bytes."""

    def __init__(self, source: gzip.GzipFile, allowed: int):
        self._source = source
        self._allowed = allowed
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(READ_CHUNK if size is None or size < 0 else min(size, READ_CHUNK))
        self.count += len(data)
        if self.count > self._allowed:
            raise _Invalid(f"expands to more than the {self._allowed} bytes allowed for its size")
        return data


def _check_tar_gz(fileobj: BinaryIO, size_bytes: int, limits: PackageLimits) -> None:
    allowed = limits.max_uncompressed(size_bytes)
    try:
        with gzip.GzipFile(fileobj=fileobj, mode="rb") as unzipped:
            stream = _CountingReader(unzipped, allowed)
            files = 0
            with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
                for count, member in enumerate(archive, start=1):
                    if count > limits.max_members:
                        raise _Invalid(f"holds more than {limits.max_members} members")
                    _check_tar_member(member)
                    if member.isreg():
                        files += 1
                        _read_tar_member(archive, member)
            while stream.read(READ_CHUNK):  # to the gzip trailer: its CRC-32 and length are checked there
                pass
    except _Invalid:
        raise
    except _READ_ERRORS:
        raise _Invalid("is not a valid tar.gz archive (truncated or corrupt)") from None
    if files == 0:
        raise _Invalid("holds no files")


def _check_tar_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if _unsafe_name(name):
        raise _Invalid(f"member {quoted(name)} is an absolute path or leaves the archive's directory")
    if member.issym() or member.islnk():
        if _unsafe_name(member.linkname):
            raise _Invalid(f"member {quoted(name)} links outside the archive's directory")
    elif not (member.isreg() or member.isdir()):
        raise _Invalid(f"member {quoted(name)} is a device, pipe or other special file")


def _read_tar_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    data = archive.extractfile(member)
    if data is None:
        return
    remaining = member.size
    while remaining > 0:
        chunk = data.read(min(READ_CHUNK, remaining))
        if not chunk:
            raise _Invalid("is not a valid tar.gz archive (a member is truncated)")
        remaining -= len(chunk)
