"""``realtime-relay emulator`` with its modules imported before it starts: it reads one
line from stdin, then runs the command with the given arguments (a test starts a
replacement emulator at once, whatever the machine's load does to Python's start-up)."""

from __future__ import annotations

import sys

import relay.emulator.app  # noqa: F401 (the slow imports: aiortc, av, numpy)
from relay.cli import main

if __name__ == "__main__":
    sys.stdin.readline()
    main(["emulator", *sys.argv[1:]])
