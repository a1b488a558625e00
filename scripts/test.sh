#!/usr/bin/env bash
# Installs everything the tests need (Debian packages of the real DICOM peers,
# a Python 3.11 virtualenv with the test extras) and runs lint and the tests.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(dcmtk dicom3tools orthanc orthanc-dicomweb chromium fonts-wqy-microhei coturn)
missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian orthanc package starts a system service on port 4242/8042; tests
# start their own Orthanc on free ports, so the system one is not needed.
if command -v service >/dev/null 2>&1 && pgrep -x Orthanc >/dev/null 2>&1; then
    service orthanc stop >/dev/null 2>&1 || true
fi

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check teleconsult dicom_gateway device_adapters tests bench
.venv/bin/ruff format --check teleconsult dicom_gateway device_adapters tests bench

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
