"""Real networks for the tests: a network namespace per simulated client network,
joined to the test's own namespace by a veth pair, with nftables rules for what the
"network" lets through, and netem for loss and delay.

Everything is created by the test and removed after it; addresses (10.77.0.0/16, or
198.51.100.0/24 for a relay that must look public) exist only on veths inside the
test's own (loopback-only) namespace. Needs root
(CI runs as root); :func:`available` says whether this machine allows it.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_COUNTER = itertools.count(1)


@functools.cache
def available() -> str | None:
    """``None`` if namespaces, veths and nftables work here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (scripts/install-system-deps.sh installs it)"
    probe = f"relayprobe{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "exec", probe, "nft", "list", "ruleset")
    except subprocess.CalledProcessError as exc:
        return f"network namespaces do not work here: {exc.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _run(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, check=True)
    return done.stdout


@dataclass
class ClientNetwork:
    """A namespace ``name`` whose only link is a veth to the test's namespace:
    ``host_ip`` is our side, ``client_ip`` the client's."""

    name: str
    host_ip: str
    client_ip: str
    host_if: str
    prefix: int = 24
    files: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, *, public: bool = False) -> ClientNetwork:
        """``public``: the relay's side gets a public-looking address (198.51.100.0/24,
        RFC 5737's documentation range, routed nowhere: it exists only on this veth),
        as a relay on the internet has. Chromium will not open ICE-TCP to a private
        address on a port below 1024 (a port-scanning guard), so a relay on 443 is
        only reachable this way when its address is public."""
        n = next(_COUNTER) % 60 + 1
        tag = f"{os.getpid() % 10000}n{n}"
        if public:
            host, client, prefix = f"198.51.100.{4 * n + 1}", f"198.51.100.{4 * n + 2}", 30
        else:
            host, client, prefix = f"10.77.{n}.1", f"10.77.{n}.2", 24
        net = cls(f"relay{tag}", host, client, f"vh{tag}", prefix)
        _run("ip", "netns", "add", net.name)
        try:
            _run(
                "ip",
                "link",
                "add",
                net.host_if,
                "type",
                "veth",
                "peer",
                "name",
                "vc0",
                "netns",
                net.name,
            )
            _run("ip", "addr", "add", f"{net.host_ip}/{net.prefix}", "dev", net.host_if)
            _run("ip", "link", "set", net.host_if, "up")
            net.exec("ip", "addr", "add", f"{net.client_ip}/{net.prefix}", "dev", "vc0")
            net.exec("ip", "link", "set", "vc0", "up")
            net.exec("ip", "link", "set", "lo", "up")
        except BaseException:
            net.remove()
            raise
        return net

    def exec(self, *args: str, stdin: str | None = None) -> str:
        return _run("ip", "netns", "exec", self.name, *args, stdin=stdin)

    def allow_only_tcp_to(self, port: int) -> None:
        """The client may open TCP connections to ``host_ip:port`` and nothing else:
        no UDP at all, no other port (profile b)."""
        self.exec(
            "nft",
            "-f",
            "-",
            stdin=f"""
table inet lockdown {{
  chain output {{
    type filter hook output priority 0; policy drop;
    oifname "lo" accept
    ct state established,related accept
    ip daddr {self.host_ip} tcp dport {port} accept
  }}
  chain input {{
    type filter hook input priority 0; policy drop;
    iifname "lo" accept
    ct state established,related accept
  }}
}}
""",
        )

    def netem(self, spec: str) -> None:
        """Loss, delay or jitter on the client's link, both ways (``tc qdisc`` netem)."""
        self.exec("tc", "qdisc", "replace", "dev", "vc0", "root", "netem", *spec.split())
        _run("tc", "qdisc", "replace", "dev", self.host_if, "root", "netem", *spec.split())

    def wrapper(self, program: str) -> Path:
        """An executable that runs ``program`` inside this namespace (for Playwright's
        ``executable_path``: Chromium then lives on this network)."""
        handle, path = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".sh")
        with os.fdopen(handle, "w") as script:
            script.write(f'#!/bin/sh\nexec ip netns exec {self.name} {program} "$@"\n')
        os.chmod(path, 0o755)
        self.files.append(Path(path))
        return Path(path)

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        for path in self.files:
            path.unlink(missing_ok=True)
