"""`backup` and `restore`: one archive of everything the stack keeps, and the stack back from it."""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import err, out, print_json
from nachos_deploy.interfaces.cli.guard import JsonCommand, handle_errors, load_running, load_stack
from nachos_deploy.interfaces.cli.options import ConfigOpt, JsonOpt, OutputOpt, ProjectOpt, SetOpt


def _say(text: str) -> None:
    """A progress line on stderr: a backup or restore of a large stack takes minutes."""
    err.print(f"... {text}", markup=False)


@app.command(cls=JsonCommand)
@handle_errors
def backup(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    json_: JsonOpt = False,
    to: Annotated[
        Path | None,
        typer.Option(
            "--to", metavar="FILE", help="The archive to write (default: nachos-backup-<project>-<time>.tar)."
        ),
    ] = None,
    with_credentials: Annotated[
        bool,
        typer.Option(
            "--with-credentials", help="Also put the bus's and the state store's passwords in the archive."
        ),
    ] = False,
) -> None:
    """Write one archive (tar) of everything the running stack keeps, while it keeps running: every
    JetStream stream (the server's snapshot API), the gateway's SQLite database (SQLite's online
    backup), the state store's data (an RDB snapshot), and the components' state folders. Its
    manifest.json records what each part holds and a SHA-256 of every member. Credentials are left
    out unless --with-credentials. Nothing is written when it fails (docs/backup.md).

    Example: nachos-deploy backup --to /backups/nachos.tar
    """
    from nachos_deploy.interfaces import api

    stack = load_running(config, set_, project, output, "backup")
    result = api.backup(stack, to=to, with_credentials=with_credentials, progress=_say)
    if json_:
        print_json({"ok": True, **result.as_json()})
        return
    streams = result.manifest.get("streams") or {}
    out.print(f"Wrote {result.path} ({result.size / 1e6:.1f} MB) in {result.seconds:.1f} s:")
    for name, doc in streams.items():
        out.print(f"  stream {name}: {_stream_line(doc)}")
    database = result.manifest.get("database")
    if database:
        rows = ", ".join(f"{t} {n}" for t, n in database["rows"].items())
        out.print(
            f"  gateway database: {database['page_count']} pages, {database['integrity_check']}, rows: {rows}"
        )
    store = result.manifest.get("state_store")
    if store:
        out.print(f"  state store: {store['keys']} keys")
    for volume in result.manifest.get("volumes") or {}:
        out.print(f"  state folder {volume}")
    if not result.manifest.get("credentials"):
        out.print("Credentials were left out (--with-credentials puts them in).")


@app.command(cls=JsonCommand)
@handle_errors
def restore(
    archive: Annotated[Path, typer.Argument(metavar="FILE", help="An archive written by `backup`.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    json_: JsonOpt = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete the project's existing data volumes and restore.")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", help="Seconds for each `up` of the restore.", min=1),
    ] = 120.0,
) -> None:
    """Restore an archive into a project whose stack is down (or a new project, with -p): the
    archive is verified whole first (exit 9 naming the member that fails its checksum, nothing
    touched), existing data volumes are refused without --yes, then the volumes, the state store's
    data, the streams (through the bus's restore API), a full `up`, and a verification of every
    stream, the database and the store's keys against the manifest (exit 1 naming what differs).

    Example: nachos-deploy restore /backups/nachos.tar -p nachos-copy
    """
    from nachos_deploy.interfaces import api

    stack = load_stack(config, set_, project, output)
    result = api.restore(stack, archive, yes=yes, timeout=timeout, progress=_say)
    if json_:
        print_json({"ok": True, **result.as_json()})
        return
    out.print(f"Restored {archive} into project {result.project} in {result.seconds:.1f} s, and verified it:")
    for name, state in result.streams.items():
        out.print(f"  stream {name}: {_stream_line(state)}")
    if result.database:
        database = result.database
        out.print(f"  gateway database: integrity {database['integrity_check']}, rows {database['rows']}")
    if result.state_store:
        out.print(f"  state store: {result.state_store['keys']} keys")
    for volume in result.volumes:
        out.print(f"  state folder {volume}")


def _stream_line(state: Mapping[str, Any]) -> str:
    """A stream's state in words. An empty one by its last sequence alone: its first reads 0 in a
    stream that never held a message and last + 1 once restored, which says nothing to a reader."""
    if not state["messages"]:
        return f"empty (last sequence {state['last_seq']})"
    return f"{state['messages']} messages, sequences {state['first_seq']}..{state['last_seq']}"
