"""A fleet on 127.0.0.1, real processes: a ``redis-server``, an emulator, relay nodes
(``realtime-relay serve``) sharing the directory, and HAProxy in front of them."""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
from test_process import BIN, free_port

OPENAI_KEY = "sk-fleet-test-0123456789abcdefSECRET"
RELAY_KEY = "relay-fleet-test-key-0123456789SECRET"
ADMIN = "admin-fleet-test-token-0123456789SECRET"
CLUSTER_TOKEN = "cluster-fleet-test-token-0123456789SECRET"
#: The directory's TTL in these tests: a killed node's calls leave within it.
CALL_TTL_SECS = 3.0
HAPROXY_CFG = """\
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 1s
    retries 2
frontend relay
    bind 127.0.0.1:{port}
    default_backend relays
backend relays
    # One connection to each node in turn: consecutive requests (mint, call, follow-up)
    # land on different nodes. deploy/haproxy uses "balance source" for ICE-TCP.
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host relay
    http-check expect status 200
    default-server inter 300ms fall 1 rise 1
{servers}
"""


def _popen(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    import os

    full_env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | env
    with log.open("ab") as out:
        return subprocess.Popen(args, env=full_env, stdout=out, stderr=out)


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    timeout: float = 60,
    context: ssl.SSLContext | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process for {url} exited early"
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    #: The cluster listener's port (0: none, the nodes use the listen port).
    cluster_port: int = 0
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def node_url(self) -> str:
        """Where the other nodes reach this one (its directory entries name it)."""
        return f"http://127.0.0.1:{self.cluster_port or self.port}"


@dataclass
class Fleet:
    folder: Path
    redis_port: int = field(default_factory=free_port)
    lb_port: int = field(default_factory=free_port)
    emulator_port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: The nodes' TLS certificate and key (HTTPS on the listen port, and a cluster
    #: listener for the other nodes); ``None``: plain HTTP, the nodes use the listen port.
    tls: tuple[Path, Path] | None = None

    @property
    def lb(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_timeout=2, decode_responses=True)

    def start_redis(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is missing: scripts/install-system-deps.sh installs it"
        args = [server, "--bind", "127.0.0.1", "--port", str(self.redis_port)]
        args += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        self.procs["redis"] = _popen(args, {}, self.folder / "redis.log")
        deadline = time.monotonic() + 10
        while True:
            try:
                self.redis().ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop_redis(self) -> None:
        stop(self.procs.pop("redis"))

    def node_env(self, port: int, cluster_port: int = 0) -> dict[str, str]:
        tls: dict[str, str] = {}
        if self.tls is not None:
            tls = {"RELAY_TLS_CERT": str(self.tls[0]), "RELAY_TLS_KEY": str(self.tls[1])}
            tls["RELAY_CLUSTER_PORT"] = str(cluster_port)
        return tls | {
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.emulator_port}/v1",
            "RELAY_API_KEY": RELAY_KEY,
            "RELAY_ADMIN_TOKEN": ADMIN,
            "RELAY_ICE_ADDRESSES": "127.0.0.1",
            "RELAY_NOISE_SUPPRESSION": "off",
            "RELAY_REDIS_URL": self.redis_url,
            "RELAY_CLUSTER_TOKEN": CLUSTER_TOKEN,
            "RELAY_NODE_URL": f"http://127.0.0.1:{cluster_port or port}",
            "RELAY_CLUSTER_CALL_TTL_SECS": str(CALL_TTL_SECS),
            "RELAY_DRAIN_TIMEOUT_SECS": "60",
            "RELAY_RECORDING_POLICY": "opt_in",
            "RELAY_RECORDING_DIR": str(self.folder / f"recordings-{port}"),
        }

    def trust(self) -> ssl.SSLContext | None:
        """A client context that trusts the nodes' certificate (and only it)."""
        return ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else None

    def start(self, workers: tuple[int, ...], balancer: bool = True) -> None:
        """Redis, the emulator, one node per entry of ``workers`` (its shard count), and
        HAProxy in front of them if ``balancer``."""
        self.start_redis()
        emulator = _popen(
            [str(BIN), "emulator", "--port", str(self.emulator_port)],
            {"RELAY_EMULATOR_API_KEYS": OPENAI_KEY, "RELAY_ICE_ADDRESSES": "127.0.0.1"},
            self.folder / "emulator.log",
        )
        self.procs["emulator"] = emulator
        for shards in workers:
            port, cluster_port = free_port(), free_port() if self.tls else 0
            log = self.folder / f"node-{port}.log"
            args = [str(BIN), "serve", "--port", str(port), "--workers", str(shards)]
            proc = _popen(args, self.node_env(port, cluster_port), log)
            scheme = "https" if self.tls else "http"
            self.nodes.append(Node(port, proc, log, cluster_port, scheme))
        wait_http(f"http://127.0.0.1:{self.emulator_port}/healthz", emulator)
        for node in self.nodes:
            wait_http(f"{node.url}/readyz", node.proc, context=self.trust())
        if balancer:
            self._start_haproxy()

    def _start_haproxy(self) -> None:
        haproxy = shutil.which("haproxy")
        assert haproxy, "haproxy is missing: scripts/install-system-deps.sh installs it"
        servers = "\n".join(
            f"    server n{i} 127.0.0.1:{n.port} check" for i, n in enumerate(self.nodes, 1)
        )
        cfg = self.folder / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=self.lb_port, servers=servers))
        self.procs["haproxy"] = _popen([haproxy, "-f", str(cfg), "-db"], {}, self.folder / "lb.log")
        wait_http(f"{self.lb}/healthz", self.procs["haproxy"])

    def close(self) -> None:
        for node in self.nodes:
            stop(node.proc)
        for name in ("haproxy", "emulator", "redis"):
            if name in self.procs:
                stop(self.procs.pop(name))

    def logs(self) -> str:
        return "".join(node.log.read_text(errors="replace") for node in self.nodes)

    def call_owner(self, call_id: str) -> str | None:
        return cast("str | None", self.redis().get(f"relay:call:{call_id}"))

    def node_loads(self) -> dict[str, dict[str, Any]]:
        client = self.redis()
        ids = sorted(cast("set[str]", client.smembers("relay:nodes")))
        raws = cast(
            "list[str | None]", client.mget([f"relay:node:{i}" for i in ids]) if ids else []
        )
        return {i: json.loads(r) for i, r in zip(ids, raws, strict=True) if r}
