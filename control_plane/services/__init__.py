"""What routes, the agent service and background loops share above the repositories: creating
executions, which blobs a tenant may read, and the loops that keep state moving (outbox
delivery, lost clusters, lost launches)."""
