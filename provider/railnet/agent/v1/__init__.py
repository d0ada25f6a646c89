"""Generated gRPC stubs of agent.proto (``make proto``); do not edit."""
