"""The lifecycle of attempts and executions: which state moves are legal (the one transition
policy, `transitions`), which agent reports may move an attempt at all (fencing and sequence,
`reports`), and a cluster's status by its heartbeat (`clusters`). A leaf: it imports only
`fleetflow`, so the database layer, orchestration, the agent API and the API's schemas can all
ask it."""
