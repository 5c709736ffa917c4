# Sourced by the other scripts: creates or reuses the project's virtual environment.
# It lives outside the clone, keyed by a hash of requirements.txt, so a second run (or
# CI on the same machine) does not reinstall several GB of torch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="$(command -v python3.11 || command -v python3)"
HASH="$(sha256sum "$ROOT/requirements.txt" | cut -c1-16)"
VENV="${BILAF_VENV_CACHE:-$HOME/.cache/bilaf-studio}/venv-$HASH"
if [ ! -f "$VENV/.complete" ]; then
  echo "setting up $VENV (first run: a few minutes, torch is large)" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements.txt"
  touch "$VENV/.complete"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
