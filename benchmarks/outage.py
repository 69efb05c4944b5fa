"""`up` after an outage of a running stack: the full sweep of issue 18 (`make outage`).

For each outage, ``--runs`` times on one stack (the demo's four probe components behind their
sidecars, its own project and engine-picked ports): ``docker stop`` of the hub for 5, 10, 15, 30
and 60 s, ``docker kill`` of the hub, ``docker stop`` of a sidecar (the gateway's) for 2 s; then
`up`. Prints, per outage: how many `up`s converged, the time from the bus proven to every service
ok (median and max), the runs that needed a restart by `up`, the runs in which a sidecar tried a
leaf address other than bus:7422 ("strays"), and the longest a sidecar went without a new try at the
hub while it was away ("longest gap"). The goal: 10/10 each, within 3 s of the bus being proven.
The scenarios are tests/outages.py's, which tests/test_outage.py runs once each in CI. Usage:

    .venv/bin/python benchmarks/outage.py [--runs 10] [--durations 5,10,15,30,60] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: tests.outages

from nachos_deploy.lifecycle import up as lifecycle
from tests import outages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--durations", default="5,10,15,30,60", help="seconds the hub stays stopped")
    parser.add_argument("--json", type=Path, help="also write every outcome to this file")
    args = parser.parse_args()
    plan = [("stop-bus", float(s)) for s in args.durations.split(",") if s]
    plan += [("kill-bus", 1.0), ("stop-sidecar", 2.0)]
    outcomes: list[outages.Outcome] = []
    with tempfile.TemporaryDirectory() as tmp:
        stack = outages.make_stack(Path(tmp), f"bench-outage-{uuid.uuid4().hex[:8]}")
        try:
            lifecycle.up(stack, timeout=120)
            for kind, seconds in plan:
                for run in range(args.runs):
                    began = time.monotonic()
                    outcome = outages.outage(stack, kind, seconds)
                    outcomes.append(outcome)
                    print(
                        f"{kind} {seconds:g} s, run {run + 1}: "
                        + (
                            f"ok, {outcome.after_proven:.2f} s after the bus was proven"
                            if outcome.ok
                            else "FAILED"
                        )
                        + (f", restarted {outcome.restarted}" if outcome.restarted else "")
                        + (f", tried {outcome.strays}" if outcome.strays else "")
                        + (f": {outcome.error}" if outcome.error else "")
                        + f" ({time.monotonic() - began:.1f} s in all)",
                        flush=True,
                    )
                    if not outcome.ok:  # leave it as up left it, then make it whole for the next run
                        lifecycle.up(stack, timeout=120)
        finally:
            outages.remove(stack)
    header = (
        "| outage | converged | after the bus was proven: median | max | restarted | strays | longest gap |"
    )
    print(f"\n{header}")
    print("|---|---|---|---|---|---|---|")
    for kind, seconds in plan:
        mine = [o for o in outcomes if o.kind == kind and o.seconds == seconds]
        times = [o.after_proven for o in mine if o.after_proven is not None]
        what = {
            "stop-bus": f"`docker stop` of the hub, {seconds:g} s",
            "kill-bus": "`docker kill` of the hub",
            "stop-sidecar": f"`docker stop` of a sidecar, {seconds:g} s",
        }[kind]
        print(
            f"| {what} | {sum(o.ok for o in mine)}/{len(mine)} | "
            + (f"{statistics.median(times):.2f} s | {max(times):.2f} s" if times else "- | -")
            + f" | {sum(bool(o.restarted) for o in mine)} | {sum(bool(o.strays) for o in mine)}"
            + f" | {max((o.longest_try for o in mine), default=0.0):.2f} s |"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))


if __name__ == "__main__":
    main()
