"""The gRPC service agents dial into (fleetflow.agent.v1.AgentService)."""
