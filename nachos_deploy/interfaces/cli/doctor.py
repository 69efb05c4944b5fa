"""`doctor`: is this machine ready for a deployment? Each check passes, warns or fails with a fix."""

import typer

from nachos_deploy.core.errors import ExitCode
from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import out, print_json
from nachos_deploy.interfaces.cli.guard import JsonCommand, handle_errors
from nachos_deploy.interfaces.cli.options import ConfigOpt, JsonOpt, OutputOpt, ProjectOpt, SetOpt


@app.command(cls=JsonCommand)
@handle_errors
def doctor(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check this machine for a deployment: the configuration, the Docker engine and its version,
    Compose v2, healthcheck start_interval support (Engine 25+), free disk, whether every image is on
    the engine (and, with nachos-deploy.lock, the locked ones), whether the configured host ports are
    free, and whether a host account has a uid the containers run under (it could read their
    secrets). Each check passes, warns or fails with a fix; any failure exits 1.

    Example: nachos-deploy doctor --json
    """
    from nachos_deploy.interfaces import api, report

    checks = api.doctor(config, sets=set_ or (), project=project, output=output)
    failed = any(check.level == "fail" for check in checks)
    if json_:
        print_json({"ok": not failed, "checks": [c.as_json() for c in checks]})
    else:
        report.print_checks(out, checks)
    if failed:
        raise typer.Exit(int(ExitCode.FAILED))
