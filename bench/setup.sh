#!/usr/bin/env bash
# Installs what `make bench` needs, from Debian's packages and PyPI, through their
# ordinary clients.  Idempotent and quiet: a second run does nothing.
#   wrk, nginx               – Debian packages (the load tool and the nginx peer)
#   bench/.litellm-venv      – LiteLLM's proxy in its own virtualenv, pinned to 1.102.4
#                              (1.107.0 is a known-compromised release: never that one)
set -euo pipefail
cd "$(dirname "$0")/.."

LITELLM_VERSION="1.102.4"
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bench/setup.sh: installing ${missing[*]} (Debian)"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv=bench/.litellm-venv
stamp="$venv/.installed-$LITELLM_VERSION"
if [ ! -f "$stamp" ]; then
    echo "bench/setup.sh: installing litellm[proxy]==$LITELLM_VERSION into $venv (about a minute)"
    mkdir -p bench/results/raw
    rm -rf "$venv"
    python3 -m venv "$venv"
    if ! { "$venv/bin/pip" install -q --upgrade pip &&
           "$venv/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"; } \
           >bench/results/raw/litellm-install.log 2>&1; then
        echo "bench/setup.sh: litellm install failed, see bench/results/raw/litellm-install.log" >&2
        exit 1
    fi
    installed="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
    if [ "$installed" != "$LITELLM_VERSION" ]; then
        echo "bench/setup.sh: expected litellm $LITELLM_VERSION, got $installed" >&2
        exit 1
    fi
    touch "$stamp"
fi
