"""The web console in a real browser (issue 17): Debian's Chromium, driven by selenium through
Debian's chromium-driver, against `recorder serve` with `[console]` on, after a sipp call
was recorded. Log in, search, request, a second person approves, listen (the audio element
loads and plays the approved WAV), log out; a statistics-only user sees no recording; a
POST without its CSRF token is refused; wrong passwords lock the account. Every step is in
the audit trail, which verifies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from . import peers
from .conftest import RecorderFactory
from .recorder_proc import RecorderProcess

pytestmark = pytest.mark.interop

LOOPBACK = "127.0.0.1"
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS")  # a directory: keep the pages' pictures
# The recorder the tests start keeps its calendar in this zone (recorder_proc): the search
# takes local days, so the recording's day is the local one (UTC 00:00-05:00 is the day before).
MONTREAL = ZoneInfo("America/Montreal")
PASSWORDS = {
    "quality": "Maple-Harbour-4417",
    "it_director": "Granite-Ferry-9023",
    "clerk": "Velvet-Canyon-3381",
    "analyst": "Copper-Meadow-7265",
}

POLICY = """
[policy]
name = "TEST"

[recording]
directions = ["inbound"]
extensions = "all"
mode = "automatic"

[notice]
play = false

[naming]
template = "{date}_{time}_agent-{agent}"
agent_sources = ["header:X-Agent-Code"]

[retention]
recordings = "8 days"                   # D1

[passwords]                             # X3
min_length = 12
min_classes = 3
max_failures = 3
lock_minutes = 15

[purposes.complaints]
description = "Complaints and disputes"
rule = "P3"
approvers = 2                           # A9

[roles.quality_office]
description = "Quality office"
purposes = ["complaints"]
scope = "all"
window = "retention"

[roles.administrator]
description = "IT director"
purposes = ["complaints"]
scope = "all"
window = "retention"
approves = ["complaints"]
audit = true                            # A10
reports = ["annual", "inventory"]

[roles.clerk]
description = "Clerk's office"
purposes = ["complaints"]
scope = "all"
window = "retention"
approves = ["complaints"]

[roles.analyst]                         # A11
description = "Statistics"
purposes = []
scope = "statistics"
window = "retention"
reports = ["annual", "quality"]

[people.quality]
name = "Claire Dubois"
role = "quality_office"

[people.it_director]
name = "Paul Roy"
role = "administrator"

[people.clerk]
name = "Denis Ferland"
role = "clerk"

[people.analyst]
name = "Anne Caron"
role = "analyst"
"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        message = "chromium and chromium-driver are missing (scripts/install-test-deps.sh)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def free_tcp_port() -> int:
    return peers.free_port_block(1, tcp=True)


def add_user(recorder: RecorderProcess, person: str, password: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recorder.cli",
            "console",
            "add-user",
            person,
            "--password-stdin",
            "--config",
            str(recorder.policy_path),
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class Site:
    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base

    def shot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(SCREENSHOTS) / f"console-{name}.png"))

    def go(self, path: str) -> None:
        self.driver.get(self.base + path)

    def by_id(self, element: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element)

    def all_css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def click(self, element: Any) -> None:
        """Click something that loads a new page, and wait until the new page is there."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        # A mark on the old page's window: a new page has a new window object without it.
        self.driver.execute_script("window.__leaving = true;")
        element.click()
        WebDriverWait(self.driver, 15, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script(
                "return !window.__leaving && document.readyState === 'complete';"
            )
        )

    def login(self, person: str, password: str | None = None) -> None:
        self.go("/login")
        self.by_id("person").send_keys(person)
        self.by_id("password").send_keys(password or PASSWORDS[person])
        self.click(self.by_id("login"))

    def logout(self) -> None:
        self.click(self.by_id("logout"))
        assert self.driver.current_url.endswith("/login")

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)


def post(url: str, data: dict[str, str], cookies: dict[str, str]) -> int:
    request = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(data).encode(),
        headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def login_attempt(base: str, person: str, password: str) -> int:
    """A login by hand, with the double-submit token a browser would carry."""
    with urllib.request.urlopen(base + "/login", timeout=10) as response:
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
        page = response.read().decode()
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    name, value = cookie.split("=", 1)
    return post(
        base + "/login", {"csrf": token, "person": person, "password": password}, {name: value}
    )


def test_console_request_approve_listen_in_a_real_browser(
    interop_dir: Path,
    prompt_pcap: Path,
    start_recorder: RecorderFactory,
    browser: Any,
) -> None:
    port = free_tcp_port()
    console = f'\n[console]\nlisten = "127.0.0.1:{port}"\nidle_minutes = 30\n'
    with peers.start_sipp_uas("uas_echo_agent", log_dir=interop_dir, calls=1) as pbx:
        recorder = start_recorder(pbx_port=pbx.port, media_ports=32, policy_extra=POLICY + console)
        uac = peers.run_sipp_uac(
            "uac_pcap", recorder.external_target, log_dir=interop_dir, pcap=prompt_pcap, timeout=20
        )
        pbx.wait(5)
    uac.assert_ok()
    recorder.wait_event("recording.finalized", timeout=15)
    recorder.wait_event("console.listening", timeout=10)
    [row] = recorder.catalog("recordings", "list")
    for person, password in PASSWORDS.items():
        add_user(recorder, person, password)
    base = f"http://127.0.0.1:{port}"
    site = Site(browser, base)
    today = datetime.fromisoformat(row["created_at"]).astimezone(MONTREAL).date().isoformat()

    # The requester: log in, search, tick the recording, file a motivated request.
    site.login("quality")
    assert "Claire Dubois" in site.text()
    site.shot("home")
    site.go(f"/search?from={today}&to={today}&go=1")
    site.shot("search")
    picks = site.all_css("input.pick")
    assert [p.get_attribute("value") for p in picks] == [str(row["id"])]
    picks[0].click()
    site.by_id("request-reason").send_keys("complaint 2026-114 about the answer given")
    site.click(site.by_id("file-request"))
    assert "registered (pending)" in site.text()
    [section] = site.all_css("section.request")
    public = section.get_attribute("id").removeprefix("request-")
    # CSRF: the same session, a POST without the token, is refused.
    session = {c["name"]: c["value"] for c in browser.get_cookies()}
    assert session["recorder_session"]
    status = post(base + f"/requests/{public}/approve", {}, session)
    assert status == 403
    site.logout()
    # The session is gone: its cookie opens nothing any more.
    status = post(base + "/requests", {"csrf": "x"}, session)
    assert status == 303 or status == 200  # sent back to the login page

    # Two approvers (A9), each in their own session.
    for approver in ("it_director", "clerk"):
        site.login(approver)
        site.go("/requests")
        if approver == "clerk":
            site.shot("requests")
        [button] = site.all_css(f"#request-{public} button.approve")
        site.click(button)
        assert f"Request {public}: approved" in site.text()
        site.logout()

    # The requester listens: the audio element loads and plays the approved WAV.
    site.login("quality")
    site.go("/requests")
    [link] = site.all_css("a.listen")
    site.click(link)
    assert site.by_id("waveform").get_attribute("src").startswith("data:image/png;base64,")
    player = site.by_id("player")
    deadline = time.monotonic() + 15
    state = {}
    while time.monotonic() < deadline:
        state = browser.execute_script(
            "const a = document.getElementById('player');"
            "if (a.paused && a.readyState >= 2) { a.play(); }"
            "return {ready: a.readyState, time: a.currentTime, duration: a.duration,"
            " error: a.error && a.error.code};"
        )
        if state["time"] and state["time"] > 0.5:
            break
        time.sleep(0.2)
    assert state.get("error") is None and state["ready"] >= 2, state
    assert state["time"] > 0.5, state  # it plays
    assert abs(state["duration"] - row["duration"]) < 0.1, (state, row["duration"])
    assert player.get_attribute("src").endswith(f"/audio/{public}/{row['id']}.wav")
    site.shot("listen")
    site.logout()

    # A statistics-only user sees no recording, only counts (A11).
    site.login("analyst")
    assert site.all_css("#nav-search") == []
    site.go(f"/search?from={today}&to={today}&go=1")
    assert "refused (A11)" in site.text()
    site.go(f"/reports/annual?year={today[:4]}")
    assert site.by_id("chart").get_attribute("src").startswith("data:image/png")
    site.shot("report")
    site.go(f"/listen/{public}/{row['id']}")
    assert "refused (A10)" in site.text()
    site.logout()

    # The audit view, for the role the policy lets read it (A10).
    site.login("it_director")
    site.go("/audit")
    trail = site.text()
    assert "recording.listen" in trail and "console.login" in trail
    site.shot("audit")
    site.logout()

    # Wrong passwords: the account locks after max_failures (X3), even for the right one.
    for _ in range(3):
        assert login_attempt(base, "clerk", "not-the-password") == 401
    assert login_attempt(base, "clerk", PASSWORDS["clerk"]) == 401
    # And one address may try only so often (10 a minute): the 11th login here is throttled.
    assert login_attempt(base, "nobody", "whatever-it-is") == 429

    entries = recorder.catalog("audit", "list")
    steps = [(e["action"], e["outcome"]) for e in entries]
    assert ("access.request", "ok") in steps and steps.count(("access.approve", "ok")) == 2
    assert ("recording.listen", "ok") in steps and ("recording.waveform", "ok") in steps
    assert ("recordings.searched", "refused") in steps  # the analyst's search
    logins = [e for e in entries if e["action"] == "console.login"]
    assert sum(e["outcome"] == "ok" for e in logins) == 6
    assert sum(e["outcome"] == "refused" for e in logins) == 4
    assert sum(e["outcome"] == "throttled" for e in logins) == 1
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "recorder.cli",
            "audit",
            "verify",
            "--config",
            str(recorder.policy_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (no network, no CA)."""
    from datetime import UTC, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "console.crt", directory / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_console_over_https_with_secure_cookies(
    interop_dir: Path, start_recorder: RecorderFactory
) -> None:
    import ssl

    cert, key = self_signed(interop_dir)
    port = free_tcp_port()
    console = f'\n[console]\nlisten = "127.0.0.1:{port}"\ncert = "{cert}"\nkey = "{key}"\n'
    recorder = start_recorder(pbx_port=peers.free_udp_port(), policy_extra=POLICY + console)
    listening = recorder.wait_event("console.listening", timeout=10)
    assert listening[0]["url"] == f"https://127.0.0.1:{port}/"
    trusted = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(
        f"https://127.0.0.1:{port}/login", context=trusted, timeout=10
    ) as page:
        assert page.status == 200
        cookie = page.headers["Set-Cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
    # Plain HTTP on the same port gets no page; an untrusted client refuses the certificate.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10).read()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(
            f"https://127.0.0.1:{port}/login", context=ssl.create_default_context(), timeout=10
        )
    assert recorder.stop() == 0
