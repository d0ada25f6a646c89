"""railnet benchmarks: data-plane overhead, apply latency and memory on a local lab.

``python -m bench.run`` (what ``make bench`` calls) runs them all and writes
``docs/benchmarks.md``; each module also runs alone (``python -m bench.dataplane``) and
prints its section. They need root, ``wireguard-go``, ``wg``, ``iperf3`` and ``ping``.
"""
