"""Benchmarks (not tests): ``python -m bench.latency``, ``python -m bench.load``,
``python -m bench.stages``, ``python -m bench.consent_soak``.

Shared by them: ``common`` (aiortc helpers, the event-loop lag probe, ``--variants``),
``procs`` (child processes, what /proc says), ``tones`` (tone bursts and their onsets),
``table`` (the reports' tables), ``runinfo`` (machine, git revision, relay warnings),
``stock_relay`` (the stock aiortc baseline). ``latency_*`` and ``load_*`` are the parts
of ``latency`` and ``load``; each module's docstring says what it holds.
"""
