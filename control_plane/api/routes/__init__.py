"""One router per resource, mounted under `/api/v1` by `control_plane.api.app`."""
