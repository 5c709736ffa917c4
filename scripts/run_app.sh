#!/usr/bin/env bash
# Install (once, cached) and start BiLAF Studio on its built-in offline default.
source "$(dirname "$0")/env.sh"
export HF_HUB_OFFLINE=1
exec streamlit run app.py --server.address localhost "$@"
