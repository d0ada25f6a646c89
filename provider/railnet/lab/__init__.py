"""A local cluster: every node a network namespace on a private underlay, with its agent."""
