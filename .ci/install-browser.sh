#!/usr/bin/env bash
# Install Debian's Chromium for the report's browser test (parity_tests/test_report_browser.py).
# CI runs this as root before `make test`; Playwright drives /usr/bin/chromium and never downloads a browser.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "error: run as root (or install sudo) to apt-get install chromium" >&2; exit 1; }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version
