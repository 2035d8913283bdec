"""The lifecycle of attempts and executions: which state moves are legal (the one transition
policy, `transitions`) and which agent reports may move an attempt at all (fencing and
sequence, `reports`). A leaf: it imports only `fleetflow`, so the database layer,
orchestration and the agent API can all ask it."""
