"""Fixtures for the sealed-export tests: Debian's `age` and `age-keygen` binaries.

The tests decrypt with the stock `age` tool, the one a requester will use, not only with
the library that sealed. A missing tool skips those tests locally, and fails them under
CI (``CI=true``), where scripts/install-test-deps.sh must have installed it, as the
interop tests do (tests/interop/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

AGE_TOOLS = ("age", "age-keygen")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class AgeTools:
    age: str
    keygen: str

    def keygen_file(self, path: Path) -> str:
        """Make a key with `age-keygen -o PATH`; return its public key (``age1...``)."""
        subprocess.run([self.keygen, "-o", str(path)], check=True, capture_output=True)
        for line in path.read_text().splitlines():
            if line.startswith("# public key: "):
                return line.removeprefix("# public key: ").strip()
        raise AssertionError(f"no '# public key:' line in {path}")

    def decrypt(self, key_file: Path, sealed: Path) -> bytes:
        """`age -d -i KEYFILE FILE`, the plaintext from its stdout."""
        result = subprocess.run(
            [self.age, "-d", "-i", str(key_file), str(sealed)],
            check=True,
            capture_output=True,
        )
        return result.stdout


def _require(tools: tuple[str, ...], hint: str) -> list[str]:
    """Full paths of ``tools``; skips the test if one is missing, fails it under CI."""
    found = [shutil.which(tool) for tool in tools]
    missing = [tool for tool, path in zip(tools, found, strict=True) if path is None]
    if missing:
        msg = f"tools missing: {', '.join(missing)} ({hint})"
        if _in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return [path for path in found if path is not None]


@pytest.fixture(scope="session")
def age_tools() -> AgeTools:
    age, keygen = _require(AGE_TOOLS, "run scripts/install-test-deps.sh")
    return AgeTools(age=age, keygen=keygen)


@pytest.fixture(scope="session")
def sha256sum() -> str:
    """coreutils' `sha256sum`, what a requester checks SHA256SUMS with."""
    (path,) = _require(("sha256sum",), "install coreutils")
    return path
