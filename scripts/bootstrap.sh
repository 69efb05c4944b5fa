#!/usr/bin/env bash
# bootstrap.sh - a Docker engine with Compose v2 and the images nachos-deploy needs, offline.
#
# Usage: scripts/bootstrap.sh [--force]          (as root; --force rebuilds every image)
#        PYTHON=/path/to/python scripts/bootstrap.sh
#
# Runs scripts/install-engine.sh, then scripts/build-images.sh (see each for details). Contacts
# only Debian's archive and PyPI, and only for what is missing; a second run takes about a second.
# PYTHON (passed to both) defaults to the project's .venv/bin/python when that exists, else python3.
# PROBE_SRC and the other variables the two scripts read are passed through as well.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac

if [ -z "${PYTHON:-}" ] && [ -x "$HERE/../.venv/bin/python" ]; then
    PYTHON=$(cd "$HERE/.." && pwd)/.venv/bin/python
fi
if [ -n "${PYTHON:-}" ]; then export PYTHON; fi

printf '==> bootstrap: engine and compose (PYTHON=%s)\n' "${PYTHON:-python3}" >&2
"$HERE/install-engine.sh"
printf '==> bootstrap: images\n' >&2
"$HERE/build-images.sh" "$@"
printf '==> bootstrap: done\n' >&2
