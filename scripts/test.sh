#!/usr/bin/env bash
# Install (once, cached) and run the whole test suite, offline. The browser test needs
# Debian's chromium; it is installed here when missing (as root, with apt-get).
source "$(dirname "$0")/env.sh"
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium for the browser test (apt-get)" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: /usr/bin/chromium is missing and cannot be installed here; the browser test will fail" >&2
  fi
fi
export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
python -m pytest -q "$@"
