"""The pure risk core: contract decoding, per-user state, timers and policy evaluation.

It imports neither faust nor aiokafka, so the worker, `lineguard replay` and
backtests run the same code.
"""
