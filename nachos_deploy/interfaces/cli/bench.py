"""`bench`: measure the running stack's bus (or any bus at a URL) against the platform's targets."""

from typing import Annotated

import typer

from nachos_deploy.core.errors import DeployError, ExitCode
from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import err, out, print_json
from nachos_deploy.interfaces.cli.guard import JsonCommand, handle_errors, load_running
from nachos_deploy.interfaces.cli.options import ConfigOpt, JsonOpt, OutputOpt, ProjectOpt, SetOpt


@app.command(cls=JsonCommand)
@handle_errors
def bench(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="NATS_URL",
            help="Measure the bus at this URL (with its credentials, if any) instead of the running "
            "stack's; the deploy file is not read. A tls:// URL's server is checked against the CA "
            "in $NATS_CA_FILE when set (as `nachos-deploy env` prints it), else the system's.",
            show_default=False,
        ),
    ] = None,
    monitor_url: Annotated[
        str | None,
        typer.Option(
            "--monitor-url",
            metavar="URL",
            help="With --url: the bus's monitoring, for its memory and CPU (not measured without): its "
            "HTTP URL, or a nats:// URL of a system-account user.",
            show_default=False,
        ),
    ] = None,
    duration: Annotated[
        float,
        typer.Option(
            "--duration",
            metavar="SECONDS",
            help="Seconds of measurements, at least 0.5; connecting and clean-up add a second or two.",
            min=0.5,
            clamp=True,
        ),
    ] = 5.0,
    json_: JsonOpt = False,
) -> None:
    """Measure the running stack's bus (or the one at --url) against the platform's targets, within
    about --duration seconds plus a second or two to connect and clean up:

    - request/reply latency (p50, p90, p99, max) and requests/s, one request in flight, echoed by a
      responder on a second connection, for 128 B, 1 KiB, 64 KiB and max_payload payloads (half the
      time; max_payload last, as it holds the bus's memory up for minutes);
    - the core publish rate of 128-byte messages and how many a subscriber got (a quarter);
    - the JetStream acked publish rate into a scratch memory stream, deleted afterwards whatever
      happens (a quarter; not measured when JetStream is off);
    - the bus's memory from its monitor's /varz before the load, after each phase, at rest half a
      second after the typical load, and at its peak during the max_payload phase; its highest CPU.

    Targets: request/reply p99 of 128 B below 10 ms; bus memory below 50 MiB (50 * 1024 * 1024
    bytes) with the platform's typical messages (up to 64 KiB: the highest reading from idle through
    the JetStream phase) and at rest after that load; the max_payload phase's peak below the at-rest
    reading plus 6 x max_payload (about four copies of each message in flight are in the server).
    Without a monitor URL the memory targets are "not measured", not missed.

    --json prints one object: ok, nats_url and monitor_url (no password), server_version, max_payload,
    duration_s, elapsed_s, request_reply (a list of size, requests, p50_ms, p90_ms, p99_ms, max_ms,
    requests_per_s), publish (size, messages, seconds, msgs_per_s, mib_per_s, delivered), jetstream
    (the same, or null) with jetstream_note (why it is null), memory_bytes (the highest reading),
    memory_idle_bytes, memory_typical_bytes, memory_rest_bytes, memory_max_payload_bytes and
    memory_max_payload_bound_bytes (null without a phase above 64 KiB), memory_phases (a list of
    phase, load: idle, typical, rest or max_payload, and bytes), memory_note (set when the bus held
    50 MiB before the load: memory kept from earlier large messages), cpu_percent, and targets (a list of
    name, target, limit, unit, measured, ok: true, false, or null when not measured). On an error:
    ok false, exit_code and error.

    Exit codes: 0 every target met, 1 a target missed (or the bus is not running, or failed during
    the run), and the other commands' codes for the configuration and the engine.

    Example: nachos-deploy bench --duration 10 --json
    """
    from nachos_deploy.interfaces import api

    if monitor_url is not None and url is None:
        raise DeployError(
            "--monitor-url goes with --url; without --url the running stack's monitor is used.",
            exit_code=ExitCode.USAGE,
        )
    max_payload: int | None = None
    if url is None:
        stack = load_running(config, set_, project, output, "bench")
        endpoints = api.endpoints(stack)
        url, monitor_url = endpoints.nats_url, endpoints.monitor_url
        max_payload = stack.plan.bus.max_payload
    if json_:
        result = api.bench(url, monitor_url, duration=duration, max_payload=max_payload)
    else:
        with err.status(f"Measuring the bus for {duration:g}s", spinner="dots"):
            result = api.bench(url, monitor_url, duration=duration, max_payload=max_payload)
    if json_:
        print_json(result.as_json())
    else:
        from nachos_deploy.interfaces import report

        report.print_bench(out, result)
    if not result.ok:
        raise typer.Exit(int(ExitCode.FAILED))
