"""Sealed exports: every copy or extraction encrypted for its requester (X2), with
integrity checkable on the receiving medium (X1).

A bundle is a directory of age files (https://age-encryption.org/v1, X25519 recipients,
binary format) sealed to one recipient's public key ``age1...``:

- ``001.wav.age``, ``002.wav.age``, ...: the files, under opaque ordered names that reveal
  nothing (no number, no date, no original name), keeping only the original suffix;
- ``manifest.json.age``: the sealed manifest (original names, plaintext SHA-256 and sizes,
  per-file metadata, the export header);
- ``SHA256SUMS``: plain text over the sealed files, so that ``sha256sum -c SHA256SUMS``
  checks the medium without decrypting anything.

The requester decrypts with the stock tool: ``age -d -i KEYFILE -o 001.wav 001.wav.age``.
The cryptography is pyrage's (the Rust ``age`` crate); nothing here is hand-made.

Pure except for `write_bundle` and `open_bundle`, which touch only the directory given.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import pyrage

FORMAT = "recorder-export/1"
MANIFEST_NAME = "manifest.json.age"
SUMS_NAME = "SHA256SUMS"
SEALED_SUFFIX = ".age"

# Keys the manifest itself sets: per-item metadata and the header may not override them.
_FILE_KEYS = frozenset({"file", "name", "sha256", "size"})
_HEADER_KEYS = frozenset({"format", "files"})

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SAFE_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")
_SUMS_LINE = re.compile(r"([0-9a-f]{64})  (\S+)")
_ECHO_MAX = 20


class RecipientError(ValueError):
    """Not an age X25519 public key (``age1...``)."""


def _echo(text: str) -> str:
    """The start of user input, for an error message: never the whole of a long string."""
    return repr(text[:_ECHO_MAX] + "...") if len(text) > _ECHO_MAX else repr(text)


def parse_recipient(text: str) -> pyrage.x25519.Recipient:
    """An age X25519 recipient from its public key ``age1...`` (surrounding blanks ignored)."""
    key = text.strip()
    if key.upper().startswith("AGE-SECRET-KEY-"):
        # Never echo any part of a secret key.
        raise RecipientError(
            "recipient is an age secret key: give its public key (age1...), "
            "as printed by `age-keygen -y KEYFILE`"
        )
    if not key.startswith("age1"):
        raise RecipientError(f"recipient {_echo(key)} is not an age public key (expected age1...)")
    try:
        return pyrage.x25519.Recipient.from_str(key)
    except pyrage.RecipientError as exc:
        raise RecipientError(
            f"recipient {_echo(key)} is not a valid age public key: {exc}"
        ) from None


def seal(data: bytes, recipient: pyrage.x25519.Recipient) -> bytes:
    """``data`` encrypted to ``recipient``, in the binary age format (no ASCII armor)."""
    sealed: bytes = pyrage.encrypt(data, [recipient])
    return sealed


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class SealedFile:
    """One sealed file of a bundle, as it will be written on the medium."""

    name: str  # on the medium, e.g. "001.wav.age"
    sealed: bytes
    plain_sha256: str
    sealed_sha256: str
    plain_size: int


@dataclass(frozen=True, slots=True)
class SealedBundle:
    """Sealed files, the sealed manifest, and the text of SHA256SUMS over both."""

    files: tuple[SealedFile, ...]
    manifest: SealedFile  # name MANIFEST_NAME
    sha256sums: str

    def all_files(self) -> tuple[SealedFile, ...]:
        return (*self.files, self.manifest)


def _sealed_file(name: str, plain: bytes, recipient: pyrage.x25519.Recipient) -> SealedFile:
    sealed = seal(plain, recipient)
    return SealedFile(
        name=name,
        sealed=sealed,
        plain_sha256=_sha256(plain),
        sealed_sha256=_sha256(sealed),
        plain_size=len(plain),
    )


def _opaque_name(index: int, width: int, original: str) -> str:
    suffix = PurePath(original).suffix.lower()
    if not _SAFE_SUFFIX.fullmatch(suffix):
        suffix = ""
    return f"{index:0{width}d}{suffix}{SEALED_SUFFIX}"


def sha256sums_text(files: Sequence[SealedFile]) -> str:
    """The SHA256SUMS text over sealed files: ``HASH  NAME`` lines sorted by name."""
    return "".join(f"{f.sealed_sha256}  {f.name}\n" for f in sorted(files, key=lambda f: f.name))


def seal_bundle(
    items: Sequence[tuple[str, bytes, Mapping[str, Any]]],
    recipient: pyrage.x25519.Recipient,
    header: Mapping[str, Any],
) -> SealedBundle:
    """Seal ``(original name, plaintext, metadata)`` items and their manifest to ``recipient``.

    Sealed names are ``001<suffix>.age``, ``002<suffix>.age``... in the order given (wider
    when there are more than 999). The manifest is
    ``{"format": FORMAT, **header, "files": [{"file", "name", "sha256", "size", **metadata}]}``.
    Raises ValueError for a duplicate original name, or for metadata or header keys that
    would override the manifest's own; TypeError/ValueError if they are not plain JSON.
    """
    clash = _HEADER_KEYS.intersection(header)
    if clash:
        raise ValueError(f"export header may not set {', '.join(sorted(clash))}")
    seen: set[str] = set()
    width = max(3, len(str(len(items))))
    files: list[SealedFile] = []
    entries: list[dict[str, Any]] = []
    for index, (original, plain, metadata) in enumerate(items, start=1):
        if original in seen:
            raise ValueError(f"item {index}: duplicate name {_echo(original)}")
        seen.add(original)
        clash = _FILE_KEYS.intersection(metadata)
        if clash:
            raise ValueError(f"item {index}: metadata may not set {', '.join(sorted(clash))}")
        sealed_file = _sealed_file(_opaque_name(index, width, original), plain, recipient)
        files.append(sealed_file)
        entries.append(
            {
                "file": sealed_file.name,
                "name": original,
                "sha256": sealed_file.plain_sha256,
                "size": sealed_file.plain_size,
                **metadata,
            }
        )
    manifest_doc = {"format": FORMAT, **header, "files": entries}
    manifest_plain = (
        json.dumps(manifest_doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    ).encode()
    manifest = _sealed_file(MANIFEST_NAME, manifest_plain, recipient)
    return SealedBundle(
        files=tuple(files),
        manifest=manifest,
        sha256sums=sha256sums_text([*files, manifest]),
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a file system that cannot sync directories
            raise
    finally:
        os.close(fd)


def _refuse_existing(target: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "export file already exists, not overwriting", str(target))


def _write_new(target: Path, data: bytes) -> None:
    """Write ``target`` (mode 0600 at most) via a temporary name, fsync, then install it
    without replacing anything that appeared meanwhile (a hard link, which fails if the
    target exists; where the medium has no hard links, FAT for one, os.replace)."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise _refuse_existing(target) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if target.exists():
                raise _refuse_existing(target) from None
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bundle(bundle: SealedBundle, directory: Path) -> list[Path]:
    """Write ``bundle`` into ``directory`` (created 0700 if missing); return the paths written.

    Refuses (FileExistsError, before writing anything) if any target already exists. Each
    file is written 0600 (the umask can only narrow that) through a temporary name, fsynced,
    renamed into place; the directory is fsynced; SHA256SUMS comes last, so a bundle
    interrupted half way has no SHA256SUMS and cannot pass for a complete one.
    """
    sealed = bundle.all_files()
    names = [f.name for f in sealed]
    for name in names:
        if not _SAFE_NAME.fullmatch(name) or name == SUMS_NAME:
            raise ValueError(f"unsafe file name in bundle: {_echo(name)}")
    if len(set(names)) != len(names):
        raise ValueError("duplicate file names in bundle")
    directory = Path(directory)
    targets = [directory / name for name in [*names, SUMS_NAME]]
    if directory.exists():
        if not directory.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, "export target is not a directory", str(directory)
            )
        for target in targets:
            if target.exists() or target.is_symlink():
                raise _refuse_existing(target)
    else:
        directory.mkdir(mode=0o700, parents=True)
    written: list[Path] = []
    for sealed_file, target in zip(sealed, targets, strict=False):
        _write_new(target, sealed_file.sealed)
        written.append(target)
    _fsync_dir(directory)
    _write_new(targets[-1], bundle.sha256sums.encode("ascii"))
    written.append(targets[-1])
    _fsync_dir(directory)
    return written


def _parse_sums(text: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        match = _SUMS_LINE.fullmatch(line)
        if match is None or not _SAFE_NAME.fullmatch(match[2]):
            raise ValueError(f"{SUMS_NAME}: line {lineno} is not 'SHA256  NAME'")
        if match[2] in sums:
            raise ValueError(f"{SUMS_NAME}: {match[2]} listed twice")
        sums[match[2]] = match[1]
    return sums


def _decrypt(name: str, sealed: bytes, identity: pyrage.x25519.Identity) -> bytes:
    try:
        plain: bytes = pyrage.decrypt(sealed, [identity])
    except pyrage.DecryptError as exc:
        raise ValueError(f"{name}: cannot decrypt: {exc}") from None
    return plain


def open_bundle(
    directory: Path, identity: pyrage.x25519.Identity
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Verify and decrypt a bundle written by `write_bundle`: ``(manifest, {name: plaintext})``
    keyed by original name.

    Checks every sealed file against SHA256SUMS, decrypts the manifest, then every file it
    lists, against the manifest's SHA-256 and size. Raises ValueError naming the first bad
    file (missing, altered, not decryptable with ``identity``, unlisted, or extra).
    """
    directory = Path(directory)
    try:
        sums = _parse_sums((directory / SUMS_NAME).read_text(encoding="ascii"))
    except FileNotFoundError:
        raise ValueError(f"{SUMS_NAME}: missing (incomplete export?)") from None
    except UnicodeDecodeError:
        raise ValueError(f"{SUMS_NAME}: not ASCII text") from None
    if MANIFEST_NAME not in sums:
        raise ValueError(f"{MANIFEST_NAME}: not listed in {SUMS_NAME}")
    sealed: dict[str, bytes] = {}
    for name in sorted(sums):
        try:
            data = (directory / name).read_bytes()
        except FileNotFoundError:
            raise ValueError(f"{name}: missing") from None
        if _sha256(data) != sums[name]:
            raise ValueError(f"{name}: SHA-256 does not match {SUMS_NAME} (altered or damaged)")
        sealed[name] = data
    try:
        manifest = json.loads(_decrypt(MANIFEST_NAME, sealed[MANIFEST_NAME], identity))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{MANIFEST_NAME}: not a JSON document") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{MANIFEST_NAME}: not a {FORMAT} manifest")
    entries = manifest.get("files")
    if not isinstance(entries, list):
        raise ValueError(f"{MANIFEST_NAME}: no file list")
    plain: dict[str, bytes] = {}
    listed = {MANIFEST_NAME}
    for entry in entries:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("file"), str)
            and isinstance(entry.get("name"), str)
        ):
            raise ValueError(f"{MANIFEST_NAME}: malformed file entry")
        name, original = entry["file"], entry["name"]
        if name not in sealed:
            raise ValueError(f"{name}: in the manifest but not in {SUMS_NAME}")
        if name in listed or original in plain:
            raise ValueError(f"{name}: listed twice in the manifest")
        listed.add(name)
        data = _decrypt(name, sealed[name], identity)
        if _sha256(data) != entry.get("sha256") or len(data) != entry.get("size"):
            raise ValueError(f"{name}: decrypted content does not match the manifest")
        plain[original] = data
    extra = sorted(set(sealed) - listed)
    if extra:
        raise ValueError(f"{extra[0]}: in {SUMS_NAME} but not in the manifest")
    return manifest, plain


def bundle_from_wire(parts: Sequence[tuple[str, bytes]]) -> SealedBundle:
    """Rebuild a bundle received as (name, bytes) parts, SHA256SUMS last, checking every
    sealed file against it (X1: intact when handed over); ValueError names the first bad one.

    The receiving side cannot decrypt (only the recipient can), so the plain hashes stay in
    the sealed manifest and are left empty here.
    """
    if not parts or parts[-1][0] != SUMS_NAME:
        raise ValueError(f"{SUMS_NAME}: missing from the export")
    text = parts[-1][1].decode("ascii", errors="replace")
    sums = _parse_sums(text)
    files: list[SealedFile] = []
    for name, data in parts[:-1]:
        if sums.get(name) != _sha256(data):
            raise ValueError(f"{name}: SHA-256 does not match {SUMS_NAME} (damaged in transit)")
        files.append(SealedFile(name, data, "", _sha256(data), 0))
    if {f.name for f in files} != set(sums):
        raise ValueError(f"{SUMS_NAME}: does not list exactly the files received")
    manifest = [f for f in files if f.name == MANIFEST_NAME]
    if not manifest:
        raise ValueError(f"{MANIFEST_NAME}: missing from the export")
    others = tuple(f for f in files if f.name != MANIFEST_NAME)
    return SealedBundle(files=others, manifest=manifest[0], sha256sums=text)
