"""``make chaos``: workers killed and restarted under load, then checked against replay.

The run is bounded and stops by itself. :mod:`chaos.run` drives it, :mod:`chaos.workers`
owns the worker processes and :mod:`chaos.check` reads the topics back and compares the
decisions found online with ``lineguard replay`` of the same input.
"""
