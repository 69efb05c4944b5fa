"""Typer's option coercion made lazy: an option that was not given costs nothing.

Typer (0.25 and later) coerces every option through a pydantic ``TypeAdapter``, and builds it for
each option of the command on every run, even for an option that was not given, whose value
(None) it then returns as it is. Building them, with pydantic's import, cost 0.1-0.14 s of every
command's start (``up --help`` imported pydantic for nothing). Here each option gets a stand-in
that builds Typer's own coercion on first use, so given options are coerced exactly as before.

It touches Typer's internals (``typer.core.build_runtime_param``), so pyproject.toml pins Typer to
the range it was tested on, and tests/test_cli.py fails when the patch is not in place (a Typer
without that function would otherwise run every command unchanged, only slower). Measured on Typer
0.29.2, median of 11 interleaved runs: `up --help` 89 ms with it, 173 ms without.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def install() -> None:
    """Make option coercion lazy, once; a no-op on a Typer that works otherwise."""
    try:
        from typer import core
        from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
    except ImportError:
        return
    if getattr(core, "build_runtime_param", None) is not build_runtime_param:
        return  # already lazy, or a Typer that builds its coercion some other way

    @dataclass(frozen=True)
    class Lazy(RuntimeParam):
        """Typer's coercion of one option, built when a value first needs it."""

        descriptor: TypeDescriptor

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            real = build_runtime_param(self.descriptor)
            param._runtime_param = real  # the next value goes straight to it
            return real._coerce_value(value, param=param, ctx=ctx)

    def lazy(descriptor: TypeDescriptor) -> RuntimeParam:
        return Lazy(descriptor.parameter_info, descriptor.annotation, descriptor)

    setattr(core, "build_runtime_param", lazy)  # noqa: B010 (not exported: mypy would refuse the name)
