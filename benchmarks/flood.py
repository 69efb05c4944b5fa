"""A channel flooding the bus from inside its container, 30 s per attack (`make flood`; issue 19, attack 3).

One stack (the probe gateway, llm-proxy and the webchat channel, each behind its sidecar with the
default limits, its own project and engine-picked ports). First the anchor: ``--seconds`` with no
flood. Then each attack of tests/flooder.py, run inside the webchat container on its own sidecar:
16-byte messages as fast as it can on its inbound subject (which the gateway subscribes to), 10 MB
messages, 1,500 connections, 20,000 queue subscriptions. Meanwhile the host sends
``nachos.gateway.subagents.list`` requests to the gateway through the hub, ``--rate`` a second.
Prints, per round: OOM kills per service, gateway requests sent and answered (within 5 s), their
p99, the peak memory per service (``docker stats``, sampled), and what the flooder got through.
The goal: no OOM kill outside the flooding channel's own sidecar, every request answered. Usage:

    .venv/bin/python benchmarks/flood.py [--seconds 30] [--rate 20] [--modes small,big,conns,subs]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: tests.floods

from nachos_deploy.interfaces import api
from tests import floods

WHAT = {
    "none": "no flood (the anchor)",
    "small": "16-byte messages, as fast as it can",
    "big": "10 MB messages",
    "conns": "1,500 connections",
    "subs": "20,000 queue subscriptions",
}


def flooder_summary(mode: str, flooder: dict[str, object]) -> str:
    errors = flooder.get("errors")
    refused = sum(errors.values()) if isinstance(errors, dict) else 0
    if mode == "small":
        sent = flooder.get("sent")
        seconds = flooder.get("seconds") or 1
        rate = sent / seconds if isinstance(sent, int) and isinstance(seconds, int | float) else 0
        return f"{sent} sent ({rate:,.0f}/s)"
    if mode == "big":
        return f"{flooder.get('sent')} sent, {refused} refused"
    if mode == "conns":
        return f"at most {flooder.get('most_open')} open, {refused} refused"
    if mode == "subs":
        return f"{flooder.get('sent')} asked, {refused} refused"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=20.0, help="gateway requests a second")
    parser.add_argument("--modes", default=",".join(floods.MODES))
    parser.add_argument(
        "--channel-cpus", type=float, help="the channel's sidecar CPU cap (default: its role's)"
    )
    parser.add_argument("--json", type=Path, help="also write every round to this file")
    args = parser.parse_args()
    rounds: list[floods.Round] = []
    with tempfile.TemporaryDirectory() as tmp:
        cpus = {"cpus": args.channel_cpus} if args.channel_cpus else None
        stack = floods.make_stack(Path(tmp), f"bench-flood-{uuid.uuid4().hex[:8]}", channel_sidecar=cpus)
        try:
            api.up(stack, timeout=180)
            url = floods.operator_url(stack)
            for mode in ["none", *args.modes.split(",")]:
                result = floods.run(stack.project, url, "webchat", mode, args.seconds, rate=args.rate)
                rounds.append(result)
                answered = f"{result.requests.sent} sent, {result.requests.answered} answered"
                print(
                    f"{mode}: {answered}, OOM kills {dict(result.kills) or 0}, {result.flooder}", flush=True
                )
        finally:
            api.down(stack, volumes=True)
    memory = "peak memory: channel's sidecar / gateway's sidecar / hub"
    print(f"\n| attack ({args.seconds:g} s) | OOM kills | requests answered | p99 | {memory} | flooder |")
    print("|---|---|---|---|---|---|")
    for result in rounds:
        kills = ", ".join(f"{name} {count}" for name, count in sorted(result.kills.items())) or "0"
        p99 = f"{result.requests.p99 * 1000:.0f} ms" if result.requests.p99 is not None else "-"
        memory = " / ".join(
            f"{result.memory.get(name, 0):.0f}" for name in ("bus-webchat", "bus-gateway", "bus")
        )
        print(
            f"| {WHAT[result.mode]} | {kills} | {result.requests.answered} of {result.requests.sent} | {p99} "
            f"| {memory} MiB | {flooder_summary(result.mode, result.flooder)} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "mode": r.mode,
                        "seconds": r.seconds,
                        "sent": r.requests.sent,
                        "answered": r.requests.answered,
                        "p99": r.requests.p99,
                        "failures": dict(r.requests.failures),
                        "oom_kills": dict(r.kills),
                        "memory_mib": r.memory,
                        "flooder": r.flooder,
                    }
                    for r in rounds
                ],
                indent=2,
            )
        )
    failed = [
        r.mode for r in rounds if r.requests.answered < r.requests.sent or set(r.kills) - {"bus-webchat"}
    ]
    if failed:
        print(f"\nGoal missed in: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
