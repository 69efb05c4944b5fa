"""Typer's option coercion made lazy: an option that was not given costs nothing.

Typer (0.25 and later) coerces every option through a pydantic ``TypeAdapter``, and builds it for
each option of the command on every run, even for an option that was not given, whose value
(None) it then returns as it is. Building them, with pydantic's import, cost 0.1-0.14 s of every
command's start (``up --help`` imported pydantic for nothing). Here each option gets a stand-in
that builds Typer's own coercion on first use, so given options are coerced exactly as before; a
value it refuses is said in the words of the deploy file's errors (core/error_words.py).

It touches Typer's internals (``typer.core.build_runtime_param``), so pyproject.toml pins Typer to
the range it was tested on, and tests/test_cli.py fails when the patch is not in place (a Typer
without that function would otherwise run every command unchanged, only slower). Measured on Typer
0.29.2, median of 11 interleaved runs: `up --help` 89 ms with it, 173 ms without.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def install() -> None:
    """Make option coercion lazy, once; a no-op on a Typer that works otherwise."""
    try:
        from typer import core
        from typer._click.exceptions import BadParameter
        from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
    except ImportError:
        return
    if getattr(core, "build_runtime_param", None) is not build_runtime_param:
        return  # already lazy, or a Typer that builds its coercion some other way

    @dataclass(frozen=True)
    class Lazy(RuntimeParam):
        """Typer's coercion of one option, built when a value first needs it."""

        descriptor: TypeDescriptor
        built: list[RuntimeParam] = field(default_factory=list, compare=False, hash=False)  # once built

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if not self.built:
                self.built.append(build_runtime_param(self.descriptor))
            real = self.built[0]
            try:
                return real._coerce_value(value, param=param, ctx=ctx)
            except BadParameter as refused:
                _reword(refused)
                raise

    def lazy(descriptor: TypeDescriptor) -> RuntimeParam:
        return Lazy(descriptor.parameter_info, descriptor.annotation, descriptor)

    setattr(core, "build_runtime_param", lazy)  # noqa: B010 (not exported: mypy would refuse the name)


def _reword(refused: Exception) -> None:
    """An option's refusal in the words the deploy file's errors use ("must be at least 1 (got
    -1)"), not pydantic's ("Input should be greater than or equal to 1"): Typer's message is the
    first error of the ValidationError it raised from."""
    from pydantic import ValidationError

    from nachos_deploy.core.error_words import in_words
    from nachos_deploy.core.shown import given

    cause = refused.__cause__
    errors = cause.errors() if isinstance(cause, ValidationError) else []
    if errors and hasattr(refused, "message"):
        error = errors[0]
        message = in_words(error, ())
        refused.message = message + given(message, error.get("input"))
