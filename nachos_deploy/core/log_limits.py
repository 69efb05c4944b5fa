"""Every container's log, bounded on the engine's disk (issue 19, attack 5).

Pure. Docker keeps a container's output for ever by default: a loop of refused publishes made a
sidecar log a line per publish and grew its log by 345 MB in 10 s. Each service therefore gets a
rotating driver from ``logging`` in the deploy file: at most ``max_file`` files of ``max_size``
each (``local`` compresses the rotated ones, so it usually takes less). Both drivers work on Compose
and Swarm (a service's ``logging`` key), and ``docker logs`` / ``nachos-deploy logs`` read both.
"""

from __future__ import annotations

from dataclasses import dataclass

from nachos_deploy.core.config import Logging


def docker_size(size: int) -> str:
    """A size as the engine's log options read it (k/m/g are powers of 1024 there)."""
    for suffix, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


@dataclass(frozen=True)
class LogPlan:
    driver: str = "local"
    max_size: int = 10 * 1024 * 1024
    max_file: int = 3

    @property
    def options(self) -> tuple[tuple[str, str], ...]:
        """The driver's options, as Compose and the stack file write them (strings)."""
        return (("max-size", docker_size(self.max_size)), ("max-file", str(self.max_file)))

    @property
    def bound(self) -> int:
        """The most one container's log may take on disk, in bytes."""
        return self.max_size * self.max_file


def plan(settings: Logging) -> LogPlan:
    return LogPlan(settings.driver, settings.max_size, settings.max_file)
