"""`python -m data_plane_agent run …`, the same as `fleetflow agent run …`."""

from data_plane_agent.cli import app

app(prog_name="python -m data_plane_agent")
