"""The deployment part of policy.toml: valid files load, bad ones name file, line and key."""

from __future__ import annotations

import dataclasses
import os
import ssl
from pathlib import Path

import pytest

from recorder.cli.main import main
from recorder.config import ConfigError, SipTls, load_config
from tests.tlscerts import make_ca, make_cert

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
[service]
timezone = "America/Montreal"

[sip.external]
listen = "127.0.0.1:5060"
allow = ["203.0.113.0/24"]
next_hop = "203.0.113.10:5060"

[sip.internal]
listen = "127.0.0.1:5062"
allow = ["127.0.0.1/32"]
next_hop = "127.0.0.1:5070"

[media]
address = "127.0.0.1"
ports = "20001-29999"

[storage]
dir = "var/recordings"
database = "sqlite:///var/recorder.db"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_shipped_policy_loads() -> None:
    config = load_config(ROOT / "policy.toml")
    assert config.internal.next_hop == ("127.0.0.1", 5070)
    assert config.service.timezone.key == "America/Montreal"


def test_good_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.external.allows("203.0.113.99")
    assert not config.external.allows("198.51.100.1")
    assert not config.external.allows("not-an-ip")
    assert config.media.port_first == 20002  # RTP ports are even
    assert config.media.port_last == 29999


def test_errors_name_line_and_key(tmp_path: Path) -> None:
    bad = GOOD.replace('ports = "20001-29999"', 'ports = "abc"').replace(
        'allow = ["127.0.0.1/32"]', 'allow = ["127.0.0.300/32"]\ncolour = "blue"'
    )
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    lines = bad.splitlines()
    by_key = {p.split(": ")[1]: p for p in problems}
    assert set(by_key) == {"media.ports", "sip.internal.allow", "sip.internal.colour"}
    for key, problem in by_key.items():
        file_part, line_part = problem.split(": ")[0].rsplit(":", 1)
        assert file_part == str(path)
        assert key.split(".")[-1] in lines[int(line_part) - 1]


def test_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n[media\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems[0].startswith(f"{path}:")
    assert "syntax" in caught.value.problems[0]


def test_unknown_timezone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"service\.timezone"):
        load_config(write(tmp_path, GOOD.replace("America/Montreal", "Mars/Olympus")))


def test_policy_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(write(tmp_path, GOOD))]) == 0
    assert "PBX at 127.0.0.1:5070" in capsys.readouterr().out
    assert main(["policy", "check", str(write(tmp_path, GOOD.replace("5070", "99999")))]) == 2
    assert "sip.internal.next_hop" in capsys.readouterr().out


def test_storage_when_full_and_min_free_default_and_load(tmp_path: Path) -> None:
    storage = load_config(write(tmp_path, GOOD)).storage
    assert storage.when_full == "connect_unrecorded"
    assert storage.min_free_mb == 64 and storage.min_free_bytes == 64 * 1024 * 1024
    text = GOOD + 'when_full = "reject"\nmin_free_mb = 0.5\n'
    storage = load_config(write(tmp_path, text)).storage
    assert storage.when_full == "reject" and storage.min_free_bytes == 512 * 1024
    assert load_config(write(tmp_path, GOOD + "min_free_mb = 0\n")).storage.min_free_bytes == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('when_full = "drop"', "must be 'reject' or 'connect_unrecorded', got 'drop'"),
        ("when_full = 1", "must be a string, not int"),
        ("min_free_mb = -1", "must be >= 0.0, got -1"),
        ('min_free_mb = "64"', "must be a number, not str"),
    ],
)
def test_storage_full_keys_errors_name_file_line_and_key(
    tmp_path: Path, line: str, message: str
) -> None:
    text = GOOD + line + "\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    key = "storage." + line.split(" ")[0]
    number = text.splitlines().index(line) + 1
    assert problem == f"{path}:{number}: {key}: {message}"


def test_srtp_modes_default_to_mirror_and_load(tmp_path: Path) -> None:
    """Issue 21: each side's SRTP mode, and whether one leg may be SRTP and the other not."""
    config = load_config(write(tmp_path, GOOD))
    assert (config.external.srtp, config.internal.srtp, config.media.srtp_mixed) == (
        "mirror",
        "mirror",
        False,
    )
    text = GOOD.replace(
        'next_hop = "203.0.113.10:5060"', 'next_hop = "203.0.113.10:5060"\nsrtp = "require"'
    ).replace('ports = "20001-29999"', 'ports = "20001-29999"\nsrtp_mixed = true')
    text = text.replace('next_hop = "127.0.0.1:5070"', 'next_hop = "127.0.0.1:5070"\nsrtp = "off"')
    config = load_config(write(tmp_path, text))
    assert (config.external.srtp, config.internal.srtp, config.media.srtp_mixed) == (
        "require",
        "off",
        True,
    )
    assert config.srtp_sides("internal") == {"a": ("internal", "off"), "b": ("external", "require")}


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (('next_hop = "203.0.113.10:5060"', 'next_hop = "203.0.113.10:5060"\nsrtp = "always"'),
         "sip.external.srtp", "must be 'mirror', 'require' or 'off'"),
        (('ports = "20001-29999"', 'ports = "20001-29999"\nsrtp_mixed = "yes"'),
         "media.srtp_mixed", "must be true or false"),
    ],
)  # fmt: skip
def test_bad_srtp_keys_name_file_line_and_key(
    tmp_path: Path, change: tuple[str, str], key: str, message: str
) -> None:
    text = GOOD.replace(*change)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert f": {key}: {message}" in problem
    line = int(problem.split(": ")[0].rsplit(":", 1)[1])
    assert key.split(".")[-1] in text.splitlines()[line - 1]


def test_sides_that_always_mix_srtp_and_plain_need_srtp_mixed(tmp_path: Path) -> None:
    text = GOOD.replace(
        'next_hop = "203.0.113.10:5060"', 'next_hop = "203.0.113.10:5060"\nsrtp = "require"'
    ).replace('next_hop = "127.0.0.1:5070"', 'next_hop = "127.0.0.1:5070"\nsrtp = "off"')
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    [problem] = caught.value.problems
    assert "media.srtp_mixed" in problem and "set srtp_mixed = true" in problem


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    ca = make_ca(tmp_path)
    files = make_cert(ca, tmp_path, "recorder")
    return files.cert, files.key, ca.cert_path


def _problems(path: Path) -> dict[str, tuple[int, str]]:
    """key -> (line, message) of every problem in `path`."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    out: dict[str, tuple[int, str]] = {}
    for problem in caught.value.problems:
        where, key, message = problem.split(": ", 2)
        out[key] = (int(where.rsplit(":", 1)[1]), message)
    return out


def test_tls_keys(tmp_path: Path) -> None:
    cert, key, ca = _tls_files(tmp_path)
    text = GOOD.replace(
        'next_hop = "127.0.0.1:5070"',
        f'next_hop = "127.0.0.1:5070"\ntransport = "TLS"\ntls_cert = "{cert}"\n'
        f'tls_key = "{key}"\ntls_ca = "{ca}"\ntls_verify_client = true\n'
        'tls_server_name = "pbx.example"\ntls_listen = "127.0.0.1:5071"',
    ).replace(
        'next_hop = "203.0.113.10:5060"',
        f'next_hop = "203.0.113.10:5060"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        "tls_verify_server = false",
    )
    config = load_config(write(tmp_path, text))
    internal = config.internal
    assert internal.transport == "tls"
    assert internal.tls == SipTls(
        cert=cert,
        key=key,
        listen=("127.0.0.1", 5071),
        ca=ca,
        verify_server=True,
        verify_client=True,
        server_name="pbx.example",
    )
    external = config.external
    assert external.transport == "udp"  # TLS accepted, UDP towards the trunk
    assert external.tls is not None
    assert external.tls.listen == ("127.0.0.1", 5061)  # listen's port + 1
    assert (external.tls.ca, external.tls.verify_server) == (None, False)
    settings = internal.tls.settings("192.0.2.7")
    assert settings.listen == ("127.0.0.1", 5071)
    assert settings.sent_by == ("127.0.0.1", 5071)  # tls_listen's own host
    anywhere = dataclasses.replace(internal.tls, listen=("0.0.0.0", 5071))
    assert anywhere.settings("192.0.2.7").sent_by == ("192.0.2.7", 5071)
    assert settings.server_name == "pbx.example"
    assert settings.server_context is not None
    assert settings.server_context.verify_mode == ssl.CERT_REQUIRED
    assert settings.client_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert load_config(write(tmp_path, GOOD)).external.tls is None


def test_tls_errors_name_key_and_line(tmp_path: Path) -> None:
    cert, key, _ = _tls_files(tmp_path)
    text = GOOD.replace(
        'next_hop = "127.0.0.1:5070"',
        'next_hop = "127.0.0.1:5070"\ntransport = "tls"',
    ).replace(
        'next_hop = "203.0.113.10:5060"',
        f'next_hop = "203.0.113.10:5060"\ntransport = "sctp"\ntls_cert = "{cert}"\n'
        f'tls_key = "{tmp_path}/missing.key"\ntls_verify_server = "yes"',
    )
    path = write(tmp_path, text)
    problems = _problems(path)
    lines = text.splitlines()
    assert set(problems) == {
        "sip.external.transport",
        "sip.external.tls_key",
        "sip.external.tls_verify_server",
        "sip.internal.tls_cert",
    }
    assert "'udp', 'tcp' or 'tls'" in problems["sip.external.transport"][1]
    assert "cannot read" in problems["sip.external.tls_key"][1]
    assert "missing.key" in problems["sip.external.tls_key"][1]
    assert "true or false" in problems["sip.external.tls_verify_server"][1]
    assert problems["sip.internal.tls_cert"][1] == "is required when transport = 'tls'"
    for name, (line, _message) in problems.items():
        if name != "sip.internal.tls_cert":  # not in the file: its table's line
            assert name.rsplit(".", 1)[1] in lines[line - 1]
    assert lines[problems["sip.internal.tls_cert"][0] - 1] == "[sip.internal]"

    # A key of another certificate is found at load, not at the first connection.
    other = make_cert(make_ca(tmp_path, "other"), tmp_path, "other")
    mismatched = GOOD.replace(
        'next_hop = "127.0.0.1:5070"',
        f'next_hop = "127.0.0.1:5070"\ntls_cert = "{cert}"\ntls_key = "{other.key}"',
    )
    problems = _problems(write(tmp_path, mismatched))
    assert list(problems) == ["sip.internal.tls_cert"]
    assert "cannot be used" in problems["sip.internal.tls_cert"][1]

    # The TLS port must be free of the other listeners.
    clash = GOOD.replace(
        'next_hop = "203.0.113.10:5060"',
        f'next_hop = "203.0.113.10:5060"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        'tls_listen = "127.0.0.1:5062"',
    )
    problems = _problems(write(tmp_path, clash))
    assert list(problems) == ["sip.external.tls_listen"]
    assert "sip.internal.listen" in problems["sip.external.tls_listen"][1]


def test_node_defaults_to_the_host_name_and_may_be_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "rec-a.example.org")
    assert load_config(write(tmp_path, GOOD)).service.node == "rec-a"
    monkeypatch.setattr("socket.gethostname", lambda: "2026")  # not usable: a year directory
    assert load_config(write(tmp_path, GOOD)).service.node == "node"
    named = GOOD.replace("[service]\n", '[service]\nnode = "rec-b"\n')
    assert load_config(write(tmp_path, named)).service.node == "rec-b"


@pytest.mark.parametrize("name", ["", "../x", "a/b", "2026", "training", ".hidden", "x" * 64])
def test_a_node_name_is_one_safe_path_component(tmp_path: Path, name: str) -> None:
    bad = GOOD.replace("[service]\n", f'[service]\nnode = "{name}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, bad))
    assert caught.value.problems[0].startswith(f"{tmp_path / 'policy.toml'}:2: service.node: ")


def test_media_workers_default_to_one_per_core_issue_18(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).media.workers == max(1, os.cpu_count() or 1)
    for value, workers in (("0", 0), ("3", 3), ('"auto"', max(1, os.cpu_count() or 1))):
        text = GOOD.replace('ports = "20001-29999"', f'ports = "20001-29999"\nworkers = {value}')
        assert load_config(write(tmp_path, text)).media.workers == workers


@pytest.mark.parametrize("value", ["-1", "65", "true", '"many"', "1.5"])
def test_bad_media_workers_name_file_line_and_key(tmp_path: Path, value: str) -> None:
    text = GOOD.replace('ports = "20001-29999"', f'ports = "20001-29999"\nworkers = {value}')
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    [problem] = caught.value.problems
    assert ': media.workers: must be "auto" or a whole number from 0 to 64' in problem
    line = int(problem.split(": ")[0].rsplit(":", 1)[1])
    assert text.splitlines()[line - 1].startswith("workers =")


def test_media_engine_defaults_to_the_relay(tmp_path: Path) -> None:
    media = load_config(write(tmp_path, GOOD)).media
    assert media.engine == "relay"
    assert media.rtpengine == ("127.0.0.1", 2223)
    assert media.rtpengine_spool == Path("/var/spool/rtpengine")


def test_media_engine_rtpengine(tmp_path: Path) -> None:
    text = GOOD.replace(
        'ports = "20001-29999"',
        'ports = "20001-29999"\nengine = "rtpengine"\nrtpengine = "127.0.0.1:22222"\n'
        'rtpengine_spool = "/srv/rtpengine"',
    )
    media = load_config(write(tmp_path, text)).media
    assert media.engine == "rtpengine"
    assert media.rtpengine == ("127.0.0.1", 22222)
    assert media.rtpengine_spool == Path("/srv/rtpengine")


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ('engine = "kernel"', "media.engine", "must be 'relay' or 'rtpengine'"),
        ("engine = 1", "media.engine", "must be a string"),
        ('rtpengine = "localhost"', "media.rtpengine", "must be HOST:PORT"),
        ('rtpengine = "127.0.0.1:0"', "media.rtpengine", "must be HOST:PORT"),
        ("rtpengine_spool = 3", "media.rtpengine_spool", "must be a string"),
    ],
)
def test_bad_media_engine_keys_name_key_and_line(
    tmp_path: Path, line: str, key: str, message: str
) -> None:
    text = GOOD.replace('ports = "20001-29999"', f'ports = "20001-29999"\n{line}')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    number = text.splitlines().index(line) + 1
    assert problem.startswith(f"{path}:{number}: {key}: {message}"), problem
