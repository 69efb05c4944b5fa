"""Measure how long the command line takes, in fresh processes, against the targets: `--help` and
`up --help` 0.1 s, `render` of compose/full 0.25 s, `render` of 500 components 1 s (and linear).

Each figure is the median wall time of --runs runs of the installed `nachos-deploy` (subprocess,
output discarded), with the median CPU time (user + system) of the same runs beside it: on a busy
machine wall time also counts waiting for a CPU. Every `render` writes into a new empty folder, so it
writes every file (N components make N + 5 files: their creation is system time). Plain `python`,
`import typer` and `import typer, pydantic` are measured too: a floor no change here can go under
(Typer 0.29 loads pydantic to convert the option values of any subcommand; nachos-deploy makes that
lazy, so `up --help`, which is given none, no longer imports it).
The generated deploy files hold N extras (`image: nachos-deploy/probe:latest`), each with its bus
sidecar, as the defaults deploy them. No pass/fail: compare with the targets. Usage:

    .venv/bin/python benchmarks/cli_speed.py [--runs 7]

nachos_deploy is byte-compiled first, as an installed wheel is (with PYTHONDONTWRITEBYTECODE set, its
changed modules would otherwise be compiled from source on every start).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT / "compose" / "full" / "nachos-deploy.yaml"
PROBE = "nachos-deploy/probe:latest"
SIZES = (100, 250, 500)


def cli() -> list[str]:
    """The installed console script beside this interpreter, else `python -m nachos_deploy`."""
    script = Path(sys.executable).parent / "nachos-deploy"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "nachos_deploy"]


def deploy_file(folder: Path, count: int) -> Path:
    path = folder / f"components-{count}.yaml"
    lines = [f"project: bench-cli-{count}", "components:"]
    lines += [f"  probe-{index:03d}: {{image: {PROBE}}}" for index in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def fixed(args: list[str]) -> Callable[[Path], list[str]]:
    return lambda _output: args


def render_into(base: list[str], config: Path) -> Callable[[Path], list[str]]:
    return lambda output: [*base, "render", "-c", str(config), "-o", str(output)]


def measure(
    command: Callable[[Path], list[str]], runs: int, scratch: Path
) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``runs`` runs; ``command`` gets a new empty folder's path each run."""
    walls, cpus = [], []
    for index in range(runs):
        output = scratch / f"out-{index}"
        args = command(output)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            args, cwd=scratch, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
        )
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            sys.exit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
        shutil.rmtree(output, ignore_errors=True)
    return walls, cpus


def show(name: str, walls: list[float], cpus: list[float], target: float | None) -> float:
    """One line: median wall, the target, median CPU, every run's wall time; returns the median."""
    median = statistics.median(walls)
    goal = f"{target:.2f} s" if target is not None else ""
    runs = " ".join(f"{t:.3f}" for t in sorted(walls))
    print(f"{name:<36} {median:>6.3f} s  {goal:>6}  {statistics.median(cpus):>6.3f} s  {runs}")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    base = cli()
    python = sys.executable

    # Byte-compiled first, as an installed wheel is: with PYTHONDONTWRITEBYTECODE set (as on these
    # machines), a changed module would otherwise be compiled on every start (~30 ms).
    subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "nachos_deploy")], check=True)
    print(f"{'measurement':<36} {'median':>8}  {'target':>6}  {'cpu':>8}  wall of each run (s)")

    with tempfile.TemporaryDirectory(prefix="nachos-cli-speed-") as tmp:
        scratch = Path(tmp)
        floors: list[tuple[str, list[str]]] = [
            ("floor: python -c pass", [python, "-c", "pass"]),
            ("floor: python -c 'import typer'", [python, "-c", "import typer"]),
            ("floor: ... 'import typer, pydantic'", [python, "-c", "import typer, pydantic"]),
        ]
        for name, floor in floors:
            show(name, *measure(fixed(floor), args.runs, scratch), None)

        cases: list[tuple[str, Callable[[Path], list[str]], float | None]] = [
            ("nachos-deploy --help", fixed([*base, "--help"]), 0.1),
            ("nachos-deploy up --help", fixed([*base, "up", "--help"]), 0.1),
            ("render compose/full", render_into(base, FULL), 0.25),
        ]
        for name, command, target in cases:
            show(name, *measure(command, args.runs, scratch), target)

        rendered: dict[int, float] = {}
        for count in SIZES:
            command = render_into(base, deploy_file(scratch, count))
            target = 1.0 if count == 500 else None
            rendered[count] = show(
                f"render {count} components", *measure(command, args.runs, scratch), target
            )

    low, middle, high = SIZES
    per_component = (rendered[high] - rendered[low]) / (high - low)
    startup = rendered[low] - per_component * low
    print(
        f"\nlinearity: {per_component * 1000:.2f} ms per component from {low} to {high} "
        f"(start-up ~{startup:.3f} s); {middle} components predicted "
        f"{startup + per_component * middle:.3f} s, measured {rendered[middle]:.3f} s"
    )


if __name__ == "__main__":
    main()
