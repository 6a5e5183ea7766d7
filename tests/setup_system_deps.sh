#!/bin/sh
# Install the system tools some tests drive, from Debian's packages: headless Chromium (the HTML
# report test) and docker-compose (validates docker/compose.yaml without a Docker engine).
# Idempotent: does nothing when both are already on PATH. Needs root (or password-less sudo) and the package
# mirror. Where it cannot install, it warns and the browser test skips with the reason; under CI
# (CI set) a failed install is an error, because there the browser check must run.
set -u

have_all() { command -v chromium >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1; }
if have_all; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "setup_system_deps: not root and no password-less sudo; cannot install chromium/docker-compose (their tests will skip)" >&2
    [ -z "${CI:-}" ] || exit 1
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3; do
    if $SUDO apt-get update -q >/dev/null \
        && $SUDO apt-get install -y -q --no-install-recommends chromium docker-compose >/dev/null; then
        have_all && exit 0
    fi
    echo "setup_system_deps: install attempt $attempt failed; retrying" >&2
    sleep $((attempt * 5))
done

echo "setup_system_deps: could not install chromium/docker-compose (their tests will skip)" >&2
[ -z "${CI:-}" ] || exit 1
exit 0
