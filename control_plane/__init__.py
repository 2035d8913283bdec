"""The Fleetflow control plane: REST API, agent gRPC service, scheduling and the Temporal worker
over one database. Never imports `data_plane_agent`; `docs/architecture.md` maps its parts."""
