"""Scheduling: assigning PENDING attempts to clusters, as the database holds them.

`snapshot` reads what a pass needs (who waits, online clusters and what is free on them);
`scheduler` runs the pass with the pure rules of `control_plane.placement` and the quotas of
`control_plane.quota`, and `Scheduler` is the one service (one per process) that runs passes
when attempts become ready, capacity is freed, or a tick passes.
"""
