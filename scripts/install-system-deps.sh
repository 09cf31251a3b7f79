#!/usr/bin/env bash
# Debian packages the tests need: Chromium (browser tests), espeak-ng + sox (real
# speech), coturn (TURN tests), promtool (alert rules), nftables and iproute2 (the
# network profiles the tests build in namespaces), squid (the WebSocket fallback through an
# HTTP proxy), redis-server + haproxy (the fleet tests, tests/cluster/). Installs only what
# is missing.
set -euo pipefail
need=()
if [ "${1:-}" = "--run" ]; then
  # What `make run` needs beyond Python: the emulator's voice.
  command -v espeak-ng >/dev/null || need+=(espeak-ng)
  if [ ${#need[@]} -eq 0 ]; then exit 0; fi
  SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "could not install espeak-ng: the emulator uses its synthetic voice"
  exit 0
fi
command -v chromium >/dev/null || need+=(chromium)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v turnserver >/dev/null || need+=(coturn)
command -v promtool >/dev/null || need+=(prometheus)
command -v unshare >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v haproxy >/dev/null || need+=(haproxy)
command -v redis-server >/dev/null || need+=(redis-server)
command -v tc >/dev/null || need+=(iproute2)
command -v squid >/dev/null || need+=(squid)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
