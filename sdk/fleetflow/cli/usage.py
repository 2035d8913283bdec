"""`fleetflow quota` and `fleetflow usage`: what the acting tenant may use and has used.

`quota` sets what runs now against the tenant's limits (a task that would exceed one waits);
`usage` sums GPU, CPU and memory time per time bucket, optionally split by cluster, GPU type
or workflow, or (`--top`) ranks the workflows that used the most GPU time. `quota` also shows
the tenant's place in its cohort: nominal and borrowed GPUs per type. The quota formatting
here is shared with `fleetflow admin quotas`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import typer
from rich.text import Text

from fleetflow.cli.common import (
    JSON_OPTION,
    console,
    new_table,
    print_table,
    quantity,
    say,
    show,
    timestamp,
)
from fleetflow.errors import FleetflowError

if TYPE_CHECKING:
    from fleetflow.client import Client, UsageBucket, UsageGroupBy

TENANT_HELP = "The tenant to look at, instead of the one you act in."
BUCKETS = ("minute", "hour", "day")
GROUP_BYS = ("cluster", "gpu_type", "workflow")
_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# (field of a Quota, its usage field, its label)
_LIMITS = (
    ("gpu", "gpu", "GPUs"),
    ("cpu", "cpu", "CPU cores"),
    ("memory_bytes", "memory_bytes", "memory"),
    ("max_running_executions", "running_executions", "running executions"),
    ("max_running_tasks", "running_tasks", "running tasks"),
)


def parse_since(value: str, option: str, now: datetime | None = None) -> datetime:
    """`24h`, `30m`, `7d`, `2w` (that long before now) or an ISO 8601 time (UTC without an
    offset) -> an aware datetime.

    Raises:
        FleetflowError: neither.
    """
    now = now or datetime.now(UTC)
    match = _DURATION.match(value)
    if match:
        return now - timedelta(seconds=float(match["number"]) * _UNIT_SECONDS[match["unit"]])
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise FleetflowError(
            f"{option} {value!r} is neither a duration like 30m, 24h or 7d nor an ISO 8601 time "
            "like 2026-01-31T12:00:00Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _choice(value: str, option: str, choices: tuple[str, ...]) -> str:
    """`value` as one of `choices`, case and `-`/`_` aside."""
    normalized = value.strip().lower().replace("-", "_")
    if normalized not in choices:
        raise FleetflowError(f"{option} {value!r} is not one of {', '.join(choices)}")
    return normalized


# Formatting quotas -------------------------------------------------------------------------


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def limit_text(field: str, value: Any) -> str:
    """A limit for humans: `unlimited`, `64Gi`, `32`."""
    if value is None:
        return "unlimited"
    return quantity(value) if field == "memory_bytes" else _number(value)


def is_unlimited(quota: dict[str, Any] | None) -> bool:
    if not quota:
        return True
    return all(quota.get(field) is None for field, _, _ in _LIMITS) and not quota.get(
        "gpu_per_type"
    )


def quota_rows(quota: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Each limit of a quota by label, GPU types after GPUs."""
    quota = quota or {}
    rows = []
    for field, _, label in _LIMITS:
        rows.append((label, limit_text(field, quota.get(field))))
        if field == "gpu":
            for gpu_type, limit in sorted((quota.get("gpu_per_type") or {}).items()):
                rows.append((f"  {gpu_type} GPUs", limit_text("gpu", limit)))
    return rows


def describe_quota(quota: dict[str, Any] | None) -> str:
    """One line: `4 GPUs (a100 2), 32 CPU cores, 64Gi memory` or `unlimited`."""
    if is_unlimited(quota):
        return "unlimited"
    assert quota is not None
    parts = []
    for field, _, label in _LIMITS:
        part = f"{limit_text(field, quota[field])} {label}" if quota.get(field) is not None else ""
        if field == "gpu" and quota.get("gpu_per_type"):
            types = ", ".join(f"{t} {n}" for t, n in sorted(quota["gpu_per_type"].items()))
            part = f"{part} ({types})" if part else f"GPUs by type: {types}"
        if part:
            parts.append(part)
    return ", ".join(parts)


def print_quota_table(quota: dict[str, Any] | None) -> None:
    table = new_table("LIMIT", "VALUE")
    for label, value in quota_rows(quota):
        table.add_row(label, Text(value, style="dim" if value == "unlimited" else ""))
    print_table(table)


# fleetflow quota ---------------------------------------------------------------------------


def _share(used: Any, limit: Any) -> Text:
    if limit is None:
        return Text("-", style="dim")
    if not limit:
        percent = 100.0 if used else 0.0
    else:
        percent = 100.0 * float(used) / float(limit)
    style = "red" if percent >= 100 else "yellow" if percent >= 80 else "green"
    return Text(f"{percent:.0f}%", style=style)


def quota(
    ctx: typer.Context,
    tenant: str = typer.Option(None, "--tenant", metavar="T", help=TENANT_HELP),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show what your tenant uses now against its quota, what waits for quota, and its
    place in its cohort (nominal and borrowed GPUs), if it is in one."""
    if as_json:  # the quota API's answer as is; the cohort's is `GET /api/v1/cohort`
        show(ctx, lambda api: api.usage.quota_status(), True, _print_quota_status, tenant=tenant)
        return
    show(
        ctx,
        lambda api: {"quota": api.usage.quota_status(), "cohort": _cohort_of(api)},
        False,
        lambda answer, url: _print_quota_and_cohort(answer["quota"], answer["cohort"], url),
        tenant=tenant,
    )


def _cohort_of(api: Client) -> Any:
    """The tenant's place in its cohort; None from a control plane without cohorts."""
    from fleetflow.client.errors import ApiError

    try:
        return api.usage.cohort()
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        raise


def _print_quota_and_cohort(
    status: dict[str, Any], cohort: dict[str, Any] | None, api_url: str
) -> None:
    in_cohort = bool(cohort and cohort.get("cohort"))
    _print_quota_status(status, api_url, in_cohort=in_cohort)
    if cohort and in_cohort:
        _print_cohort(cohort)


def _print_cohort(cohort: dict[str, Any]) -> None:
    """The tenant's shares of its cohort: what it is guaranteed (nominal), what it borrows
    beyond that of the other members' unused nominal quota, and the cohort's totals."""
    console.print(Text(f"cohort {cohort['cohort']}", style="bold"), highlight=False)
    table = new_table(
        "GPU TYPE", "IN USE", "NOMINAL", "BORROWED", "BORROWING LIMIT", "COHORT IN USE",
        right=("IN USE", "NOMINAL", "BORROWED", "BORROWING LIMIT", "COHORT IN USE"),
    )  # fmt: skip
    for gpu_type, use in sorted((cohort.get("gpu_types") or {}).items()):
        limit = use.get("borrowing_limit")
        table.add_row(
            gpu_type,
            _number(use["in_use"]),
            _number(use["nominal"]),
            _number(use["borrowed"]),
            Text("unlimited", style="dim") if limit is None else _number(limit),
            f"{_number(use['cohort_in_use'])}/{_number(use['cohort_nominal'])}",
        )
    print_table(table)
    preempted = int(cohort.get("preempted") or 0)
    own = (
        "; its higher-priority work may also preempt its lower-priority work"
        if cohort.get("preempt_within_tenant")
        else ""
    )
    grace = cohort.get("preemption_grace_seconds")
    after = f", after a grace of {grace}s between SIGTERM and the kill" if grace is not None else ""
    say(
        "borrowed GPUs are taken back (the attempt PREEMPTED) when a member needs its nominal "
        f"quota{after}{own}; {preempted} attempt(s) of the tenant preempted so far"
    )


def _print_quota_status(status: dict[str, Any], _api_url: str, *, in_cohort: bool = False) -> None:
    limits = status.get("limits") or {}
    usage = status.get("usage") or {}
    table = new_table("RESOURCE", "IN USE", "LIMIT", "USED", right=("IN USE", "LIMIT", "USED"))
    for field, used_field, label in _LIMITS:
        used, limit = usage.get(used_field, 0), limits.get(field)
        used_text = quantity(used) if field == "memory_bytes" else _number(used)
        table.add_row(label, used_text, limit_text(field, limit), _share(used, limit))
        if field == "gpu":
            used_by_type = usage.get("gpu_per_type") or {}
            limit_by_type = limits.get("gpu_per_type") or {}
            for gpu_type in sorted(set(used_by_type) | set(limit_by_type)):
                used, limit = used_by_type.get(gpu_type, 0), limit_by_type.get(gpu_type)
                table.add_row(
                    f"  {gpu_type} GPUs",
                    _number(used),
                    limit_text("gpu", limit),
                    _share(used, limit),
                )
    console.print(Text(f"quota of tenant {status['tenant']}", style="bold"))
    print_table(table)
    if is_unlimited(status.get("limits")):
        say(
            "no quota: the tenant is limited only by the clusters it may use"
            + (" and its cohort's shares (below)" if in_cohort else "")
        )
    waiting = int(status.get("waiting_for_quota") or 0)
    if waiting:
        console.print(
            Text(f"{waiting} task attempt(s) wait for quota", style="yellow"), highlight=False
        )


# fleetflow usage ---------------------------------------------------------------------------

USAGE_HELP = (
    "Show what your tenant's tasks consumed: GPU, CPU and memory time per time bucket.\n\n"
    "Times are hours (GPU h: one GPU held for an hour). --group-by splits each bucket; "
    "--top ranks the workflows that used the most GPU time instead. What the tenant uses "
    "now, against its quota and its cohort's shares (nominal, borrowed): fleetflow quota."
)


def _hours(seconds: Any) -> str:
    return f"{float(seconds or 0) / 3600:.2f}"


def usage(
    ctx: typer.Context,
    since: str = typer.Option(
        "24h",
        "--since",
        metavar="WHEN",
        help="Start: a duration back from now (30m, 24h, 7d) or an ISO 8601 time (UTC unless "
        "it has an offset).",
    ),
    until: str = typer.Option(
        None,
        "--until",
        metavar="WHEN",
        help="End, written like --since (default: now).",
        show_default=False,
    ),
    bucket: str = typer.Option(
        "hour", "--bucket", metavar="SIZE", help=f"Bucket size: {', '.join(BUCKETS)}."
    ),
    group_by: str = typer.Option(
        None,
        "--group-by",
        metavar="KEY",
        help=f"Split each bucket by {', '.join(GROUP_BYS)}.",
        show_default=False,
    ),
    top: bool = typer.Option(
        False, "--top", help="Rank the workflows by GPU time since --since instead."
    ),
    limit: int = typer.Option(10, "--limit", min=1, max=100, help="With --top: how many."),
    tenant: str = typer.Option(None, "--tenant", metavar="T", help=TENANT_HELP),
    as_json: bool = JSON_OPTION,
) -> None:
    """`fleetflow usage` (help: USAGE_HELP)."""
    now = datetime.now(UTC)
    start = parse_since(since, "--since", now)
    end = parse_since(until, "--until", now) if until else None
    if end is not None and end <= start:
        raise FleetflowError(
            f"--until ({timestamp(end.isoformat())}) is not after --since "
            f"({timestamp(start.isoformat())})"
        )
    size = cast("UsageBucket", _choice(bucket, "--bucket", BUCKETS))
    split = cast("UsageGroupBy", _choice(group_by, "--group-by", GROUP_BYS)) if group_by else None
    if top:
        if until or split:
            raise FleetflowError("--top ranks workflows since --since: drop --until and --group-by")
        show(
            ctx,
            lambda api: api.usage.top_workflows(since=start, limit=limit),
            as_json,
            lambda workflows, _: _print_top(workflows, start),
            tenant=tenant,
        )
        return
    show(
        ctx,
        lambda api: api.usage.history(since=start, until=end, bucket=size, group_by=split),
        as_json,
        lambda answer, _: _print_usage(answer, start, split),
        tenant=tenant,
    )


def _print_top(workflows: list[dict[str, Any]], start: datetime) -> None:
    if not workflows:
        say(f"no workflow ran since {timestamp(start.isoformat())}")
        return
    table = new_table(
        "WORKFLOW", "GPU h", "CPU h", "EXECUTIONS", right=("GPU h", "CPU h", "EXECUTIONS")
    )
    for item in workflows:
        table.add_row(
            item["workflow"],
            _hours(item.get("gpu_seconds")),
            _hours(item.get("cpu_seconds")),
            str(item.get("executions", 0)),
        )
    console.print(
        Text(f"top workflows by GPU time since {timestamp(start.isoformat())}", style="bold")
    )
    print_table(table)


_SUMS = ("gpu_seconds", "cpu_seconds", "memory_gib_seconds")


def _print_usage(answer: dict[str, Any], start: datetime, split: str | None) -> None:
    """A row per bucket (per group with `split`) that used anything, then the totals."""
    tenant = answer.get("tenant", "?")
    buckets = answer.get("buckets") or []
    used = [b for b in buckets if any(b.get(key) for key in _SUMS)]
    if not used:
        say(f"no usage in tenant {tenant} since {timestamp(start.isoformat())}")
        return
    columns = ["START"] + ([split.upper().replace("_", " ")] if split else [])
    numbers = ("GPU h", "CPU h", "MEMORY GiB h")
    table = new_table(*columns, *numbers, right=numbers)
    for item in used:
        start_text = timestamp(item.get("start"))
        if not split:
            table.add_row(start_text, *(_hours(item.get(key)) for key in _SUMS))
            continue
        groups = sorted((item.get("groups") or {}).items())
        for index, (key, group) in enumerate(groups):
            row = [start_text if index == 0 else "", key]
            table.add_row(*row, *(_hours(group.get(name)) for name in _SUMS))
    totals = [sum(float(b.get(key) or 0) for b in used) for key in _SUMS]
    filler = [""] if split else []
    table.add_row(
        Text("total", style="bold"), *filler, *(Text(_hours(t), style="bold") for t in totals)
    )
    size = answer.get("bucket", "?")
    left_out = (
        f" ({len(buckets) - len(used)} without usage left out)" if len(used) < len(buckets) else ""
    )
    console.print(Text(f"usage of tenant {tenant} per {size}{left_out}", style="bold"))
    print_table(table)
