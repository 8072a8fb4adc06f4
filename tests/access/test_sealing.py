"""Sealed exports (X1 integrity on hand-over, X2 encrypted on the receiving medium).

Decryption is checked with Debian's `age` binary (what a requester runs) and the medium
with coreutils' `sha256sum -c`, not only with the library that sealed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest

from recorder.access.sealing import (
    FORMAT,
    MANIFEST_NAME,
    SUMS_NAME,
    RecipientError,
    SealedBundle,
    open_bundle,
    parse_recipient,
    seal,
    seal_bundle,
    write_bundle,
)

from .conftest import AgeTools

HEADER = {"request": "AR-2026-0042", "requester": "Jeanne Tremblay", "rules": ["X1", "X2"]}


def _items() -> list[tuple[str, bytes, dict[str, Any]]]:
    """The same items at every call (the tests compare them with what comes back)."""
    noise = random.Random(15)
    return [
        ("2026/12/03/inbound_+15145550100_0931.wav", b"RIFF" + noise.randbytes(40_000), {"id": 17}),
        ("2026/12/03/outbound_+15145550199_1002.WAV", b"RIFF" + noise.randbytes(1_000), {"id": 18}),
        ("call-log.csv", b"call_id,number\nabc,+15145550100\n", {"kind": "log"}),
    ]


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def identity() -> Any:
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def bundle(identity: Any) -> SealedBundle:
    return seal_bundle(_items(), identity.to_public(), HEADER)


@pytest.fixture
def keypair(age_tools: AgeTools, tmp_path: Path) -> tuple[Path, Any]:
    """A key made by `age-keygen -o KEYFILE`, and the recipient parsed from its public key."""
    key_file = tmp_path / "requester.key"
    return key_file, parse_recipient(age_tools.keygen_file(key_file))


def test_X2_seal_decrypts_with_age_binary(
    age_tools: AgeTools, keypair: tuple[Path, Any], tmp_path: Path
) -> None:
    key_file, recipient = keypair
    for size in (0, 1, 64 * 1024 - 1, 64 * 1024, 200_003):  # around age's 64 KiB chunks
        plain = os.urandom(size)
        sealed = seal(plain, recipient)
        assert sealed.startswith(b"age-encryption.org/v1\n")  # binary, not armored
        assert b"-----BEGIN AGE" not in sealed
        path = tmp_path / f"{size}.age"
        path.write_bytes(sealed)
        assert age_tools.decrypt(key_file, path) == plain


def test_X2_sealed_bytes_do_not_carry_the_plaintext(identity: Any) -> None:
    plain = b"+15145550100 " * 1000
    assert b"+1514" not in seal(plain, identity.to_public())


def test_X1_X2_bundle_checks_and_decrypts_on_the_medium(
    age_tools: AgeTools,
    sha256sum: str,
    keypair: tuple[Path, Any],
    tmp_path: Path,
) -> None:
    key_file, recipient = keypair
    items = _items()
    medium = tmp_path / "usb" / "export"
    paths = write_bundle(seal_bundle(items, recipient, HEADER), medium)

    names = ["001.wav.age", "002.wav.age", "003.csv.age", MANIFEST_NAME, SUMS_NAME]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in medium.iterdir()) == sorted(names)  # no temporary left over
    # The medium names nothing: no number, no date, no original name.
    for path in paths:
        assert "5550" not in path.name and "2026" not in path.name

    check = subprocess.run(
        [sha256sum, "-c", "--strict", SUMS_NAME], cwd=medium, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == 4

    manifest = json.loads(age_tools.decrypt(key_file, medium / MANIFEST_NAME))
    assert manifest["format"] == FORMAT
    assert {k: manifest[k] for k in HEADER} == HEADER
    assert [e["file"] for e in manifest["files"]] == names[:3]
    for entry, (name, plain, metadata) in zip(manifest["files"], items, strict=True):
        decrypted = age_tools.decrypt(key_file, medium / entry["file"])
        assert decrypted == plain
        assert entry["name"] == name
        assert entry["sha256"] == hashlib.sha256(decrypted).hexdigest()
        assert entry["size"] == len(plain)
        assert {k: entry[k] for k in metadata} == metadata


def test_X1_open_bundle_round_trip(bundle: SealedBundle, identity: Any, tmp_path: Path) -> None:
    write_bundle(bundle, tmp_path / "out")
    manifest, plain = open_bundle(tmp_path / "out", identity)
    assert manifest["format"] == FORMAT
    assert plain == {name: data for name, data, _ in _items()}


def test_X1_sha256sums_text_is_sorted_sha256sum_format(bundle: SealedBundle) -> None:
    lines = bundle.sha256sums.splitlines(keepends=True)
    assert [line[66:-1] for line in lines] == sorted(f.name for f in bundle.all_files())
    for line, sealed in zip(lines, sorted(bundle.all_files(), key=lambda f: f.name), strict=True):
        assert line == f"{hashlib.sha256(sealed.sealed).hexdigest()}  {sealed.name}\n"
    for sealed in bundle.all_files():
        assert sealed.plain_sha256 != sealed.sealed_sha256


@pytest.mark.parametrize("victim", ["002.wav.age", MANIFEST_NAME])
def test_X1_flipped_byte_fails_open_bundle_and_sha256sum(
    sha256sum: str, bundle: SealedBundle, identity: Any, tmp_path: Path, victim: str
) -> None:
    medium = tmp_path / "out"
    write_bundle(bundle, medium)
    path = medium / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(ValueError, match=rf"^{victim}: SHA-256 does not match"):
        open_bundle(medium, identity)
    check = subprocess.run([sha256sum, "-c", SUMS_NAME], cwd=medium, capture_output=True, text=True)
    assert check.returncode != 0
    assert f"{victim}: FAILED" in check.stdout


def test_X1_altered_file_with_recomputed_sums_fails_to_decrypt(
    bundle: SealedBundle, identity: Any, tmp_path: Path
) -> None:
    """Whoever rewrites SHA256SUMS too still cannot alter a file: age authenticates it."""
    medium = tmp_path / "out"
    write_bundle(bundle, medium)
    path = medium / "001.wav.age"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x80
    path.write_bytes(bytes(data))
    sums = (medium / SUMS_NAME).read_text().splitlines()
    sums = [
        f"{hashlib.sha256(data).hexdigest()}  001.wav.age" if s.endswith("001.wav.age") else s
        for s in sums
    ]
    (medium / SUMS_NAME).write_text("\n".join(sums) + "\n")
    with pytest.raises(ValueError, match=r"^001\.wav\.age: cannot decrypt"):
        open_bundle(medium, identity)


def test_X1_open_bundle_wrong_key_missing_file_missing_sums(
    bundle: SealedBundle, identity: Any, tmp_path: Path
) -> None:
    medium = tmp_path / "out"
    write_bundle(bundle, medium)
    with pytest.raises(ValueError, match=rf"^{MANIFEST_NAME}: cannot decrypt"):
        open_bundle(medium, pyrage.x25519.Identity.generate())
    (medium / "003.csv.age").unlink()
    with pytest.raises(ValueError, match=r"^003\.csv\.age: missing"):
        open_bundle(medium, identity)
    (medium / SUMS_NAME).unlink()
    with pytest.raises(ValueError, match=rf"^{SUMS_NAME}: missing"):
        open_bundle(medium, identity)


def test_X2_write_bundle_refuses_to_overwrite(
    bundle: SealedBundle, identity: Any, tmp_path: Path
) -> None:
    medium = tmp_path / "out"
    write_bundle(bundle, medium)
    before = {p.name: p.read_bytes() for p in medium.iterdir()}
    with pytest.raises(FileExistsError, match="already exists, not overwriting"):
        write_bundle(bundle, medium)
    assert {p.name: p.read_bytes() for p in medium.iterdir()} == before

    # One stray file is enough to refuse, and nothing else is written.
    other = tmp_path / "other"
    other.mkdir()
    (other / "002.wav.age").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError) as caught:
        write_bundle(bundle, other)
    assert caught.value.filename == str(other / "002.wav.age")
    assert [p.name for p in other.iterdir()] == ["002.wav.age"]


def test_X2_modes_file_0600_directory_0700(
    umask_022: None, bundle: SealedBundle, tmp_path: Path
) -> None:
    medium = tmp_path / "a" / "b"
    for path in write_bundle(bundle, medium):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(medium.stat().st_mode) == 0o700


def test_X2_existing_directory_is_used_as_is(bundle: SealedBundle, tmp_path: Path) -> None:
    (tmp_path / "mount").mkdir(mode=0o755)
    (tmp_path / "mount" / "README").write_text("the requester's own file\n")
    write_bundle(bundle, tmp_path / "mount")
    assert (tmp_path / "mount" / "README").read_text() == "the requester's own file\n"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello",
        "age1",
        "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "x" * 5000,
        "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ",
    ],
)
def test_X2_bad_recipient_is_refused_with_a_short_message(text: str) -> None:
    with pytest.raises(RecipientError) as caught:
        parse_recipient(text)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 160
    if len(text) > 20:
        assert text not in message
    assert "SECRET-KEY-1Q" not in message


def test_X2_parse_recipient_accepts_an_age_public_key(identity: Any) -> None:
    public = str(identity.to_public())
    recipient = parse_recipient(f"  {public}\n")
    assert str(recipient) == public
    assert pyrage.decrypt(seal(b"x", recipient), [identity]) == b"x"


def test_X2_sealed_names_are_opaque_and_ordered(identity: Any) -> None:
    items: list[tuple[str, bytes, dict[str, Any]]] = [
        ("+15145550100_2026-12-03.WAV", b"a", {}),
        ("no-suffix", b"b", {}),
        ("weird.suffix-with-dash", b"c", {}),
        ("archive.tar.gz", b"d", {}),
    ]
    bundle = seal_bundle(items, identity.to_public(), {})
    assert [f.name for f in bundle.files] == ["001.wav.age", "002.age", "003.age", "004.gz.age"]
    assert bundle.manifest.name == MANIFEST_NAME

    many = seal_bundle([(f"f{i}.wav", b"", {}) for i in range(1000)], identity.to_public(), {})
    names = [f.name for f in many.files]
    assert names[0] == "0001.wav.age" and names[-1] == "1000.wav.age"
    assert names == sorted(names)


def test_X1_seal_bundle_refuses_ambiguous_manifests(identity: Any) -> None:
    recipient = identity.to_public()
    with pytest.raises(ValueError, match="duplicate name"):
        seal_bundle([("a.wav", b"1", {}), ("a.wav", b"2", {})], recipient, {})
    with pytest.raises(ValueError, match="metadata may not set sha256"):
        seal_bundle([("a.wav", b"1", {"sha256": "0" * 64})], recipient, {})
    with pytest.raises(ValueError, match="header may not set files"):
        seal_bundle([], recipient, {"files": []})


def test_X1_empty_bundle_has_only_the_manifest(identity: Any, tmp_path: Path) -> None:
    bundle = seal_bundle([], identity.to_public(), HEADER)
    write_bundle(bundle, tmp_path / "out")
    manifest, plain = open_bundle(tmp_path / "out", identity)
    assert manifest == {"format": FORMAT, **HEADER, "files": []}
    assert plain == {}
