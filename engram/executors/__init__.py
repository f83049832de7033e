"""Executors run a sweep's units -- one (spec, seed) each -- on this machine or on a cluster.

`base` defines the unit and the interface, `local` a bounded pool of worker processes (the
default), `ray` one Ray task per run (`pip install 'engram[ray]'`), `worker` the process a unit
runs in, and `budget` the dollar cap shared by all runs of a sweep.
"""
