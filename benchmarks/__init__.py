"""Load benchmark of concurrent agent turns: the store against a ceiling, a naive design and
peers, driven like an agent runtime and checked by an independent pass after each system.

Run it with ``python -m benchmarks --db URL`` (see ``benchmarks.cli``).
"""
