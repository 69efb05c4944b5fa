"""Each network's own small subnet of networks.pool (core/subnets.py, docs/networks.md), without an
engine: the same project gets the same subnets, no two networks of a stack overlap, a pool too small
is a configuration error naming the key, a block the engine's networks overlap moves the stack whole,
and a pool with no free block left names the networks in the way."""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path, PurePath

import pytest
import yaml

from nachos_deploy.core import subnets
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import INIT_NETWORK
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.core.render import render
from nachos_deploy.docker.parse import EngineNetwork
from nachos_deploy.io.loader import load
from nachos_deploy.targets import subnet_check

PROBE = "nachos-deploy/probe:latest"


def probes(count: int, **settings: object) -> dict[str, object]:
    return {f"p{index}": {"image": PROBE, "role": "channel", **settings} for index in range(count)}


def plan_of(data: dict[str, object]) -> Plan:
    return make_plan(
        DeployConfig.model_validate(data), base_dir=PurePath("/srv/app"), output_dir=PurePath("/srv/app/.n")
    )


def assigned(plan: Plan) -> dict[str, ipaddress.IPv4Network]:
    assert plan.subnets is not None
    return {name: ipaddress.IPv4Network(subnet) for name, subnet in plan.subnets.assigned}


def test_the_same_project_gets_the_same_subnets_and_another_project_others() -> None:
    first = plan_of({"project": "alpha", "components": probes(3)})
    again = plan_of({"project": "alpha", "components": probes(3)})
    other = plan_of({"project": "beta", "components": probes(3)})
    assert assigned(first) == assigned(again)
    assert assigned(first) != assigned(other)
    assert first.subnets is not None and other.subnets is not None
    assert first.subnets.block != other.subnets.block


@pytest.mark.parametrize("target", ["compose", "swarm"])
@pytest.mark.parametrize("count", [0, 1, 12, 24, 100])
def test_no_two_networks_of_a_stack_overlap_and_all_lie_in_the_block(target: str, count: int) -> None:
    plan = plan_of({"project": f"s{count}", "target": target, "components": probes(count)})
    nets = assigned(plan)
    assert plan.subnets is not None
    block = ipaddress.IPv4Network(plan.subnets.block)
    assert block.subnet_of(ipaddress.IPv4Network("172.16.0.0/16"))
    assert set(nets) >= {name for name, _ in plan.networks}
    if target == "swarm" and plan.prepared_volumes:
        assert INIT_NETWORK in nets
    ordered = sorted(nets.values())
    for one, two in itertools.pairwise(ordered):
        assert not one.overlaps(two), (one, two)
    assert all(net.subnet_of(block) for net in ordered)
    # Each network holds what is on it, with room: a component and its sidecar take a /29 (Compose)
    # or a /28 (Swarm), and the shared network holds every sidecar and the bus.
    link = nets["p0-link"] if count else nets["gateway-link"]
    assert link.prefixlen == (29 if target == "compose" else 28)
    on_internal = sum("nachos-internal" in s.networks for s in plan.services)
    assert nets["nachos-internal"].num_addresses - 3 >= 2 * on_internal


def test_adding_a_component_moves_no_component_network_and_a_grown_block_holds_the_old() -> None:
    """A moved network is a recreated one, with every container on it: while the stack's block
    holds it, a new component's network takes a free place and the others keep theirs; a stack
    that outgrows its block takes the block twice as large that holds the old one."""
    plans = [plan_of({"project": "grows", "components": probes(count)}) for count in range(1, 40)]
    grew = 0
    for before, after in itertools.pairwise(plans):
        assert before.subnets is not None and after.subnets is not None
        old, new = assigned(before), assigned(after)
        if before.subnets.block == after.subnets.block:
            links = [name for name in old if name.endswith("-link") and name != "bus-link"]
            assert {name: new[name] for name in links} == {name: old[name] for name in links}
        else:
            grew += 1
            assert ipaddress.IPv4Network(before.subnets.block).subnet_of(
                ipaddress.IPv4Network(after.subnets.block)
            )
    assert grew >= 2  # the case above was met


def test_the_network_every_sidecar_joins_keeps_its_subnet_while_components_are_added() -> None:
    """A moved nachos-internal is one Compose must remove with the bus and every sidecar on it (an
    `up` that added a component to a running stack failed so, "has active endpoints"): it starts
    large enough, in a block large enough, that adding components one by one, up to 13, moves no
    network at all."""
    plans = [plan_of({"project": "grows", "components": probes(count)}) for count in range(1, 14)]
    for before, after in itertools.pairwise(plans):
        old, new = assigned(before), assigned(after)
        assert {name: new[name] for name in old} == old


def test_a_pool_too_small_for_the_stack_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        plan_of({"project": "big", "networks": {"pool": "172.16.0.0/24"}, "components": probes(40)})
    message = info.value.message
    assert "networks.pool is 172.16.0.0/24" in message and "a /21" in message, message
    assert "larger range" in message


def test_the_whole_pool_may_be_one_stack_block() -> None:
    """A pool of exactly the block size (the fix a collision message gives) has one place to give."""
    default = plan_of({"project": "moved", "components": probes(2)})
    assert default.subnets is not None
    moved = plan_of({"project": "moved", "networks": {"pool": "10.77.2.0/23"}, "components": probes(2)})
    assert moved.subnets is not None and moved.subnets.block == "10.77.2.0/23"


@pytest.mark.parametrize(
    ("pool", "says"),
    [
        ("172.16.0.1/16", "bits set past its prefix length; the range it is in is 172.16.0.0/16"),
        ("banana", "is not an IPv4 range in CIDR form"),
        ("fd00::/64", "IPv6"),
        ("8.8.0.0/16", "is not a private range"),
        ("127.0.0.0/8", "is not a private range"),
        ("172.16.0.0/30", "too small"),
        ("12", "is not an IPv4 range"),
    ],
)
def test_an_invalid_pool_is_refused_naming_the_key(tmp_path: Path, pool: str, says: str) -> None:
    (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump({"networks": {"pool": pool}}))
    with pytest.raises(ConfigError) as info:
        load(cwd=tmp_path, environ={})
    message = " ".join(info.value.message.split())
    assert "networks.pool" in message and says in message, message


def test_docker_leaves_the_addresses_to_the_engine() -> None:
    plan = plan_of({"networks": {"pool": "docker"}})
    assert plan.subnets is None
    assert "ipam" not in render(plan)["docker-compose.yml"]


@pytest.mark.parametrize("target", ["compose", "swarm"])
def test_every_rendered_network_has_its_subnet(target: str) -> None:
    plan = plan_of({"project": "rendered", "target": target, "components": probes(2)})
    files = render(plan)
    names = ["docker-stack.yml", "docker-stack.bus.yml"] if target == "swarm" else ["docker-compose.yml"]
    nets = assigned(plan)
    for name in names:
        networks = yaml.safe_load(files[name])["networks"]
        assert networks, name
        for network, spec in networks.items():
            expected = {"subnet": str(nets[network])}
            if target == "compose":  # the bridge's address, listed by inspect for the host firewall
                expected["gateway"] = str(next(nets[network].hosts()))
            assert spec["ipam"] == {"config": [expected]}, (name, network)


def _in(subnets_: subnets.Subnets, block: str) -> bool:
    return all(ipaddress.IPv4Network(s).subnet_of(ipaddress.IPv4Network(block)) for _, s in subnets_.assigned)


def test_a_free_drawn_block_is_kept_and_a_taken_one_moves_whole_to_a_free_block() -> None:
    plan = plan_of({"project": "clash", "components": probes(2)})
    planned = plan.subnets
    assert planned is not None
    own = subnet_check.own_networks(plan)
    elsewhere = [("bridge", ("172.17.0.0/16",)), ("v6", ("fd00::/64",)), ("odd", ("not-a-subnet",))]
    assert subnets.settle("clash", planned, own, elsewhere) == planned
    # Another network anywhere in the block (not only on a planned subnet): the stack grows there.
    block = ipaddress.IPv4Network(planned.block)
    corner = ("other_stuff", (str(list(block.subnets(new_prefix=30))[-1]),))
    moved = subnets.settle("clash", planned, own, [*elsewhere, corner])
    assert moved is not None and moved.block != planned.block
    assert _in(moved, moved.block) and not ipaddress.IPv4Network(moved.block).overlaps(block)
    shift = int(ipaddress.IPv4Network(moved.block).network_address) - int(block.network_address)
    for (name, before), (same, after) in zip(planned.assigned, moved.assigned, strict=True):
        assert name == same  # the same layout, every network at its offset in the new block
        assert (
            int(ipaddress.IPv4Network(after).network_address)
            == int(ipaddress.IPv4Network(before).network_address) + shift
        )
    # The same project on the same engine takes the same block again; another project its own.
    assert subnets.settle("clash", planned, own, [corner]) == moved
    # The stack's own networks are not in the way, wherever they are (Compose recreates them).
    assert subnets.settle("clash", planned, own, [("clash_p0-link", ("10.0.0.0/8",))]) == planned


def test_a_running_stack_stays_in_the_block_it_moved_to() -> None:
    """Its networks exist where an earlier up settled it: the drawn block being free again moves
    nothing (a moved network recreates every container on it)."""
    plan = plan_of({"project": "moved", "components": probes(2)})
    assert plan.subnets is not None
    own = subnet_check.own_networks(plan)
    block = ipaddress.IPv4Network(plan.subnets.block)
    away = next(
        b for b in ipaddress.IPv4Network(plan.subnets.pool).subnets(new_prefix=block.prefixlen) if b != block
    )
    there = plan.subnets.moved_to(str(away))
    running = [(f"moved_{name}", (subnet,)) for name, subnet in there.assigned]
    assert subnets.settle("moved", plan.subnets, own, running) == there
    # ... unless another network took a place in that block meanwhile: then the drawn one again.
    squatter = ("squatter", (str(list(away.subnets(new_prefix=30))[-1]),))
    assert subnets.settle("moved", plan.subnets, own, [*running, squatter]) == plan.subnets


def test_a_component_disabled_moves_no_other_network() -> None:
    """Its networks outlive it on the engine until the `up` that drops it removes them (Compose
    removes only the networks its files name): they are this project's, in its block. Counted as
    another's, they moved the whole stack to another block, and every container with it."""
    before = plan_of({"project": "trim", "components": probes(3)})
    after = plan_of({"project": "trim", "components": probes(2)})
    assert before.subnets is not None and after.subnets is not None
    running = [EngineNetwork(f"trim_{name}", (subnet,), "trim") for name, subnet in before.subnets.assigned]
    stale = subnet_check.stale_networks(after, running)
    assert stale == ["trim_p2-link"]
    own = subnet_check.own_networks(after)
    existing = [(n.name, n.subnets) for n in running]
    assert subnets.settle("trim", after.subnets, own, existing, stale) == after.subnets
    # Not this project's by its label (a network made by hand under that name): in the way, as before.
    assert subnets.settle("trim", after.subnets, own, existing) != after.subnets
    foreign = [EngineNetwork(n.name, n.subnets) for n in running]
    assert subnet_check.stale_networks(after, foreign) == []
    # A stale network on a subnet the plan gives another network is in that network's way.
    subnet = after.subnets.of("p0-link")
    squatting = [*existing, ("trim_old", (subnet,))]
    assert subnets.settle("trim", after.subnets, own, squatting, ["trim_old"]) != after.subnets


def test_every_running_network_stays_where_it_runs_when_a_component_goes() -> None:
    """Placement follows the plan's order: a component removed frees the place another network drew
    first, and rendered alone that network would move there (found with whatsapp disabled beside the
    gateway: gateway-link moved onto whatsapp-ingress's old place, and `up` recreated every container).
    Each network that runs keeps its subnet; the stale ones are in nobody's way."""
    components = {f"c{index}": {"image": PROBE, "role": "channel"} for index in range(8)}
    before = plan_of({"project": "sticky", "components": components})
    assert before.subnets is not None
    running = [EngineNetwork(f"sticky_{n}", (subnet,), "sticky") for n, subnet in before.subnets.assigned]
    drawn_elsewhere = 0
    for gone in components:
        after = plan_of(
            {"project": "sticky", "components": {k: v for k, v in components.items() if k != gone}}
        )
        assert after.subnets is not None
        own = subnet_check.own_networks(after)
        stale = subnet_check.stale_networks(after, running)
        existing = [(n.name, n.subnets) for n in running]
        settled = subnets.settle("sticky", after.subnets, own, existing, stale)
        assert settled is not None and settled.block == before.subnets.block
        for name, subnet in settled.assigned:
            assert subnet == before.subnets.of(name), (gone, name)
            drawn_elsewhere += after.subnets.of(name) != subnet
        # The next up, the stale networks removed: nothing moves either.
        again = [(f"sticky_{n}", (subnet,)) for n, subnet in settled.assigned]
        assert subnets.settle("sticky", after.subnets, own, again) == settled, gone
    assert drawn_elsewhere  # the plan alone would have moved some network: the case is exercised


def test_the_engines_networks_name_their_project() -> None:
    from nachos_deploy.docker.parse import network_subnets

    inspected = [
        {"Name": "a_x", "Labels": {"com.docker.compose.project": "a"}, "IPAM": {"Config": []}},
        {"Name": "b_x", "Labels": {"com.docker.stack.namespace": "b"}, "IPAM": {"Config": []}},
        {"Name": "mine", "Labels": None, "IPAM": {"Config": []}},
    ]
    assert [n.project for n in network_subnets(inspected)] == ["a", "b", ""]


def test_a_pool_with_no_free_block_says_the_range_ran_out() -> None:
    plan = plan_of({"project": "full", "networks": {"pool": "172.16.4.0/23"}, "components": probes(1)})
    assert plan.subnets is not None
    filler = [EngineNetwork("filler", ("172.16.4.0/24",))]
    assert subnets.settle("full", plan.subnets, {}, [("filler", ("172.16.4.0/24",))]) is None
    message = subnet_check.ran_out(plan, filler)
    for part in ("range ran out", "networks.pool 172.16.4.0/23", "a /23", "filler", "project full"):
        assert part in message, message


def test_a_sidecar_holds_the_loop_detection_subscriptions_of_every_other_leaf() -> None:
    """At 100 components each sidecar's leaf connection got 63 $LDS subscriptions from the hub and
    refused the 64th, its role's max_subscriptions (docs/networks.md#figures): the limit grows with
    the stack, and small stacks keep the role's."""
    big = plan_of({"project": "big", "components": probes(100)})
    small = plan_of({"project": "small", "components": probes(3)})
    needed = len(big.sidecars) + 8
    assert min(s.limits.max_subscriptions for s in big.sidecars) >= needed
    assert {s.limits.max_subscriptions for s in small.sidecars if s.component.startswith("p")} == {64}
    assert f"max_subscriptions: {needed}" in render(big)["sidecar-p0.conf"]


def test_the_engines_networks_are_read_with_their_subnets() -> None:
    """`docker network inspect` as Docker 20.10 prints it: a network on the engine's default range, one
    with a subnet of ours (no Gateway field then), and `host`/`none`, which have no IPAM config."""
    from nachos_deploy.docker.parse import network_subnets

    inspected = [
        {
            "Name": "bridge",
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.210.0.0/24", "Gateway": "10.210.0.1"}]},
        },
        {
            "Name": "x_p0-link",
            "IPAM": {"Driver": "default", "Options": None, "Config": [{"Subnet": "172.16.200.0/29"}]},
        },
        {"Name": "host", "IPAM": {"Driver": "default", "Options": None, "Config": []}},
        {"Name": "none", "IPAM": {"Driver": "default", "Options": None, "Config": None}},
    ]
    assert [(n.name, n.subnets) for n in network_subnets(inspected)] == [
        ("bridge", ("10.210.0.0/24",)),
        ("x_p0-link", ("172.16.200.0/29",)),
        ("host", ()),
        ("none", ()),
    ]
