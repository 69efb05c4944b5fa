"""`up` after an outage converges, with the sidecars back at the hub by themselves (real engine,
real nats-server): the short set of issue 18's outages, once each. ``make outage``
(``benchmarks/outage.py``) runs the full sweep, ten times each, with the figures in docs/healing.md.

Each case asserts what the fixes promise, so that breaking one fails it: `up` exits 0; no sidecar
needed the restart rule (each logged in at the hub by itself within LEAF_GRACE of the hub being
proven); no sidecar went more than TRY_EVERY seconds without a new try while the hub was away
(a lookup of `bus` forwarded to resolvers that never answer takes ten); no sidecar tried a leaf
address other than bus:7422 (the hub advertises none); the stopped sidecar's component rejoined
without a restart; and everything was ok within BOUND seconds of the bus being proven (the goal is
3 s on a quiet machine; CI's shared cores get some slack).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nachos_deploy.core.catalog import Role
from nachos_deploy.io.stack import Stack, prepare
from nachos_deploy.lifecycle import up as lifecycle
from tests import outages

TRY_EVERY = 2.5  # seconds a sidecar may go without a new try at the hub while it is away
BOUND = 10.0  # seconds from the bus proven to every service ok (the goal, 3 s, is for a quiet machine)


@pytest.fixture(scope="module")
def stack(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("outage")
    stack = outages.make_stack(folder, f"ndt-outage-{uuid.uuid4().hex[:8]}", small=True)
    try:
        lifecycle.up(stack, timeout=120)
        yield stack
    finally:
        outages.remove(stack)


@pytest.mark.parametrize(
    ("kind", "seconds"), [("stop-bus", 5), ("kill-bus", 1), ("stop-sidecar", 2)], ids=str
)
def test_up_converges_after_an_outage(stack: Stack, kind: str, seconds: float) -> None:
    outcome = outages.outage(stack, kind, seconds)
    print(outcome)  # the figures, in the captured output
    assert outcome.ok, outcome.error
    assert outcome.strays == [], f"sidecars tried leaf addresses they cannot reach: {outcome.strays}"
    assert outcome.longest_try <= TRY_EVERY, f"a sidecar went {outcome.longest_try:.1f} s without a try"
    assert outcome.restarted == [], (
        f"up had to restart {outcome.restarted}: they did not come back by themselves"
    )
    assert outcome.after_proven is not None and outcome.after_proven <= BOUND, outcome
    # Its component's tries at the stopped sidecar failed at once (connection refused, or a lookup
    # failing within a second), none stuck until the client's own 2 s timeout.
    stuck = [error for error in outcome.component_errors if "Timeout" in error]
    assert stuck == [], f"the component's tries waited out its timeout: {outcome.component_errors}"


def test_the_rendered_files_keep_the_sidecars_reconnect_short(tmp_path: Path) -> None:
    """The three settings behind a fast return, as rendered (no engine): the hub advertises no other
    leaf address, each sidecar's lookups fail within a second, and it tries again after 50 ms."""
    stack = outages.make_stack(tmp_path, "ndt-outage-render", small=True)
    leafnodes = stack.files["nats.conf"].split("leafnodes {", 1)[1].split("}", 1)[0]
    assert "no_advertise: true" in leafnodes
    for sidecar in stack.plan.sidecars:
        assert sidecar.service.dns == ("127.0.0.1",)
        assert sidecar.service.dns_options == ("timeout:1", "attempts:1")
        assert 'reconnect: "50ms"' in stack.files[sidecar.config_file]
    # A component on internal networks alone: its lookup of a stopped sidecar fails within a second
    # too. One with egress keeps the engine's forwarding to the host's resolvers.
    for component in stack.plan.components:
        if component.role is not Role.STATE:
            assert component.dns == ("127.0.0.1",) and component.dns_options == ("timeout:1", "attempts:1")
    written = outages.write_deploy_file(tmp_path, "ndt-outage-egress", small=True)
    document = yaml.safe_load(written.read_text())
    document["components"]["gateway"]["egress"] = True
    (tmp_path / "egress.yaml").write_text(yaml.safe_dump(document))
    egress = prepare(tmp_path / "egress.yaml", cwd=tmp_path, environ={}).plan.component("gateway")
    assert egress.dns == () and egress.dns_options == ()
