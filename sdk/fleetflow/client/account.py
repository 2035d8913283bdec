"""`client.account`: who the client's token belongs to and where it may act."""

from __future__ import annotations

from fleetflow.api_models.tenancy import WhoAmI
from fleetflow.client.transport import Transport


class Account:
    """The calling principal."""

    def __init__(self, transport: Transport):
        self._transport = transport

    def whoami(self) -> WhoAmI:
        """The token's principal as the control plane sees it: its name, kind, home tenant,
        the tenant this client acts in, and its roles (tenant `*`: every tenant)."""
        return self._transport.call("GET", "/api/v1/whoami", WhoAmI)
