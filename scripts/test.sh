#!/usr/bin/env bash
# Install (once, cached) and run the whole test suite, offline.
source "$(dirname "$0")/env.sh"
export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
python -m pytest -q "$@"
