"""The provider's side of the wire: the agent client, the environment deployer, the cluster
file, and operator reads across nodes. Imports core, pki and the generated stubs only."""
