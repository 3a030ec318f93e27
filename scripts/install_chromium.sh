#!/bin/sh
# Best effort: install Debian's Chromium for the report-rendering test.
# That test skips with a clear reason when Chromium is still unavailable.
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
else
    echo "not root and no sudo: cannot install chromium (the report test will be skipped)"
    exit 0
fi
echo "installing chromium (Debian package) for the report test..."
if $SUDO apt-get update -qq >/dev/null 2>&1 &&
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; then
    echo "chromium installed: $(chromium --version 2>/dev/null)"
else
    echo "could not install chromium (the report test will be skipped)"
fi
exit 0
