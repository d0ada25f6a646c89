"""The pure core of railnet: documents, addressing, naming and plans.

Nothing in this package performs I/O. It imports no pulumi, grpc, pyroute2, socket or
subprocess module; ``tests/unit/test_core_purity.py`` keeps it so.
"""
