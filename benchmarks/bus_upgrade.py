"""A running 3-node bus upgraded by `up`, repeated: what a client of the host's one NATS URL sees.

The sequence of tests/test_bus_upgrade.py, ``--rounds`` times on one stack with a probe component:
a client on the host publishes to the audit stream with Nats-Msg-Id and requests the component
through its sidecar, while `up` applies a change that recreates the bus's nodes. Each round
alternates bus.max_pending (a change of the nodes' nats.conf alone); with ``--image``, a last round
also points bus.image at a new image built FROM nats:alpine with one extra file (removed at the end),
which recreates the forwarder (bus-ports) and the sidecars too, since they run the bus's image.

Per round it prints the `up` time, the time replacing the nodes, each node's time back, whether two
nodes were ever down together (the engine's events), acked, unsure and lost messages, and the
requests' blips (gaps over 0.5 s between answered requests). Exits 1 when an acked message was lost or
two nodes were down together. Usage:

    .venv/bin/python benchmarks/bus_upgrade.py [--rounds 3] [--image] [--every-url]

``--every-url`` gives the client every URL of the bus (NATS_SERVERS: the one URL, then each node's)
instead of the one URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests/

from tests.ports import free_port
from tests.test_audit import Stack, stored_ids
from tests.test_bus_upgrade import NodeEvents, Traffic, at_most_one_down, drive
from tests.test_lifecycle import PROBE
from tests.test_node_loss import CLUSTER

PENDING = ("48MB", "64MB")


def derived_image(tag: str, folder: Path) -> None:
    (folder / "upgrade-marker").write_text(tag)
    (folder / "Dockerfile").write_text("FROM nats:alpine\nCOPY upgrade-marker /upgrade-marker\n")
    subprocess.run(["docker", "build", "-q", "-t", tag, str(folder)], check=True, capture_output=True)


def one_round(stack: Stack, url: str | list[str], setting: str, prefix: str) -> dict[str, object]:
    traffic = Traffic()
    runner = threading.Thread(target=lambda: asyncio.run(drive(url, traffic, prefix)), daemon=True)
    runner.start()
    while not (traffic.answered and traffic.acked):
        time.sleep(0.1)
    events = NodeEvents(stack.project)
    began, epoch = time.monotonic(), time.time()
    done = stack.run("up", "--json", "--set", setting)
    ended = time.monotonic()
    seen = events.stop()
    time.sleep(1.0)
    traffic.stop.set()
    runner.join(timeout=15)
    if done.returncode != 0:
        raise SystemExit(f"up failed ({done.returncode}): {done.stdout}{done.stderr}")
    try:
        order = at_most_one_down(seen)
        overlap = False
    except AssertionError:
        order, overlap = [], True
    blips = traffic.blips(began, ended)
    return {
        "setting": setting,
        "up": ended - began,
        "phase": json.loads(done.stdout)["phases"].get("bus_upgrade", 0.0),
        "phases": json.loads(done.stdout)["phases"],
        "back": [float(s) for s in re.findall(r"is back \(([\d.]+) s\)", done.stderr)],
        "order": order,
        "overlap": overlap,
        "acked": traffic.acked,
        "unsure": traffic.unsure,
        "answered": len(traffic.answered),
        "failed": traffic.failed,
        "why": dict(traffic.why),
        "blips": blips,
        "events": ", ".join(f"{node} {action} {at - epoch:.1f}" for action, node, at in seen),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="configuration rounds (default 3)")
    parser.add_argument("--image", action="store_true", help="and a last round with a new bus image")
    parser.add_argument(
        "--every-url",
        action="store_true",
        help="the client gets every URL (the one URL, then each node's: NATS_SERVERS), not the one URL",
    )
    args = parser.parse_args()
    tag = f"nachos-test/bus-upgrade-{uuid.uuid4().hex[:8]}:1"
    with tempfile.TemporaryDirectory() as folder:
        stack = Stack(Path(folder), {"webchat": {"enabled": True, "image": PROBE, "egress": False}})
        document = yaml.safe_load(stack.file.read_text())
        # Ports of its own: a new image recreates the forwarder, and its URL must stay the same.
        document["bus"].update(CLUSTER["bus"], client_port=free_port(), monitor_port=free_port())
        stack.file.write_text(yaml.safe_dump(document))
        rounds = []
        failed = False
        try:
            result = stack.up()
            url = str(result["nats_url"])
            listed = result["nodes"]
            assert isinstance(listed, list)
            nodes = [str(node["nats_url"]) for node in listed]
            servers: str | list[str] = [url, *nodes] if args.every_url else url
            settings = [f"bus.max_pending={PENDING[i % 2]}" for i in range(args.rounds)]
            if args.image:
                (Path(folder) / "image").mkdir()
                derived_image(tag, Path(folder) / "image")
                settings.append(f"bus.image={tag}")
            acked_all: set[str] = set()
            for index, setting in enumerate(settings):
                extra = [s for s in settings[:index] if s.startswith("bus.image")]
                figures = one_round(stack, servers, setting, f"r{index}-")
                acked_all |= figures["acked"]  # type: ignore[arg-type]
                rounds.append(figures)
                blips = figures["blips"]
                total = sum(seconds for _, seconds in blips)  # type: ignore[attr-defined]
                print(
                    f"round {index + 1} ({setting}{', after ' + extra[0] if extra else ''}): up "
                    f"{figures['up']:.1f} s, nodes replaced in {figures['phase']:.1f} s "
                    f"(each back after {', '.join(f'{b:.1f}' for b in figures['back'])} s; order "  # type: ignore[attr-defined]
                    f"{figures['order']}; two down together: {figures['overlap']}), "
                    f"{len(figures['acked'])} acked, {len(figures['unsure'])} unsure, "  # type: ignore[arg-type]
                    f"{figures['answered']} requests answered, {figures['failed']} failed "
                    f"{figures['why']}, blips "
                    + ", ".join(f"{s:.2f} s at {at:.1f}" for at, s in blips)  # type: ignore[attr-defined]
                    + f" = {total:.2f} s\n    events: {figures['events']}\n    phases: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in figures["phases"].items()),  # type: ignore[attr-defined]
                    flush=True,
                )
                failed |= bool(figures["overlap"])
            ids = set(asyncio.run(stored_ids(url)))
            lost = acked_all - ids
            print(f"acked messages lost over {len(rounds)} rounds: {len(lost)} of {len(acked_all)}")
            failed |= bool(lost)
            config = [r for r in rounds if str(r["setting"]).startswith("bus.max_pending")]
            if config:
                totals = [sum(s for _, s in r["blips"]) for r in config]  # type: ignore[attr-defined]
                phases = [float(r["phase"]) for r in config]  # type: ignore[arg-type]
                print(
                    f"configuration rounds: nodes replaced in {min(phases):.1f} to {max(phases):.1f} s "
                    f"(median {statistics.median(phases):.1f}); requests unanswered "
                    f"{min(totals):.2f} to {max(totals):.2f} s in all per upgrade"
                )
        finally:
            stack.run("down", "--volumes", "--yes")
            subprocess.run(["docker", "image", "rm", "-f", tag], check=False, capture_output=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
