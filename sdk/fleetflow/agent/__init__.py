"""The agent protocol: the generated gRPC stubs of `protos/fleetflow/agent/v1/agent.proto`."""
