"""Terminal output for people: tables and next steps. JSON output is built by the results themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from nachos_deploy.core.results import ServiceReport, StatusResult, StreamReport, UpResult, WebhookReport

if TYPE_CHECKING:
    from nachos_deploy.bus.bench import BenchResult
    from nachos_deploy.lifecycle.doctor import Check

_MARK = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}
_LEVEL = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}
# The host reads monitoring over NATS as the system user; the HTTP port is published only when asked.
_NOT_PUBLISHED = "not published (bus.publish_monitor: true publishes it)"


def _services_table(services: list[ServiceReport]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("service", "state", "health", "on the bus"):
        table.add_column(column)
    for service in services:
        state = Text(service.status, style="" if service.status == "running" else "red")
        name = f"{service.name} ({service.tool_id})" if service.tool_id else service.name
        if service.healed:
            state.append(" (restarted: it was off the bus)")
        table.add_row(
            Text(name), state, Text(service.health or "-"), Text.from_markup(_MARK[service.connected])
        )
    return table


def print_up(console: Console, result: UpResult, selector: str = "") -> None:
    """The summary; ``selector`` holds the -c/-p/-o options that name this stack in the next commands
    (always with -p: the project may have come from --set or the environment)."""
    console.print(_services_table(result.services))
    phases = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result.phases.items())
    console.print(f"Times: {phases}")
    if result.unchanged:
        console.print(
            "Nothing changed since the last up: Compose was not run; the stack was proven as it runs."
        )
    if result.upgraded:  # docs/upgrades.md
        replaced = ", ".join(f"{name} ({seconds:.1f}s)" for name, seconds in result.upgraded.items())
        console.print(f"Upgraded one at a time, each proven before the next: {replaced}", markup=False)
    if result.bus is not None and result.bus.round_trip_ms is not None:
        console.print(
            f"Bus: nats-server {result.bus.server_version}, JetStream on, max_payload "
            f"{result.bus.max_payload} bytes, round trip {result.bus.round_trip_ms:.2f} ms"
        )
    if result.audit is not None:
        console.print(f"Audit: {_stream(result.audit)} ({result.audit.action})", markup=False)
    for warning in result.warnings:
        console.print(f"Warning: {warning}", markup=False)
    console.print(f"NATS:       {result.endpoints.shown_nats_url}")
    if result.endpoints.ca_file:  # a tls:// URL: what its clients trust (bus.tls)
        console.print(f"CA file:    {result.endpoints.ca_file}", markup=False)
    console.print(f"Monitoring: {result.endpoints.shown_monitor_url or _NOT_PUBLISHED}")
    _print_webhooks(console, result.webhooks)
    cmd = "nachos-deploy"
    tail = f" {selector}" if selector else ""
    console.print(f"Project {result.project} is up.")
    talk = _request_hint(result.services)
    if talk:
        console.print(f"  talk to it:   {cmd} request {talk}{tail}")
    console.print(f"  check it:     {cmd} status{tail}")
    console.print(f"  its logs:     {cmd} logs -f{tail}")
    console.print(f"  remove it:    {cmd} down{tail}   (add --volumes --yes to delete its data)")


_PROOFS = {
    "meta-verification": "Meta's verification handshake",
    "slack-url-verification": "Slack's url_verification",
    "webchat-page": "a browser's GET of its page",
}


def _print_webhooks(console: Console, webhooks: list[WebhookReport]) -> None:
    """Each channel's public URL, to paste into its provider's console, and how its proof went."""
    if not webhooks:
        return
    console.print("Webhooks (the URL to register in each provider's console):")
    width = max(len(w.channel) for w in webhooks)
    for webhook in webhooks:
        if webhook.proof is None:
            said = "[dim]not proven: nothing upstream to prove it by[/]"
        elif webhook.unproven is not None:
            said = f"[yellow]not proven[/]: {escape(webhook.unproven)}"
        elif webhook.ok:
            took = f", {webhook.ms:.1f} ms" if webhook.ms is not None else ""
            said = f"[green]proven[/] ({_PROOFS.get(webhook.proof, webhook.proof)}{took})"
        else:
            said = f"[red]failed[/] ({escape(webhook.problem or '')})"
        console.print(f"  {escape(webhook.channel):<{width}}  {escape(webhook.url)}  {said}", markup=True)


def _stream(audit: StreamReport) -> str:
    return f"stream {audit.name}, {audit.messages} message(s), {audit.bytes} bytes"


def _request_hint(services: list[ServiceReport]) -> str | None:
    """A request the platform's own components answer (nothing upstream answers nachos.health.ping)."""
    names = {service.name for service in services}
    if "gateway" in names:
        return "nachos.gateway.subagents.list '{}'"
    if "llm-proxy" in names:
        return "nachos.llm.request '{}'"
    tool = next((service.tool_id for service in services if service.tool_id), None)
    return f"nachos.tool.{tool}.request '{{}}'" if tool else None


def print_status(console: Console, result: StatusResult) -> None:
    console.print(_services_table(result.services))
    if result.endpoints is not None:
        monitoring = result.endpoints.shown_monitor_url or _NOT_PUBLISHED
        console.print(f"NATS: {result.endpoints.shown_nats_url}   Monitoring: {monitoring}")
    if result.bus:
        memory = f"{result.bus_memory / 1024**2:.1f} MiB" if result.bus_memory else "unknown"
        jetstream = "on" if result.bus.get("jetstream") else "off"
        console.print(
            f"Bus: nats-server {result.bus.get('version')}, JetStream {jetstream}, "
            f"{result.bus.get('connections')} client connection(s), server memory {memory}"
        )
    if result.audit is not None:
        console.print(f"Audit: {_stream(result.audit)}", markup=False)
    _print_webhooks(console, result.webhooks)
    for problem in result.problems:
        console.print(f"[red]problem:[/] {escape(problem)}", markup=True)
    if result.ok:
        console.print(f"Project {result.project}: everything is running, healthy and on the bus.")


def print_checks(console: Console, checks: list[Check]) -> None:
    for check in checks:
        console.print(f"{_LEVEL[check.level]}  {escape(check.name)}: {escape(check.detail)}", markup=True)
        if check.fix and check.level != "pass":
            console.print(f"      fix: {escape(check.fix)}", markup=True)


def print_bench(console: Console, result: BenchResult) -> None:
    """The bench's tables; the bench module draws them, as it alone knows its measurements."""
    from nachos_deploy.bus import bench

    bench.print_result(console, result)
