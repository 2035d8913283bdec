"""The control plane's REST answers as pydantic models: one definition for the routes that
send them (`control_plane.schemas` imports them from here) and the `Client` that reads them.

Request bodies and server-only models stay in `control_plane.schemas`.
"""
