"""The node agent: gRPC servicer, reconciler and the backends that touch the kernel."""
