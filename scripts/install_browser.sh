#!/usr/bin/env bash
# Install the headless browser used by tests/service/test_browser.py: Debian's chromium and chromium-driver.
# Playwright drives this system chromium (executable_path=/usr/bin/chromium); `playwright install` is never used,
# because it downloads a browser build from outside the package registries.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    command -v sudo >/dev/null || { echo "install_browser.sh: need root (or sudo) to apt-get install chromium" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium chromium-driver
/usr/bin/chromium --version
