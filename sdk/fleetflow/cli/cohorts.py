"""`fleetflow admin cohorts …`: cohorts of tenants that lend each other idle GPU quota, their
members' nominal quotas and borrowing limits, the preemption policy (platform admins). Every
command is a thin layer over a `fleetflow.Client` method; a tenant's own view of its cohort is
`fleetflow quota` and the usage API's `GET /api/v1/cohort` (`client.usage.cohort()`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from fleetflow.cli.common import (
    JSON_OPTION,
    CommandUsageError,
    api_json,
    new_table,
    print_table,
    say,
    show,
)

if TYPE_CHECKING:
    from fleetflow.client import Client

cohorts_app = typer.Typer(
    help="Cohorts: tenants lending each other idle GPU quota, nominal quotas and borrowing "
    "limits per GPU type, preemption policy and grace.",
    no_args_is_help=True,
)

_COHORT = typer.Argument(..., metavar="COHORT", help="The cohort's name.", show_default=False)
_TENANT = typer.Argument(..., metavar="TENANT", help="The tenant's name.", show_default=False)
_GRACE_HELP = (
    "Seconds a preempted attempt has between SIGTERM and the kill, to checkpoint and exit "
    "(0-3600; a pod's termination grace period)."
)


def parse_shares(values: list[str] | None) -> dict[str, tuple[int, int | None]]:
    """`H100=8` (nominal 8, unlimited borrowing) or `H100=8:4` (at most 4 borrowed); a
    malformed value is a usage error (exit 2), like the parser's own."""
    shares: dict[str, tuple[int, int | None]] = {}
    for value in values or []:
        gpu_type, sep, amounts = value.partition("=")
        nominal, colon, limit = amounts.partition(":")
        try:
            if not sep or not gpu_type.strip() or (colon and not limit):
                raise ValueError
            parsed = (int(nominal), int(limit) if colon else None)
        except ValueError:
            raise CommandUsageError(
                f"--gpu {value!r}: expected TYPE=NOMINAL or TYPE=NOMINAL:BORROWING_LIMIT "
                "(e.g. H100=8 or H100=8:4; no :LIMIT: it may borrow without limit)"
            ) from None
        if min(n for n in parsed if n is not None) < 0:
            raise CommandUsageError(
                f"--gpu {value!r}: GPU counts are 0 or more (nominal 0: it only borrows; "
                "borrowing limit 0: it never borrows)"
            )
        if gpu_type in shares:
            raise CommandUsageError(f"--gpu names {gpu_type} twice")
        shares[gpu_type] = parsed
    if not shares:
        raise CommandUsageError("name at least one GPU type: --gpu H100=8 (or H100=8:4)")
    return shares


def _share(share: dict[str, Any]) -> str:
    limit = share.get("borrowing_limit")
    return f"{share['nominal']} (borrow {'unlimited' if limit is None else limit})"


def _print_cohorts(cohorts: list[dict[str, Any]]) -> None:
    if not cohorts:
        say("no cohorts (fleetflow admin cohorts create NAME)")
        return
    table = new_table("COHORT", "GRACE", "TENANT", "NOMINAL (BORROWING LIMIT)", "PREEMPTS OWN")
    for cohort in cohorts:
        grace = f"{cohort.get('preemption_grace_seconds', 30)}s"
        if not cohort["members"]:
            table.add_row(cohort["name"], grace, "-", "-", "-")
        for m in cohort["members"]:
            shares = ", ".join(f"{t}: {_share(s)}" for t, s in sorted(m["shares"].items()))
            table.add_row(
                cohort["name"],
                grace,
                m["tenant"],
                shares,
                "yes" if m["preempt_within_tenant"] else "no",
            )
    print_table(table)


@cohorts_app.command("create", no_args_is_help=True)
def cohorts_create(
    ctx: typer.Context,
    name: str = _COHORT,
    grace: int = typer.Option(
        None, "--preemption-grace", metavar="SECONDS", help=_GRACE_HELP + " Default 30."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a cohort; then add tenants with `fleetflow admin cohorts set COHORT TENANT --gpu`."""
    show(
        ctx,
        lambda api: api.admin.create_cohort(name, preemption_grace_seconds=grace),
        as_json,
        lambda answer, _url: say(
            f"cohort {name} created (preemption grace {answer['preemption_grace_seconds']}s)"
        ),
    )


@cohorts_app.command("update", no_args_is_help=True)
def cohorts_update(
    ctx: typer.Context,
    name: str = _COHORT,
    grace: int = typer.Option(
        ..., "--preemption-grace", metavar="SECONDS", help=_GRACE_HELP, show_default=False
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Change a cohort's preemption grace (for attempts preempted from then on)."""
    show(
        ctx,
        lambda api: api.admin.update_cohort(name, preemption_grace_seconds=grace),
        as_json,
        lambda answer, _url: say(
            f"cohort {name}: preemption grace {answer['preemption_grace_seconds']}s"
        ),
    )


@cohorts_app.command("list")
def cohorts_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every cohort and its members: nominal GPUs and borrowing limits per type."""
    show(
        ctx,
        lambda api: api.admin.list_cohorts(),
        as_json,
        lambda answer, _url: _print_cohorts(answer),
    )


@cohorts_app.command("delete", no_args_is_help=True)
def cohorts_delete(ctx: typer.Context, name: str = _COHORT, as_json: bool = JSON_OPTION) -> None:
    """Delete a cohort and its memberships (running work goes on, no longer preemptible)."""
    show(
        ctx,
        lambda api: api.admin.delete_cohort(name),
        as_json,
        lambda _answer, _url: say(f"cohort {name} deleted"),
    )


@cohorts_app.command("set", no_args_is_help=True)
def cohorts_set(
    ctx: typer.Context,
    cohort: str = _COHORT,
    tenant: str = _TENANT,
    gpu: list[str] = typer.Option(
        None,
        "--gpu",
        metavar="TYPE=N[:B]",
        help="Nominal GPUs of a type, and optionally the most it may borrow beyond them "
        "(H100=8, H100=8:4); repeat for more types.",
        show_default=False,
    ),
    preempt_within_tenant: bool = typer.Option(
        False,
        "--preempt-within-tenant/--no-preempt-within-tenant",
        help="Whether the tenant's higher-priority work may preempt its lower-priority work.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Make TENANT a member of COHORT (replacing its membership, here or elsewhere)."""
    shares = parse_shares(gpu)
    moved_from: list[str] = []  # a tenant is in one cohort: setting it elsewhere moves it

    def call(api: Client) -> Any:
        moved_from.extend(
            c["name"]
            for c in api_json(api.admin.list_cohorts())
            if c["name"] != cohort and any(m["tenant"] == tenant for m in c["members"])
        )
        return api.admin.set_cohort_member(
            cohort, tenant, shares, preempt_within_tenant=preempt_within_tenant
        )

    show(
        ctx,
        call,
        as_json,
        lambda answer, _url: say(
            f"tenant {tenant} in cohort {cohort}: "
            + ", ".join(f"{t} {_share(s)}" for t, s in sorted(answer["shares"].items()))
            + (", preempts its own lower-priority work" if preempt_within_tenant else "")
            + "".join(
                f" (moved from cohort {name}: a tenant is in one cohort)" for name in moved_from
            )
        ),
    )


@cohorts_app.command("remove", no_args_is_help=True)
def cohorts_remove(
    ctx: typer.Context, cohort: str = _COHORT, tenant: str = _TENANT, as_json: bool = JSON_OPTION
) -> None:
    """Take TENANT out of COHORT (it keeps its quota; it neither lends nor borrows)."""
    show(
        ctx,
        lambda api: api.admin.remove_cohort_member(cohort, tenant),
        as_json,
        lambda _answer, _url: say(f"tenant {tenant} is no longer in cohort {cohort}"),
    )
