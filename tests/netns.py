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
import re
import shutil
import socket
import subprocess
import tempfile
import time
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

    def allow_only_tcp_to(self, *ports: int) -> None:
        """The client may open TCP connections to ``host_ip`` on ``ports`` and nothing
        else: no UDP at all, no other port (profile b: the relay's page port; profile c:
        also coturn's TCP port)."""
        accepted = ", ".join(str(port) for port in ports)
        self._lockdown(f"ip daddr {self.host_ip} tcp dport {{ {accepted} }} accept")

    def allow_only_to(self, address: str) -> None:
        """The client may send to ``address`` only (any protocol, any port)."""
        self._lockdown(f"ip daddr {address} accept")

    def drop_udp(self) -> None:
        """The client's UDP vanishes without a word (dropped, no ICMP error: a sender
        learns nothing but silence); TCP to ``host_ip``, any port, gets through."""
        self._lockdown(f"ip daddr {self.host_ip} meta l4proto tcp accept")

    def _lockdown(self, accept: str) -> None:
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
    {accept}
  }}
  chain input {{
    type filter hook input priority 0; policy drop;
    iifname "lo" accept
    ct state established,related accept
  }}
}}
""",
        )

    def lose(self, percent: int) -> None:
        """Drop ``percent`` % of the packets on the client's link, both ways. netem would
        do (``net.netem("loss 1%")``) where the kernel has sch_netem; nftables' random
        numbers work wherever the namespace's lockdown does."""
        self.exec(
            "nft",
            "-f",
            "-",
            stdin=f"""
table inet lossy {{
  chain output {{
    type filter hook output priority -10; policy accept;
    oifname "vc0" numgen random mod 100 < {percent} counter drop
  }}
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "vc0" numgen random mod 100 < {percent} counter drop
  }}
}}
""",
        )

    def dropped(self) -> int:
        """Packets :meth:`lose` dropped so far."""
        listing = self.exec("nft", "list", "table", "inet", "lossy")
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))

    def lossless(self) -> None:
        """Undo :meth:`lose`."""
        self.exec("nft", "delete", "table", "inet", "lossy")

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


def stop_process(process: subprocess.Popen[bytes], secs: float = 5.0) -> None:
    """Terminate ``process`` (killed after ``secs``) and reap it; nothing if it ended."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(secs)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(secs)


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class TurnServer:
    """A real coturn (``turnserver``) with the REST-API shared secret, as
    ``deploy/coturn/turnserver.conf`` runs it: TURN over UDP and TCP on ``port`` at
    ``listen_ip``, relayed addresses on ``relay_ip`` within ``relay_ports``."""

    process: subprocess.Popen[bytes]
    listen_ip: str
    port: int
    relay_ip: str
    relay_ports: tuple[int, int]
    secret: str
    log: Path
    folder: Path

    @classmethod
    def start(
        cls,
        *,
        secret: str,
        listen_ip: str = "127.0.0.1",
        relay_ip: str | None = None,
        port: int = 0,
        relay_ports: tuple[int, int] = (49160, 49260),
        netns: str | None = None,
        conf: Path | None = None,
    ) -> TurnServer:
        """Started and answering on TCP ``port`` (0: a free one) within 10 s.

        ``conf``: run that configuration file (``deploy/coturn/turnserver.conf``) with
        only the addresses, ports, secret and state files overridden on the command
        line. Without it, a test configuration that allows peers on private and
        loopback addresses (the relay under test is one)."""
        if shutil.which("turnserver") is None:
            raise RuntimeError("coturn is not installed (scripts/install-system-deps.sh)")
        folder = Path(tempfile.mkdtemp(prefix="coturn-"))
        port = port or free_port(listen_ip)
        relay_ip = relay_ip or listen_ip
        overrides = [
            f"--listening-ip={listen_ip}",
            f"--relay-ip={relay_ip}",
            f"--listening-port={port}",
            f"--min-port={relay_ports[0]}",
            f"--max-port={relay_ports[1]}",
            f"--static-auth-secret={secret}",
            f"--userdb={folder / 'turndb'}",
            f"--pidfile={folder / 'turnserver.pid'}",
        ]
        if conf is None:
            conf = folder / "turnserver.conf"
            conf.write_text(
                "use-auth-secret\nrealm=relay.test\nno-tls\nno-dtls\nno-cli\n"
                "no-multicast-peers\nallow-loopback-peers\nfingerprint\n"
                "log-file=stdout\nsimple-log\n"
            )
        else:
            overrides += ["--tls-listening-port=0", "--log-file=stdout"]
        log = folder / "turnserver.log"
        prefix = ["ip", "netns", "exec", netns] if netns else []
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*prefix, "turnserver", "-c", str(conf), *overrides],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = cls(process, listen_ip, port, relay_ip, relay_ports, secret, log, folder)
        try:
            server._wait_listening(netns)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_listening(self, netns: str | None, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        probe = ["ip", "netns", "exec", netns] if netns else []
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"turnserver exited: {self.log.read_text()[-2000:]}")
            done = subprocess.run(
                [*probe, "ss", "-Hltn", f"sport = :{self.port}"], capture_output=True, text=True
            )
            if str(self.port) in done.stdout:
                return
            time.sleep(0.1)
        tail = self.log.read_text()[-2000:]
        raise TimeoutError(f"turnserver not listening on {self.port}: {tail}")

    def url(self, transport: str = "tcp") -> str:
        return f"turn:{self.listen_ip}:{self.port}?transport={transport}"

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class NattedRelay:
    """A relay behind 1:1 NAT, and a client that reaches only its public address.

    Two namespaces joined by the test's own, which is the NAT router: ``relay_ns`` (the
    relay, on ``private_ip``, its default route via the router) and ``client_ns``, whose
    only route is to ``public_ip`` and whose nftables drop anything else. The router
    DNATs ``public_ip`` to ``private_ip`` and SNATs the way back. ``public_ip`` is in
    198.51.100.0/24 (RFC 5737) and on no interface: only the router's rules know it.
    The test reaches the relay at ``private_ip``."""

    relay: ClientNetwork
    client: ClientNetwork
    public_ip: str

    @classmethod
    def create(cls) -> NattedRelay:
        relay = ClientNetwork.create()
        try:
            client = ClientNetwork.create()
        except BaseException:
            relay.remove()
            raise
        n = int(relay.host_ip.split(".")[2])
        net = cls(relay, client, f"198.51.100.{242 + n % 12}")
        try:
            net._route()
        except BaseException:
            net.remove()
            raise
        return net

    @property
    def relay_ns(self) -> str:
        return self.relay.name

    @property
    def private_ip(self) -> str:
        return self.relay.client_ip

    @property
    def client_ip(self) -> str:
        return self.client.client_ip

    @property
    def _table(self) -> str:
        return f"nat{self.relay.host_if}"

    def _route(self) -> None:
        self.relay.exec("ip", "route", "add", "default", "via", self.relay.host_ip)
        self.client.exec("ip", "route", "add", self.public_ip, "via", self.client.host_ip)
        _run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        outside = self.client.host_if
        _run(
            "nft",
            "-f",
            "-",
            stdin=f"""
table ip {self._table} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    iifname "{outside}" ip daddr {self.public_ip} dnat to {self.private_ip}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    oifname "{outside}" ip saddr {self.private_ip} snat to {self.public_ip}
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname "{outside}" ct status dnat accept
    iifname "{outside}" ct state established,related accept
    iifname "{outside}" drop
  }}
}}
""",
        )
        self.client.allow_only_to(self.public_ip)

    def wrapper(self, program: str) -> Path:
        """An executable that runs ``program`` in the client's namespace."""
        return self.client.wrapper(program)

    def remove(self) -> None:
        subprocess.run(["nft", "delete", "table", "ip", self._table], capture_output=True)
        self.client.remove()
        self.relay.remove()
