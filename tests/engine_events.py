"""The engine's container events, streamed live while a command runs: the engine keeps only its last
256 events for a query of the past, and healthchecks fill that in seconds."""

from __future__ import annotations

import subprocess
import time


class LiveEvents:
    """``event`` (start, die, ...) of the containers carrying ``label``, each as the value of its
    ``attribute`` label, in the order they came."""

    def __init__(self, event: str, label: str, attribute: str) -> None:
        self.proc = subprocess.Popen(
            [
                "docker", "events", "--filter", "type=container", "--filter", f"event={event}",
                "--filter", f"label={label}", "--format", f'{{{{index .Actor.Attributes "{attribute}"}}}}',
            ],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.5)  # subscribed before anything happens

    def stop(self) -> list[str]:
        time.sleep(0.5)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return out.split()
