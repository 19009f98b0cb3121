"""domain/artifacts.py: format inference, package checks, checksums, object keys and artifact
URIs. Archives are built in memory; nothing touches the disk or the network."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
import warnings
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_serving_server.errors import CommonReason, InvalidArgument
from ml_serving_server.services.registry.domain import artifacts
from ml_serving_server.services.registry.domain.artifacts import (
    PackageLimits,
    artifact_key,
    check_checksum,
    check_package,
    infer_format,
    parse_artifact_uri,
    safe_file_name,
    upload_key,
)
from ml_serving_server.services.registry.domain.errors import ErrorReason
from ml_serving_server.services.registry.domain.model import ArtifactFormat

MAR = ArtifactFormat.TORCHSERVE_MAR
ZIP = ArtifactFormat.DIRECTORY_ZIP
TGZ = ArtifactFormat.DIRECTORY_TAR_GZ

# What torch-model-archiver 0.12 writes (createdOn and archiverVersion vary).
MANIFEST = {
    "createdOn": "29/11/2026 10:00:00",
    "runtime": "python",
    "model": {"modelName": "resnet", "serializedFile": "resnet.pt", "handler": "image_classifier",
              "modelVersion": "1.0"},
    "archiverVersion": "0.12.0",
}
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----- building archives -----

def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def mar_of(manifest: object = MANIFEST, extra: dict[str, bytes] | None = None, **kwargs) -> bytes:
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    return zip_of({"MAR-INF/MANIFEST.json": raw, "resnet.pt": os.urandom(4096), "handler.py": b"x = 1\n" * 100,
                   **(extra or {})}, **kwargs)


def tar_gz_of(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


GOOD_TGZ_MEMBERS = [tar_entry("model", tarfile.DIRTYPE), ("model/weights.bin", os.urandom(8192)),
                    ("model/config.json", b'{"a": 1}'), tar_entry("model/latest", tarfile.SYMTYPE, "weights.bin")]


def check(data: bytes, fmt: ArtifactFormat, field: str = "artifact", **kwargs) -> None:
    check_package(io.BytesIO(data), fmt, len(data), field, **kwargs)


def rejected(data: bytes, fmt: ArtifactFormat, field: str = "artifact", **kwargs) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        check(data, fmt, field, **kwargs)
    error = caught.value
    assert error.reason is ErrorReason.ARTIFACT_INVALID
    assert error.field == field
    assert len(error.message) < 300, "messages stay short whatever the archive holds"
    return error


# ----- format -----

@pytest.mark.parametrize(("name", "expected"), [
    ("model.mar", MAR), ("MODEL.MAR", MAR), ("dir.zip", ZIP), ("dir.tar.gz", TGZ), ("dir.TGZ", TGZ),
    ("a.b.c.tar.gz", TGZ),
])
def test_format_from_the_suffix(name, expected):
    assert infer_format(name, ArtifactFormat.UNSPECIFIED) is expected


def test_a_declared_format_wins_over_the_suffix():
    assert infer_format("model.mar", TGZ) is TGZ
    assert infer_format("no-suffix", ZIP) is ZIP


@pytest.mark.parametrize("name", ["", "model", "model.tar", "model.gz", "model.mar.txt", "x" * 5000])
def test_no_format_and_no_known_suffix_is_invalid(name):
    with pytest.raises(InvalidArgument) as caught:
        infer_format(name, ArtifactFormat.UNSPECIFIED)
    assert caught.value.field == "artifact_format"
    assert caught.value.reason is ErrorReason.ARTIFACT_INVALID
    assert len(caught.value.message) < 200


# ----- good packages -----

def test_good_packages_pass():
    check(mar_of(), MAR)
    check(mar_of(compression=zipfile.ZIP_STORED), MAR)
    check(zip_of({"model/": b"", "model/weights.bin": os.urandom(10_000), "model/config.json": b"{}"}), ZIP)
    check(tar_gz_of(GOOD_TGZ_MEMBERS), TGZ)


def test_a_mar_is_also_a_good_zip_and_the_file_object_is_rewound():
    data = mar_of()
    file = io.BytesIO(data)
    check_package(file, ZIP, len(data))
    assert file.tell() == 0


def test_an_archive_comment_is_allowed():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", b"a")
        archive.comment = b"made by a tool"
    check(buffer.getvalue(), ZIP)


def test_an_end_record_inside_the_comment_is_refused():
    """zipfile would take the last signature it sees, here one in the comment, for the end record."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", b"a")
        archive.comment = b"PK\x05\x06" + b"\xff" * 18
    assert "no end of central directory" in rejected(buffer.getvalue(), ZIP).message


def test_zip64_end_records_are_understood(monkeypatch):
    """A writer adds zip64 end records past 65535 members or 2 GiB (forced here with three
    members); with them, the plain end record may hold the real values or 0xFFFF..."""
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)
    data = zip_of({"a": b"a", "b": b"b", "c": b"c"})
    monkeypatch.undo()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data
    check(data, ZIP)
    assert "3 members" in rejected(data, ZIP, limits=PackageLimits(max_members=2)).message
    end = data.rindex(b"PK\x05\x06")
    sentinels = data[:end + 8] + b"\xff\xff\xff\xff" + b"\xff" * 8 + data[end + 20:]
    check(sentinels, ZIP)
    assert "3 members" in rejected(sentinels, ZIP, limits=PackageLimits(max_members=2)).message
    without_zip64 = data[:data.index(b"PK\x06\x06")] + sentinels[end:]
    assert "zip64" in rejected(without_zip64, ZIP).message


def test_a_well_compressed_small_archive_is_no_bomb():
    """Text compresses far better than 20x; a small archive may still expand to min_allowance_bytes."""
    check(zip_of({"vocab.txt": b"token\n" * 2_000_000}), ZIP)


# ----- empty -----

@pytest.mark.parametrize("fmt", [MAR, ZIP, TGZ])
def test_an_empty_artifact_is_invalid(fmt):
    assert "empty" in rejected(b"", fmt).message


def test_archives_without_files_are_invalid():
    assert "no files" in rejected(zip_of({}), ZIP).message
    assert "no files" in rejected(zip_of({"dir/": b""}), ZIP).message
    assert "no files" in rejected(tar_gz_of([tar_entry("dir", tarfile.DIRTYPE)]), TGZ).message
    assert "not a valid tar.gz" in rejected(gzip.compress(b""), TGZ).message


def test_an_unspecified_format_is_a_programming_error():
    with pytest.raises(ValueError):
        check(mar_of(), ArtifactFormat.UNSPECIFIED)


# ----- truncated and corrupt -----

@pytest.mark.parametrize("fmt", [MAR, ZIP, TGZ])
@pytest.mark.parametrize("cut", [1, 2, 8, 21, 22, 23, 100, 1000, 4000, -10])
def test_a_truncated_package_is_invalid(fmt, cut):
    data = tar_gz_of(GOOD_TGZ_MEMBERS) if fmt is TGZ else mar_of()
    kept = data[:cut] if cut < 0 else data[:-cut]
    assert kept
    rejected(kept, fmt)


@pytest.mark.parametrize("fmt", [MAR, TGZ])
def test_every_truncation_of_a_small_package_is_invalid(fmt):
    data = (tar_gz_of([("a", b"hello " * 50)]) if fmt is TGZ
            else mar_of(extra={"resnet.pt": b"w" * 300, "handler.py": b"h"}))
    for length in range(1, len(data)):
        rejected(data[:length], fmt)


def test_a_flipped_bit_in_stored_data_fails_the_crc():
    data = bytearray(zip_of({"weights.bin": b"\x00" * 1000, "b": b"b"}, zipfile.ZIP_STORED))
    at = data.index(b"\x00" * 1000) + 500
    data[at] ^= 0x01
    assert "not a valid zip" in rejected(bytes(data), ZIP).message


def test_a_flipped_bit_in_deflated_data_is_invalid():
    data = bytearray(zip_of({"weights.bin": os.urandom(20_000)}))
    data[10_000] ^= 0x40
    rejected(bytes(data), ZIP)


def test_a_flipped_bit_in_a_tar_gz_is_invalid():
    data = bytearray(tar_gz_of([("weights.bin", os.urandom(20_000))]))
    data[len(data) // 2] ^= 0x40
    rejected(bytes(data), TGZ)


def test_a_tar_gz_whose_gzip_trailer_lies_is_invalid():
    data = bytearray(tar_gz_of([("weights.bin", b"w" * 1000)]))
    data[-8] ^= 0xFF  # the CRC-32 of the uncompressed data
    rejected(bytes(data), TGZ)


@pytest.mark.parametrize("fmt", [MAR, ZIP, TGZ])
def test_something_else_is_invalid(fmt):
    rejected(b"definitely not an archive", fmt)
    rejected(os.urandom(10_000), fmt)


def test_a_plain_tar_is_not_a_tar_gz():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    rejected(buffer.getvalue(), TGZ)


def test_data_before_or_after_the_zip_is_invalid():
    data = zip_of({"a.txt": b"a"})
    rejected(b"#!/bin/sh\nexit 0\n" + data, ZIP)  # what a self-extracting archive looks like
    rejected(data + b"trailing", ZIP)


def test_a_zip_whose_last_member_is_a_zip_is_not_mistaken_for_it_when_cut():
    """Cut just before the outer central directory, the file ends with the inner zip's end
    record; that zip starts mid-file, so it is refused rather than taken for the upload."""
    inner = zip_of({"inner.txt": b"inner"}, zipfile.ZIP_STORED)
    outer = zip_of({"inner.zip": inner}, zipfile.ZIP_STORED)
    cut = outer[:outer.index(inner) + len(inner)]
    rejected(cut, ZIP)


# ----- unsafe members -----

@pytest.mark.parametrize("name", ["../evil.py", "/etc/cron.d/x", "a/../../b", "model/..", "C:/windows/x",
                                  "c:x", "a\\..\\..\\b", "\\server\\share"])
def test_zip_members_leaving_the_directory_are_invalid(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = zip_of({"ok.txt": b"ok", name: b"evil"})
    assert "leaves the archive" in rejected(data, ZIP).message
    assert "leaves the archive" in rejected(mar_of(extra={name: b"evil"}), MAR).message


def test_dots_inside_names_are_fine():
    check(zip_of({"model..v2/weights..bin": b"w", "...": b"x", ".hidden": b"h"}), ZIP)


@pytest.mark.parametrize("member", [
    ("../evil.py", b"x"),
    ("/etc/passwd", b"x"),
    ("model/../../x", b"x"),
    tar_entry("model/link", tarfile.SYMTYPE, "/etc/passwd"),
    tar_entry("model/link", tarfile.SYMTYPE, "../../etc/passwd"),
    tar_entry("model/hard", tarfile.LNKTYPE, "../outside"),
])
def test_tar_members_leaving_the_directory_are_invalid(member):
    error = rejected(tar_gz_of([("model/ok.bin", b"ok"), member]), TGZ)
    assert "leaves the archive" in error.message or "links outside" in error.message


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_devices_and_pipes_are_invalid(kind):
    assert "special file" in rejected(tar_gz_of([("ok", b"ok"), tar_entry("dev", kind)]), TGZ).message


def test_zip_symlinks_are_invalid():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.txt", b"ok")
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    assert "link or special file" in rejected(buffer.getvalue(), ZIP).message


def test_a_zip_member_twice_is_invalid():
    """Readers disagree on which copy wins (zipfile the last, a front-to-back reader the first)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(MANIFEST))
        archive.writestr("MAR-INF/MANIFEST.json", b"{}")
    assert "twice" in rejected(buffer.getvalue(), MAR).message


def test_encrypted_members_are_invalid():
    data = bytearray(zip_of({"secret.bin": b"s" * 100}, zipfile.ZIP_STORED))
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        at = data.index(signature)
        data[at + flag_at] |= 0x01
    assert "encrypted" in rejected(bytes(data), ZIP).message


def test_compression_other_than_stored_or_deflated_is_invalid():
    data = zip_of({"a.bin": b"a" * 1000}, zipfile.ZIP_BZIP2)
    assert "compression method 12" in rejected(data, ZIP).message


class _Unseekable(io.RawIOBase):
    """A write-only stream, so zipfile writes every member with a data descriptor."""

    def __init__(self):
        self.buffer = io.BytesIO()

    def writable(self):
        return True

    def write(self, data):
        return self.buffer.write(data)


def test_a_mar_with_stored_members_and_data_descriptors_is_invalid_but_a_zip_may_have_them():
    sink = _Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(MANIFEST))
        archive.writestr("resnet.pt", b"w" * 100)
    data = sink.buffer.getvalue()
    assert "data descriptor" in rejected(data, MAR).message
    check(data, ZIP)


def test_long_member_names_are_quoted_short():
    error = rejected(zip_of({"../" + "x" * 5000: b"x"}), ZIP)
    assert "…" in error.message


# ----- bombs and limits -----

def test_a_zip_bomb_is_refused_before_decompressing():
    data = zip_of({"zeros.bin": b"\0" * (100 * 1024 * 1024)})  # 100 MiB of zeros: ~100 KiB
    assert len(data) < 200_000
    assert "expands to 104857600 bytes" in rejected(data, ZIP).message


def test_a_tar_gz_bomb_is_stopped_at_the_limit():
    data = gzip.compress(b"\0" * (80 * 1024 * 1024), compresslevel=1)
    assert "expands to more than" in rejected(data, TGZ).message


def test_the_uncompressed_allowance():
    limits = PackageLimits()
    assert limits.max_uncompressed(1) == limits.min_allowance_bytes  # small: the floor
    assert limits.max_uncompressed(10 * 2**20) == 200 * 2**20  # middle: 20x
    assert limits.max_uncompressed(4 * 2**30) == 5 * 2**30  # large: 1 GiB beyond the size


def test_custom_limits_apply():
    tight = PackageLimits(max_ratio=2, min_allowance_bytes=0, max_members=3, max_manifest_bytes=50)
    rejected(zip_of({"text": b"a" * 10_000}), ZIP, limits=tight)
    assert "members" in rejected(zip_of({f"f{i}": b"x" for i in range(4)}), ZIP, limits=tight).message
    assert "more than 3 members" in rejected(tar_gz_of([(f"f{i}", b"x") for i in range(4)]), TGZ,
                                             limits=PackageLimits(max_members=3)).message
    assert "larger than 50 bytes" in rejected(mar_of(), MAR, limits=PackageLimits(max_manifest_bytes=50)).message


# ----- the TorchServe manifest -----

@pytest.mark.parametrize(("manifest", "words"), [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    ([1, 2], "no \"model\" object"),
    ({"runtime": "python"}, "no \"model\" object"),
    ({"model": "resnet"}, "no \"model\" object"),
    ({"model": {"modelVersion": "1.0"}}, "model.modelName"),
    ({"model": {"modelName": "", "modelVersion": "1.0"}}, "model.modelName"),
    ({"model": {"modelName": 7, "modelVersion": "1.0"}}, "model.modelName"),
    ({"model": {"modelName": "m"}}, "model.modelVersion"),
])
def test_a_bad_manifest_is_invalid(manifest, words):
    assert words in rejected(mar_of(manifest), MAR).message


def test_a_mar_needs_a_manifest_but_a_zip_does_not():
    data = zip_of({"resnet.pt": b"w"})
    assert "MANIFEST.json is missing" in rejected(data, MAR).message
    check(data, ZIP)


def test_the_field_is_the_callers():
    assert rejected(b"", MAR, field="chunk").field == "chunk"


# ----- truncation and corruption, generated -----

names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_-."), min_size=1, max_size=20).filter(
    lambda n: n.strip(".") != "")
member_lists = st.dictionaries(names, st.binary(max_size=2000), min_size=1, max_size=6)


@settings(max_examples=60, **SETTINGS)
@given(members=member_lists, compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
       data=st.data())
def test_any_truncation_of_a_zip_is_invalid(members, compression, data):
    archive = zip_of(members, compression)
    check(archive, ZIP)
    length = data.draw(st.integers(0, len(archive) - 1), label="length")
    cut = archive[:length]
    try:
        check(cut, ZIP)
    except InvalidArgument as error:
        assert error.reason is ErrorReason.ARTIFACT_INVALID
    else:  # only a file that still ends in an end record could pass
        assert b"PK\x05\x06" in cut


@settings(max_examples=60, **SETTINGS)
@given(members=st.dictionaries(names, st.binary(max_size=2000), min_size=1, max_size=6), data=st.data())
def test_any_truncation_of_a_tar_gz_is_invalid(members, data):
    archive = tar_gz_of(list(members.items()))
    check(archive, TGZ)
    length = data.draw(st.integers(0, len(archive) - 1), label="length")
    rejected(archive[:length], TGZ)


@settings(max_examples=150, **SETTINGS)
@given(members=member_lists, fmt=st.sampled_from([MAR, ZIP, TGZ]), data=st.data())
def test_corrupted_archives_raise_nothing_but_invalid_argument(members, fmt, data):
    if fmt is TGZ:
        archive = bytearray(tar_gz_of(list(members.items())))
    elif fmt is MAR:
        archive = bytearray(mar_of(extra=members))
    else:
        archive = bytearray(zip_of(members, data.draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))))
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        at = data.draw(st.integers(0, len(archive) - 1), label="at")
        archive[at] = data.draw(st.integers(0, 255), label="byte")
    try:
        check(bytes(archive), fmt)
    except InvalidArgument as error:
        assert error.reason is ErrorReason.ARTIFACT_INVALID


@settings(max_examples=100, **SETTINGS)
@given(blob=st.binary(min_size=1, max_size=512), fmt=st.sampled_from([MAR, ZIP, TGZ]))
def test_arbitrary_bytes_raise_nothing_but_invalid_argument(blob, fmt):
    try:
        check(blob, fmt)
    except InvalidArgument as error:
        assert error.reason is ErrorReason.ARTIFACT_INVALID


@settings(max_examples=100, **SETTINGS)
@given(prefix=st.binary(max_size=64), fmt=st.sampled_from([MAR, ZIP]))
def test_a_forged_end_record_raises_nothing_but_invalid_argument(prefix, fmt):
    """End records whose sizes and offsets point anywhere (zip64 ones too)."""
    record = prefix + b"PK\x06\x06" + prefix[:52].ljust(52, b"\xff") + b"PK\x06\x07" + prefix[:16].ljust(16, b"\0") \
        + b"PK\x05\x06" + prefix[:18].ljust(18, b"\xff")
    try:
        check(record, fmt)
    except InvalidArgument as error:
        assert error.reason is ErrorReason.ARTIFACT_INVALID


# ----- checksums -----

SHA = "ab" * 32


def test_matching_checksums_pass_in_any_case():
    check_checksum(SHA, SHA, "artifact_sha256")
    check_checksum(SHA.upper(), SHA, "artifact_sha256")


def test_a_different_checksum_is_a_mismatch():
    with pytest.raises(InvalidArgument) as caught:
        check_checksum("cd" * 32, SHA, "header.sha256")
    assert caught.value.reason is ErrorReason.CHECKSUM_MISMATCH
    assert caught.value.field == "header.sha256"
    assert SHA in caught.value.message


@pytest.mark.parametrize("expected", ["", "ab" * 31, "ab" * 33, "zz" * 32, " " + "ab" * 32, "x" * 10_000])
def test_a_malformed_checksum_is_an_invalid_field(expected):
    with pytest.raises(InvalidArgument) as caught:
        check_checksum(expected, SHA, "artifact_sha256")
    assert caught.value.reason is CommonReason.INVALID_FIELD
    assert caught.value.field == "artifact_sha256"
    assert len(caught.value.message) < 200


# ----- keys -----

def test_keys_under_models_and_uploads():
    assert artifact_key("resnet", "model.mar", "abc123") == "models/resnet/abc123/abc123-model.mar"
    assert upload_key("model.mar", "abc123") == "uploads/abc123/model.mar"


@pytest.mark.parametrize(("name", "safe"), [
    ("model.mar", "model.mar"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\model.mar", "model.mar"),
    ("my model (v2).tar.gz", "my_model__v2_.tar.gz"),
    ("modèle.zip", "mod_le.zip"),
    ("", "artifact"),
    (".", "artifact"),
    ("..", "artifact"),
    ("dir/", "artifact"),
    ("a\x00b", "a_b"),
])
def test_file_names_are_sanitised(name, safe):
    assert safe_file_name(name) == safe
    assert upload_key(name, "u1") == f"uploads/u1/{safe}"


def test_long_file_names_keep_their_suffix():
    safe = safe_file_name("x" * 1000 + ".tar.gz")
    assert len(safe) == artifacts.MAX_FILE_NAME_LENGTH
    assert safe.endswith(".tar.gz")


@pytest.mark.parametrize(("model", "segment"), [("resnet-50_v1.2", "resnet-50_v1.2"), ("..", "__"), (".", "_"),
                                               ("a/b", "a_b")])
def test_model_names_make_one_safe_segment(model, segment):
    assert artifact_key(model, "m.mar", "u1") == f"models/{segment}/u1/u1-m.mar"


@pytest.mark.parametrize("unique", ["", "a/b", "..", "x" * 65, "a b"])
def test_the_unique_part_is_the_callers_and_must_be_plain(unique):
    with pytest.raises(ValueError):
        upload_key("m.mar", unique)


# ----- URIs -----

@pytest.mark.parametrize(("uri", "parsed"), [
    ("s3://models/registry/models/m/1/model.mar", ("s3", "models", "registry/models/m/1/model.mar")),
    ("s3://my.bucket-1/k", ("s3", "my.bucket-1", "k")),
    ("s3://b/key with spaces?and=query", ("s3", "b", "key with spaces?and=query")),
    ("runs:/0123456789abcdef0123456789abcdef/model/model.mar",
     ("runs", "0123456789abcdef0123456789abcdef", "model/model.mar")),
])
def test_artifact_uris(uri, parsed):
    location = parse_artifact_uri(uri)
    assert location == parsed
    assert (location.scheme, location.container, location.path) == parsed


@pytest.mark.parametrize("uri", [
    "", "model.mar", "relative/path/model.mar", "/abs/model.mar", "file:///etc/passwd", "http://example.com/m.mar",
    "https://bucket.s3.amazonaws.com/k", "S3://b/k", "s3:/b/k", "s3://", "s3://b", "s3://b/", "s3:///k",
    "s3://b/a/../k", "s3://b/../k", "s3://b/./k", "s3://b/a//k", "s3://b/dir/", "s3://-b/k", "s3://b b/k",
    "s3://b/k\n", "s3://b/k\x00", "runs:/", "runs:/abc", "runs:/abc/", "runs://abc/model", "runs:/a.b/model",
    "runs:/abc/../x", "s3://b/" + "k" * 1020,
])
def test_other_uris_are_invalid(uri):
    with pytest.raises(InvalidArgument) as caught:
        parse_artifact_uri(uri)
    assert caught.value.field == "artifact_uri"
    assert caught.value.reason is CommonReason.INVALID_FIELD
    assert len(caught.value.message) < 200


def test_uris_up_to_the_limit():
    uri = "s3://b/" + "k" * (artifacts.MAX_URI_LENGTH - len("s3://b/"))
    assert parse_artifact_uri(uri).path == "k" * (artifacts.MAX_URI_LENGTH - 7)
    with pytest.raises(InvalidArgument):
        parse_artifact_uri(uri + "k")
    assert parse_artifact_uri("s3://b/k", field="source").path == "k"
