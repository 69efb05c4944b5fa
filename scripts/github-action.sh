#!/usr/bin/env bash
# github-action.sh - the steps of action.yml (kept here so that they can be run and tested locally).
#
# Usage: scripts/github-action.sh install   virtual environment in $RUNNER_TEMP with nachos-deploy
#                                            from this checkout; its bin/ goes on $GITHUB_PATH
#        scripts/github-action.sh up        nachos-deploy up --github with the INPUT_* variables:
#                                            INPUT_CONFIG, INPUT_ONLY (space-separated), INPUT_PROJECT,
#                                            INPUT_TIMEOUT
# Environment: NACHOS_DEPLOY (the command to run; default nachos-deploy), RUNNER_TEMP, GITHUB_PATH.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

case "${1:-}" in
    install)
        venv="${RUNNER_TEMP:-/tmp}/nachos-deploy-venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$HERE"
        if [ -n "${GITHUB_PATH:-}" ]; then echo "$venv/bin" >>"$GITHUB_PATH"; fi
        ;;
    up)
        args=(up --github --timeout "${INPUT_TIMEOUT:-120}")
        if [ -n "${INPUT_CONFIG:-}" ]; then args+=(--config "$INPUT_CONFIG"); fi
        if [ -n "${INPUT_PROJECT:-}" ]; then args+=(--project "$INPUT_PROJECT"); fi
        for service in ${INPUT_ONLY:-}; do args+=(--only "$service"); done
        exec ${NACHOS_DEPLOY:-nachos-deploy} "${args[@]}"
        ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
