"""The one domain error type and the documented exit codes.

Every failure a user can cause or meet is a :class:`DeployError` carrying its exit code; the CLI turns
it into one message and that code in a single place, so no user error ends in a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes, documented in docs/exit-codes.md; scripts rely on them."""

    OK = 0
    FAILED = 1  # a check did not pass: render --check differs, status unhealthy, doctor failed
    USAGE = 2  # bad command line (Typer/Click's own code)
    CONFIG = 3  # the deploy file, nachos.toml, an override or --set is invalid
    ENVIRONMENT = 4  # Docker engine or Compose v2 missing or unreachable, or an image is missing
    BUS = 5  # the bus did not become healthy; no component was started
    COMPONENT = 6  # a component did not come up running, healthy and on the bus
    OUTPUT = 7  # the output folder could not be written
    WEBHOOK = 8  # a webhook route did not pass its proof from the host (the provider's own call)
    ARCHIVE = 9  # a backup archive or an image bundle is unreadable, incomplete or fails its checksums
    INTERRUPTED = 130
    PIPE_CLOSED = 141  # stdout's reader closed it (`| head`): 128 + SIGPIPE, as a Unix tool killed by it


class DeployError(Exception):
    """A failure with a user-facing message (one paragraph: what, where, how to fix) and an exit code."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(
        self,
        message: str,
        *,
        exit_code: ExitCode | None = None,
        details: str = "",
        fields: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # More of the failure for `--json` (e.g. a failed upgrade's "rolled_back"), beside "error".
        self.fields: Mapping[str, object] = dict(fields or {})
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(DeployError):
    exit_code = ExitCode.CONFIG


class EnvironmentProblem(DeployError):
    exit_code = ExitCode.ENVIRONMENT


class BusFailure(DeployError):
    exit_code = ExitCode.BUS


class ComponentFailure(DeployError):
    exit_code = ExitCode.COMPONENT


class OutputError(DeployError):
    exit_code = ExitCode.OUTPUT


class WebhookFailure(DeployError):
    """The stack runs, but a provider calling a channel's public webhook URL would not get through."""

    exit_code = ExitCode.WEBHOOK


class ArchiveError(DeployError):
    """A backup archive or an image bundle that cannot be trusted: unreadable, incomplete, or altered."""

    exit_code = ExitCode.ARCHIVE


def typed(message: str, exit_code: ExitCode, *, details: str = "") -> DeployError:
    """The error class that goes with an exit code, so that API callers can catch by type."""
    kinds: dict[ExitCode, type[DeployError]] = {
        ExitCode.CONFIG: ConfigError,
        ExitCode.ENVIRONMENT: EnvironmentProblem,
        ExitCode.BUS: BusFailure,
        ExitCode.COMPONENT: ComponentFailure,
        ExitCode.OUTPUT: OutputError,
        ExitCode.WEBHOOK: WebhookFailure,
        ExitCode.ARCHIVE: ArchiveError,
    }
    kind = kinds.get(exit_code)
    if kind is None:
        return DeployError(message, exit_code=exit_code, details=details)
    return kind(message, details=details)
