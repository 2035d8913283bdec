"""Webhook notifications of executions' terminal states: checking a rule's target, rendering
an event as JSON or Slack, signing it, and the loop that sends the outbox's due deliveries.

Tenants are untrusted, and a webhook makes the control plane send a request where a tenant
says. Unless `FLEETFLOW_NOTIFY_ALLOW_PRIVATE` is set, a target must be a public address: a URL
whose host is a loopback, private, link-local, shared, reserved or multicast address (or
`localhost`) is refused with a 422 when a rule is created, and at every send the host is
resolved and each address checked again (a name may resolve elsewhere later), then the
request goes to the checked address itself, so a second resolution cannot swap it. Redirects
are not followed.

Delivery is at least once: a row is claimed (its `next_attempt_at` pushed past the attempt's
deadline), sent, and its result recorded; a sender that dies mid-send leaves it due again.
Failures back off exponentially (jittered: half to all of the ceiling) up to `max_attempts`,
then the row is `failed`. A slow receiver holds one slot of the bounded pool for at most its
timeouts, and one tenant holds at most `per_tenant_concurrency` slots, so it cannot hold up
the others' deliveries; no execution ever waits for a delivery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import utcnow
from control_plane.db.repositories import notifications as repo
from control_plane.db.session import transaction
from control_plane.schemas.common import FieldError
from control_plane.services.executions import ExecutionRequestError
from control_plane.settings import NotifySettings, Settings
from fleetflow.api_models.notifications import DeliveryStatus, NotificationRule
from fleetflow.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

log = logging.getLogger(__name__)

USER_AGENT = "Fleetflow-Webhooks/1"
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


class RefusedTarget(Exception):
    """A webhook target the platform may not call (a non-public address)."""


def refused_address(address: str) -> str | None:
    """Why the platform may not call `address` (an IP address), or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_global and not ip.is_multicast:
        return None
    kind = (
        "loopback"
        if ip.is_loopback
        else "link-local"
        if ip.is_link_local
        else "private"
        if ip.is_private
        else "non-public"
    )
    return f"{address} is a {kind} address"


def refused_host(host: str) -> str | None:
    """Why a URL's host is refused as written (an IP literal that is not public, a local
    name), or None: names are checked again when they are resolved, at each send."""
    name = host.strip("[]").rstrip(".").lower()
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"{host} is a loopback name"
    try:
        return refused_address(name)
    except ValueError:
        return None


def check_targets(rules: Sequence[NotificationRule], settings: NotifySettings) -> None:
    """Refuse rules whose webhook host is not public, unless private targets are allowed.

    Raises:
        ExecutionRequestError: naming each refused rule's URL field.
    """
    if settings.allow_private:
        return
    errors = []
    for index, rule in enumerate(rules):
        why = refused_host(urlsplit(rule.webhook.url).hostname or "")
        if why is not None:
            errors.append(
                FieldError(
                    field=f"notifications[{index}].webhook.url",
                    message=f"{why}: webhooks go to public addresses only on this platform "
                    "(FLEETFLOW_NOTIFY_ALLOW_PRIVATE)",
                )
            )
    if errors:
        raise ExecutionRequestError(
            "refused webhook URL: " + "; ".join(f"{e.field}: {e.message}" for e in errors), errors
        )


def render(payload: dict[str, Any], fmt: str, api_url: str) -> dict[str, Any]:
    """The body of a delivery: the event with its API `url` (`json`), or a Slack message."""
    event = {**payload, "url": api_url.rstrip("/") + payload["path"]}
    if fmt != "slack":
        return event
    state = str(event["state"])
    headline = (
        f"Fleetflow execution {event['execution_id']} of {event['workflow']} "
        f"({event['version']}) {state}"
    )
    detail = f"*{headline}*\ntenant: {event['tenant']}"
    if event.get("error"):
        detail += f"\nerror: {event['error']}"
    return {
        "text": headline + (f": {event['error']}" if event.get("error") else ""),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": detail}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"finished {event['finished_at']} · {event['url']}"}
                ],
            },
        ],
    }


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def backoff_seconds(
    attempts: int, settings: NotifySettings, rng: random.Random | None = None
) -> float:
    """How long to wait after the `attempts`-th failed attempt: jittered between half and all
    of an exponential ceiling, base * 2^(attempts-1), capped at `backoff_max_seconds`."""
    ceiling = min(
        settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** max(attempts - 1, 0)
    )
    return (rng or random).uniform(ceiling / 2, ceiling)


async def resolve_checked(host: str, port: int, allow_private: bool) -> str:
    """An address of `host` the platform may call (the first, when private ones are allowed).

    Raises:
        RefusedTarget: the name does not resolve, or resolves to a refused address.
    """
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise RefusedTarget(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise RefusedTarget(f"{host} resolves to no address")
    if not allow_private:
        for address in addresses:
            why = refused_address(address)
            if why is not None:
                raise RefusedTarget(f"{host} resolves to {why} (FLEETFLOW_NOTIFY_ALLOW_PRIVATE)")
    return addresses[0]


class NotificationSender:
    """Sends the outbox's due deliveries, a bounded number at a time, until stopped."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: NotifySettings,
        api_url: str,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._api_url = api_url
        self._client = client
        self._in_flight: dict[str, int] = {}  # tenant id -> deliveries being sent
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.concurrency)

    @classmethod
    def for_settings(
        cls, sessions: sessionmaker[Session], settings: Settings
    ) -> NotificationSender:
        api_url = settings.notify.api_url or f"http://{settings.api.host}:{settings.api.port}"
        return cls(sessions, settings.notify, api_url)

    @property
    def _attempt_deadline(self) -> float:
        """Longest one attempt may take (the claim outlives it)."""
        return self._settings.connect_timeout_seconds + 2 * self._settings.read_timeout_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Start due deliveries every `poll_interval_seconds` until `stop`; then wait for
        those in flight (each is bounded by its timeouts)."""
        owns_client = self._client is None
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        try:
            while not stop.is_set():
                try:
                    await self.start_due()
                except Exception:  # the database is away: next round
                    log.warning("notification round failed; retrying", exc_info=True)
                try:
                    await asyncio.wait_for(
                        stop.wait(), timeout=self._settings.poll_interval_seconds
                    )
                except TimeoutError:
                    pass
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self._attempt_deadline)
        finally:
            for task in self._tasks:
                task.cancel()
            if owns_client:
                await self._client.aclose()
                self._client = None

    async def start_due(self) -> int:
        """Claim what is due, within the pool's and each tenant's free slots, and start
        sending it; how many were started."""
        free = self._settings.concurrency - sum(self._in_flight.values())
        if free <= 0:
            return 0
        claimed = await asyncio.to_thread(self._claim, free)
        for item in claimed:
            self._in_flight[item.tenant_id] = self._in_flight.get(item.tenant_id, 0) + 1
            task = asyncio.create_task(self._send(item), name=f"notify-{item.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    def _claim(self, free: int) -> list[repo.Claimed]:
        """Claim up to `free` due deliveries, tenant by tenant (the longest waiting first),
        each tenant within its free share: a tenant with a flood of due rows, or with slow
        receivers holding its slots, leaves the rest to the others."""
        now = utcnow()
        until = now + timedelta(seconds=self._attempt_deadline + 5)
        taken: list[repo.Claimed] = []
        with transaction(self._sessions) as session:
            for tenant_id in repo.due_tenants(session, now):
                left = free - len(taken)
                if left <= 0:
                    break
                share = self._settings.per_tenant_concurrency - self._in_flight.get(tenant_id, 0)
                for delivery_id in repo.due_deliveries(session, tenant_id, now, min(share, left)):
                    claimed = repo.claim_delivery(session, delivery_id, now, until)
                    if claimed is not None:
                        taken.append(claimed)
        return taken

    async def _send(self, item: repo.Claimed) -> None:
        try:
            async with self._slots:
                code, error = await self._attempt(item)
            await asyncio.to_thread(self._record, item, code, error)
        except Exception:  # the database is away: the claim expires and it is tried again
            log.warning("could not record delivery %s; it will be retried", item.id, exc_info=True)
        finally:
            self._in_flight[item.tenant_id] -= 1
            if not self._in_flight[item.tenant_id]:
                del self._in_flight[item.tenant_id]

    async def _attempt(self, item: repo.Claimed) -> tuple[int | None, str | None]:
        """One POST of the delivery: (status code, error); no error means delivered."""
        settings = self._settings
        parts = urlsplit(item.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            address = await resolve_checked(host, port, settings.allow_private)
        except RefusedTarget as exc:
            return None, f"refused: {exc}"
        key = await asyncio.to_thread(self._signing_key, item.tenant_id)
        body = encode(render(item.payload, item.format, self._api_url))
        timestamp = int(time.time())
        netloc = f"[{address}]" if ":" in address else address
        if parts.port:
            netloc += f":{parts.port}"
        target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Host": parts.netloc.rsplit("@", 1)[-1],
            SIGNATURE_HEADER: signature(key, timestamp, body),
            TIMESTAMP_HEADER: str(timestamp),
            DELIVERY_HEADER: item.id,
        }
        timeout = httpx.Timeout(
            settings.read_timeout_seconds,
            connect=settings.connect_timeout_seconds,
            pool=settings.connect_timeout_seconds,
        )
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        assert self._client is not None
        try:
            async with (
                asyncio.timeout(self._attempt_deadline),
                # Streamed and never read: a receiver's answer is its status alone, and a
                # hostile one cannot make the control plane buffer a large body.
                self._client.stream(
                    "POST",
                    target,
                    content=body,
                    headers=headers,
                    timeout=timeout,
                    extensions=extensions,
                ) as response,
            ):
                code = response.status_code
        except (httpx.HTTPError, TimeoutError) as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= code < 300:
            return code, None
        return code, f"the receiver answered {code}"

    def _signing_key(self, tenant_id: str) -> str:
        with transaction(self._sessions) as session:
            return repo.signing_key(session, tenant_id).key

    def _record(self, item: repo.Claimed, code: int | None, error: str | None) -> None:
        attempts = item.attempts + 1
        retry_at: datetime | None = None
        permanent = error is not None and error.startswith("refused:")
        if error is not None and not permanent and attempts < self._settings.max_attempts:
            retry_at = utcnow() + timedelta(seconds=backoff_seconds(attempts, self._settings))
        with transaction(self._sessions) as session:
            status = repo.record_attempt(
                session,
                item.id,
                delivered=error is None,
                status_code=code,
                error=error,
                retry_at=retry_at,
            )
        if status is DeliveryStatus.FAILED:
            log.warning("gave up notification %s after %d attempt(s): %s", item.id, attempts, error)
        elif status is DeliveryStatus.PENDING:
            log.info("notification %s attempt %d failed (%s); retrying", item.id, attempts, error)
