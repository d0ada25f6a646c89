"""Host primitives that several rooms use on a node: network namespaces and atomic files."""
