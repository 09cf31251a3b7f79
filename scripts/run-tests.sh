#!/usr/bin/env bash
# Runs pytest inside a network namespace that has only a loopback interface, when the
# machine allows it (root or user namespaces): then no test can send a packet off this
# machine, whatever Chromium or aiortc try. Elsewhere it runs on the host, where the
# tests still use 127.0.0.1 only.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/python -m pytest "$@")
# Things the tests fetch from package registries, fetched here, before the network goes:
# OpenAI's browser Agents SDK and axe-core (pinned, cached under the temporary folder).
.venv/bin/python tests/browser/agents_sdk/install.py || echo "warning: could not fetch the Agents SDK"
.venv/bin/python tests/browser/axe.py >/dev/null || echo "warning: could not fetch axe-core"
# mitmproxy (profile d's TLS-inspecting proxy), pinned, in a virtualenv of its own.
.venv/bin/python tests/browser/mitm_proxy/install.py || echo "warning: could not install mitmproxy"
if [ "${RELAY_TEST_NETNS:-1}" = "1" ] && unshare -n true 2>/dev/null; then
  exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh "${PYTEST[@]}"
elif [ "${RELAY_TEST_NETNS:-1}" = "1" ] && unshare -rn true 2>/dev/null; then
  exec unshare -rn sh -c 'ip link set lo up && exec "$@"' sh "${PYTEST[@]}"
fi
exec "${PYTEST[@]}"
