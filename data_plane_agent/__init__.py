"""The Fleetflow data-plane agent: one per cluster, it pulls task attempts from the control plane.

The agent dials out to the control plane's gRPC endpoint (never the other way round), leases the
attempts assigned to its cluster, launches them with an executor (a local process, a Kubernetes
pod) and reports their status transitions back.
"""
