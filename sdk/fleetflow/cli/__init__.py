"""The `fleetflow` command line."""
