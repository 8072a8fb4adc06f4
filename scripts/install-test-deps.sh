#!/usr/bin/env bash
# Installs the real peers the interop tests drive (sipp, baresip, sox, espeak-ng), Debian's
# age (the sealed-export tests decrypt with it), Chromium with its driver (console tests) and
# PostgreSQL (the catalog tests start a throwaway server of their own, tests/pg.py),
# Kamailio (the dispatcher in front of two recorder nodes, tests/interop/test_kamailio_nodes.py)
# and rtpengine (Debian's rtpengine-daemon, the optional media plane, run by
# tests/interop/test_rtpengine_path.py in userspace on its own ports; ~88 packages with its
# ffmpeg libraries; the package's own systemd unit is not used by the tests).
#
# Idempotent: installs only what is missing. As root: waits for any running
# apt/dpkg (another installer may be busy with these very packages), re-checks,
# then one `apt-get update` and one `apt-get install` of what is still missing.
# Not root: prints what is missing and exits 0; the interop tests then skip
# locally, and fail under CI=true (tests/interop/conftest.py).
set -euo pipefail

# tool on PATH (or a PostgreSQL server program, see have_tool) -> Debian package providing it
declare -A PACKAGE_OF=(
  [sipp]=sip-tester
  [baresip]=baresip-core
  [sox]=sox
  [espeak-ng]=espeak-ng
  [systemd-analyze]=systemd
  [flite]=flite
  [age]=age
  [age-keygen]=age
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [initdb]=postgresql
  [pg_ctl]=postgresql
  [kamailio]=kamailio
  [rtpengine]=rtpengine-daemon
)
TOOLS=(sipp baresip sox espeak-ng systemd-analyze flite age age-keygen chromium chromedriver
  initdb pg_ctl kamailio rtpengine)
LOCK_WAIT_S=${LOCK_WAIT_S:-900}

have_tool() {
  # Debian keeps PostgreSQL's server programs (initdb, pg_ctl) under
  # /usr/lib/postgresql/<version>/bin, off PATH; tests/pg.py looks in the same places.
  command -v "$1" >/dev/null 2>&1 && return 0
  # kamailio lives in /usr/sbin, off a plain user's PATH.
  [[ -x /usr/sbin/$1 ]] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null 2>&1
}

missing_packages() {
  # Each package once, even when several of its tools are missing (age, age-keygen).
  local tool pkg
  local -A seen=()
  for tool in "${TOOLS[@]}"; do
    have_tool "$tool" && continue
    pkg=${PACKAGE_OF[$tool]}
    [[ -n ${seen[$pkg]:-} ]] && continue
    seen[$pkg]=1
    echo "$pkg"
  done
}

apt_busy() {
  # fuser sees the dpkg/apt locks whoever holds them; without psmisc, fall back
  # to looking for the processes that take them.
  if command -v fuser >/dev/null 2>&1; then
    fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock \
      >/dev/null 2>&1 && return 0
  fi
  local name
  for name in apt-get apt dpkg aptitude unattended-upgr; do
    pgrep -x "$name" >/dev/null 2>&1 && return 0
  done
  return 1
}

wait_for_apt() {
  local waited=0
  while apt_busy; do
    if (( waited == 0 )); then
      echo "install-test-deps: apt/dpkg is busy, waiting (up to ${LOCK_WAIT_S}s)..."
    fi
    if (( waited >= LOCK_WAIT_S )); then
      echo "install-test-deps: apt/dpkg still busy after ${LOCK_WAIT_S}s" >&2
      return 1
    fi
    sleep 2
    waited=$((waited + 2))
  done
}

mapfile -t missing < <(missing_packages)
if (( ${#missing[@]} == 0 )); then
  echo "install-test-deps: all present: ${TOOLS[*]}"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-test-deps: missing (not root, not installing): ${missing[*]}"
  echo "  as root: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
  exit 0
fi

wait_for_apt
# The busy apt may just have installed them.
mapfile -t missing < <(missing_packages)
if (( ${#missing[@]} == 0 )); then
  echo "install-test-deps: all present: ${TOOLS[*]}"
  exit 0
fi

echo "install-test-deps: installing ${missing[*]}"
# DPkg::Lock::Timeout covers the race where another apt starts between our check and our run.
APT_OPTS=(-o "DPkg::Lock::Timeout=${LOCK_WAIT_S}")
apt-get "${APT_OPTS[@]}" update
DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${missing[@]}"

mapfile -t missing < <(missing_packages)
if (( ${#missing[@]} > 0 )); then
  echo "install-test-deps: still missing after install: ${missing[*]}" >&2
  exit 1
fi
echo "install-test-deps: all present: ${TOOLS[*]}"
