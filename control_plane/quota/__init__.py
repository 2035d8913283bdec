"""Quotas as the database holds them: a tenant's limits (its quota row) and its load (what its
active attempts and running executions hold now).

The rules that judge one more attempt against them are pure and live in
`control_plane.placement.admission`; this package reads their inputs, for the scheduler
(`scheduling/scheduler.py`), submission and previews, usage, `/metrics` and the admin API.
"""

from control_plane.quota.loads import current_load, limits_of, tenant_loads

__all__ = ["current_load", "limits_of", "tenant_loads"]
