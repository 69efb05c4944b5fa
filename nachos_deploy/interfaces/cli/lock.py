"""`lock` and `bundle save|load`: pinned images, and a stack carried to a machine with no registry
(docs/images.md)."""

import shlex
from pathlib import Path
from typing import Annotated

import typer

from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import err, out, print_json
from nachos_deploy.interfaces.cli.guard import JsonCommand, handle_errors, load_stack
from nachos_deploy.interfaces.cli.options import ConfigOpt, JsonOpt, OutputOpt, ProjectOpt, SetOpt


def _progress(text: str) -> None:
    """A line on stderr per step: saving and loading images can take minutes."""
    err.print(f"{text} ...", markup=False)


@app.command(cls=JsonCommand)
@handle_errors
def lock(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Record the image of every service the stack runs (the bus, its forwarder, the sidecars,
    volume-init, the components, the state store, the ingress) in nachos-deploy.lock beside the
    deploy file: its registry digest, or for an image built here its image id. With the lock there,
    `render` pins image@sha256 references where there is a digest, and `up`, `validate` and `doctor`
    refuse an image that differs from it (exit 4). An image not on the engine: exit 4, naming it.

    Example: nachos-deploy lock -c deploy/prod.yaml && git add deploy/nachos-deploy.lock
    """
    from nachos_deploy.interfaces import api

    stack = load_stack(config, set_, project, output, strict_lock=False)  # a broken lock is rewritten
    result = api.lock_images(stack)
    if json_:
        print_json({"ok": True, **result.as_json()})
        return
    state = "written" if result.changed else "unchanged"
    out.print(f"Image lock {result.path} {state}:", markup=False)
    for name, entry in sorted(result.lock.services.items()):
        pin = f"digest {entry.digest}" if entry.digest else f"id {entry.image_id} (no registry digest)"
        out.print(f"  {name}: {entry.image} {pin}", markup=False)
    out.print("Run `nachos-deploy render` (or `up`) to use it; commit it with the deploy file.")


bundle_app = typer.Typer(
    help="A stack's images, image lock and rendered files in one file, for a machine with no registry.",
    no_args_is_help=True,
)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("save", cls=JsonCommand)
@handle_errors
def save(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The bundle to write (a tar).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write the stack's images (`docker save`), its image lock, the rendered files, the deploy file
    and a manifest with the sha256 of every member into FILE, in one rename. With a lock beside the
    deploy file, the images must match it (else exit 4); without one, a lock of the present images
    is made for the bundle only.

    Example: nachos-deploy bundle save nachos-1.4.tar -c deploy/prod.yaml
    """
    from nachos_deploy.interfaces import api

    stack = load_stack(config, set_, project, output)
    result = api.bundle_save(stack, file, progress=_progress)
    if json_:
        print_json({"ok": True, **result.as_json()})
        return
    where = "the lock beside the deploy file" if result.lock_from_deploy_folder else "a lock made for it"
    out.print(
        f"Bundle {result.path}: {len(result.images)} images, {where}, the rendered files; "
        f"{result.size / 1024**2:.1f} MiB in {result.seconds:.1f} s.",
        markup=False,
    )
    out.print(f"sha256 {result.sha256}", markup=False)
    out.print(f"On the other machine: nachos-deploy bundle load {shlex.quote(result.path.name)} --to DIR")


@bundle_app.command("load", cls=JsonCommand)
@handle_errors
def load(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A bundle made by `bundle save`.")],
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            metavar="DIR",
            help="Write the bundle's lock, deploy file (unless DIR has one) and rendered files "
            "(DIR/rendered).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Check the sha256 of every member of FILE against its manifest before loading anything (a
    damaged bundle: exit 9, naming the member), then `docker load` its images and check each against
    the bundle's lock. Needs no registry.

    Example: nachos-deploy bundle load nachos-1.4.tar --to /srv/nachos
    """
    from nachos_deploy.interfaces import api

    result = api.bundle_load(file, to=to, progress=_progress)
    if json_:
        print_json({"ok": True, **result.as_json()})
        return
    out.print(
        f"Loaded {len(result.images)} images from {result.path}, each the one its lock names "
        f"({result.services} services), in {result.seconds:.1f} s.",
        markup=False,
    )
    if result.unpinned:
        out.print(
            f"This engine keeps no registry digest through docker load: {', '.join(result.unpinned)} "
            "are held to their image id instead (the lock written with --to says so).",
            markup=False,
        )
    if to is not None:
        out.print(f"Wrote into {to}: {', '.join(result.written)}.", markup=False)
        if result.replaced_lock:  # loading a bundle installs its version: said, never a surprise
            out.print(
                f"The nachos-deploy.lock that was in {to} pinned other images; the bundle's replaces it.",
                markup=False,
            )
        out.print(f"Next: nachos-deploy up -c {shlex.quote(str(to / 'nachos-deploy.yaml'))}", markup=False)
    else:
        out.print(
            "Next: put the bundle's nachos-deploy.lock beside your deploy file (or load again with "
            "--to DIR) and run `nachos-deploy up`."
        )
