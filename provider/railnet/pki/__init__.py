"""The cluster's certificates: the CA, node, provider and operator material, and its files."""
