"""Placement: which cluster a task attempt runs on, and why not the others.

`policy` decides (filter, GPU type preference, spread or binpack score, tie-break by name);
`capacity` works out what a cluster has free from its agent's heartbeat and what was handed to
it since; `admission` judges quotas and fair share. All pure: importing the package does not
import the database layer. `control_plane.scheduling` reads their inputs from the database and
runs the passes.
"""

from control_plane.placement.capacity import FreeCapacity, Usage, free_capacity
from control_plane.placement.policy import (
    NO_FIT,
    Candidate,
    Decision,
    Strategy,
    fits_on,
    format_bytes,
    place,
)

__all__ = [
    "NO_FIT",
    "Candidate",
    "Decision",
    "FreeCapacity",
    "Strategy",
    "Usage",
    "fits_on",
    "format_bytes",
    "free_capacity",
    "place",
]
