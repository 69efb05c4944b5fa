"""Each network of a stack gets a small subnet of its own, from the range nachos-deploy manages.

Left to the engine, every network takes one of Docker's default ranges, a /16 or a /20, of which an
engine has about 31: a stack of 24 components (a private network each) ran out of them at once, and
two stacks of 12 could not run side by side. Here a network gets what it holds and no more (a /29
for a component and its sidecar), so thousands of networks fit where 31 did.

Pure, and deterministic from the project's name (docs/networks.md):
  - the stack takes one block of ``networks.pool``, sized for all its networks with room to grow
    (twice what they need, rounded up to a power of two), at a place drawn from a hash of the
    project's name: the same project gets the same block on every machine, with no engine to ask,
    so ``render`` stays pure and the golden files stable;
  - in its block, a component's own network goes where a hash of its name says (or the next free
    place of a sequence of its own), in the first half; the shared networks, which grow with the
    stack, in the second. A component added at the end of the deploy file moves no other network
    (a moved network is a recreated one, with every container on it); a shared network that
    outgrows its size moves alone; a stack that outgrows half its block takes the block twice as
    large that holds the old one (rendered alone, everything moves once);
  - two stacks can draw overlapping blocks, and a network made by hand can sit in the pool: ``up``
    reads the engine's networks first and :func:`settle` moves the stack's whole layout to a free
    block (the next of a sequence drawn from the project's name), or keeps it where its running
    networks already are: each one that runs at the same size stays at its subnet, and only the
    others are placed around them (a component removed would otherwise let another network take
    the place it first drew, and a moved network is one recreated with every container on it).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from nachos_deploy.core.errors import ConfigError

Network = ipaddress.IPv4Network

# A bridge network loses three addresses to containers (the network's, the broadcast and the
# gateway's); an overlay the same three.
RESERVED = 3
SMALLEST = 29  # 5 containers: a component, its sidecar, and room for three more (a test's, a debugger's)
# The networks joined by each component added (every sidecar's, and egress) grow with the stack. A
# network that moves is one Compose must remove and make anew, with every container on it (for
# nachos-internal: the bus and every sidecar), so these start large enough not to move soon.
GROWING_SMALLEST = {"nachos-internal": 26, "egress": 27}
# A stack whose block grows takes the block twice as large, where every network has another place:
# all of them move, the whole stack is recreated. Blocks start at a /23 (512 addresses), so a stack
# grows to 13 components (each with egress) before anything moves; 172.16.0.0/16 holds 128 blocks.
BLOCK_SMALLEST = 23
LARGEST = 16
# Compose: one address per container. Swarm: a replaced task keeps its address until the old one is
# gone (start-first updates, restarts), so two per task; and each machine with a task on an overlay
# network takes one more for its load balancer, at most one per service.
SWARM_TASK_ADDRESSES = 2


@dataclass(frozen=True)
class Member:
    """A service on a network, and how many tasks it runs there (Swarm's replicas; 1 on Compose)."""

    service: str
    replicas: int = 1


@dataclass(frozen=True)
class Subnets:
    """What the plan gives each network: its subnet, and the block of the pool they all lie in."""

    pool: str
    block: str
    assigned: tuple[tuple[str, str], ...]  # (network, subnet), in the plan's network order

    def of(self, network: str) -> str | None:
        for name, subnet in self.assigned:
            if name == network:
                return subnet
        return None

    def gateway_of(self, network: str) -> str | None:
        """The subnet's first address, which the engine takes as the bridge's own anyway: written out
        so that `docker network inspect` lists it (the host firewall reads it there)."""
        subnet = self.of(network)
        return str(next(ipaddress.ip_network(subnet).hosts())) if subnet else None

    def moved_to(self, block: str) -> Subnets:
        """The same layout in another block of the same size: every network keeps its offset, so a
        stack that had to move is laid out as it would be in its own block."""
        shift = int(Network(block).network_address) - int(Network(self.block).network_address)
        moved = []
        for name, subnet in self.assigned:
            network = Network(subnet)
            moved.append((name, str(Network((int(network.network_address) + shift, network.prefixlen)))))
        return Subnets(self.pool, block, tuple(moved))


def addresses_needed(members: Sequence[Member], *, swarm: bool) -> int:
    """Addresses the network's containers take, plus as many again (at least three) for what joins
    it later: a container Compose recreates, a debugging container, a replica more."""
    taken = sum(SWARM_TASK_ADDRESSES * m.replicas + 1 for m in members) if swarm else len(members)
    return taken + max(3, taken)


def prefix_for(addresses: int) -> int:
    """The longest prefix (smallest subnet) whose usable addresses hold ``addresses``."""
    for prefix in range(SMALLEST, LARGEST - 1, -1):
        if 2 ** (32 - prefix) - RESERVED >= addresses:
            return prefix
    raise ConfigError(
        f"Invalid configuration: one network of this stack would hold {addresses} addresses, more than "
        f"a /{LARGEST}; split the stack into several projects."
    )


def _draw(*parts: str) -> int:
    """A number drawn from names: the same names give the same number on every machine and run."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def allocate(
    project: str,
    pool_text: str,
    members: Mapping[str, Sequence[Member]],
    *,
    swarm: bool,
    growing: Collection[str] = (),
) -> Subnets:
    """Subnets for ``members`` (network -> who is on it), in one block of the pool; the ``growing``
    networks (joined by each component added) start at their :data:`GROWING_SMALLEST`. A ConfigError naming
    ``networks.pool`` when the stack does not fit in it at all."""
    pool = ipaddress.IPv4Network(pool_text)
    sizes = {name: prefix_for(addresses_needed(on, swarm=swarm)) for name, on in members.items()}
    for name in growing:
        if name in sizes:
            sizes[name] = min(sizes[name], GROWING_SMALLEST.get(name, sizes[name]))
    total = sum(2 ** (32 - prefix) for prefix in sizes.values())
    block_size = min(2 ** (32 - BLOCK_SMALLEST), pool.num_addresses)
    while block_size < 2 * total:
        block_size *= 2
    if block_size > pool.num_addresses:
        block_prefix = 32 - block_size.bit_length() + 1
        raise ConfigError(
            f"Invalid configuration: networks.pool is {pool} ({pool.num_addresses} addresses), but this "
            f"stack's {len(sizes)} networks take {total} addresses, and a stack takes a block of twice "
            f"that, a /{block_prefix}. Give networks.pool a larger range (the default is 172.16.0.0/16); "
            "docs/networks.md says what each network takes."
        )
    # The top bits of the draw pick the place: a block twice as large (the stack grew) is then the
    # one that holds the old block, so the addresses a grown stack takes stay near the ones it had.
    block = _block(pool, block_size, _draw(project))
    start = int(block.network_address)
    # The smallest networks (a component's own: they never grow) in the block's first half, each at
    # the place a hash of its name picks, or the next free one; the others (shared by many: they
    # grow with the stack) in the second half, so that one that outgrows its size moves alone. Each
    # half holds all of either, since the block is at least twice what they take.
    smallest = max(sizes.values(), default=SMALLEST)
    half = block_size // 2
    placed: dict[str, Network] = {}
    own = [name for name in sizes if sizes[name] == smallest]
    shared = [name for name in sizes if sizes[name] != smallest]
    _place(own, sizes, start, half, placed, largest_first=False)
    _place(shared, sizes, start + half, half, placed, largest_first=True)
    return Subnets(str(pool), str(block), tuple((name, str(placed[name])) for name in members))


def _block(pool: Network, size: int, draw: int) -> Network:
    """The block of ``size`` addresses of ``pool`` that the top bits of ``draw`` pick: a block twice
    as large, picked by the same draw, holds this one."""
    slots = pool.num_addresses // size
    start = int(pool.network_address) + (draw >> (64 - slots.bit_length() + 1)) * size
    return Network((start, 32 - size.bit_length() + 1))


def _place(
    names: Sequence[str],
    sizes: Mapping[str, int],
    start: int,
    length: int,
    placed: dict[str, Network],
    *,
    largest_first: bool,
) -> None:
    """Put ``names`` in ``length`` addresses from ``start``: each tries the places a hash of its name
    lists (a first place, then steps of a stride of its own, which visit every place once), in the
    plan's order (a component added at the end of the deploy file takes a place no other had, and
    strides of their own keep one taken place from pushing a row of others along). ``largest_first``:
    with power-of-two sizes on their own alignment, none then ever fails to fit."""
    ranked = sorted(names, key=lambda n: -(2 ** (32 - sizes[n]))) if largest_first else list(names)
    taken: list[Network] = []
    for name in ranked:
        for candidate in _places(name, sizes[name], start, length):
            if not any(candidate.overlaps(other) for other in taken):
                placed[name] = candidate
                taken.append(candidate)
                break


def _places(name: str, prefix: int, start: int, length: int) -> Iterator[Network]:
    """Where the network ``name`` of a /``prefix`` may go in ``length`` addresses from ``start``, in
    the order it tries them: a first place a hash of its name picks, then steps of a stride of its
    own, which visit every place once."""
    size = 2 ** (32 - prefix)
    places = length // size
    first = _draw(name) % places
    stride = (_draw(name, "stride") % places) | 1  # odd: coprime with a power of two
    for step in range(places):
        yield Network((start + ((first + step * stride) % places) * size, prefix))


def _keeping(layout: Subnets, running: Mapping[str, Network], avoid: Sequence[Network]) -> Subnets | None:
    """``layout`` with every network that runs in its block at the same size kept where it runs, and
    each other one at its planned place, or, when that overlaps a kept or an ``avoid``ed network, at
    the next free place of its own sequence in its half (as :func:`_place` orders them); None when
    one finds no place. The layout alone is a function of the plan's order: a component removed
    frees the place another network had first drawn, which it would take, and a moved network is
    one Compose recreates with every container on it."""
    block = Network(layout.block)
    half = block.num_addresses // 2
    kept: dict[str, Network] = {}
    for name, subnet in layout.assigned:
        there = running.get(name)
        if there is not None and there.prefixlen == Network(subnet).prefixlen and there.subnet_of(block):
            kept[name] = there
    taken = [*kept.values(), *avoid]
    placed: dict[str, Network] = {}
    for name, subnet in layout.assigned:
        if name in kept:
            placed[name] = kept[name]
            continue
        planned = Network(subnet)
        second = int(planned.network_address) - int(block.network_address) >= half
        start = int(block.network_address) + (half if second else 0)
        candidates = (planned, *_places(name, planned.prefixlen, start, half))
        found = next((c for c in candidates if not any(c.overlaps(t) for t in taken)), None)
        if found is None:
            return None
        placed[name] = found
        taken.append(found)
    return Subnets(layout.pool, layout.block, tuple((name, str(placed[name])) for name, _ in layout.assigned))


# Blocks of the project's own sequence tried, after the drawn one, before the first free block of the
# pool: with a few stacks on an engine the second or third is free, and the same project on the same
# engine takes the same one again.
SEQUENCE = 32


def ipv4_networks(texts: Iterable[str]) -> list[Network]:
    """The IPv4 networks among the engine's subnet texts (IPv6 ones and text that is not a network
    are never ours to overlap)."""
    found = []
    for text in texts:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if isinstance(network, ipaddress.IPv4Network):
            found.append(network)
    return found


def settle(
    project: str,
    planned: Subnets,
    own: Mapping[str, str],
    existing: Iterable[tuple[str, Sequence[str]]],
    stale: Collection[str] = (),
) -> Subnets | None:
    """Where the stack's networks go on this engine: ``planned`` itself, or its layout moved to another
    block of the pool (:meth:`Subnets.moved_to`); None when every block of that size overlaps a
    network of the engine's. ``own``: the engine's names of this stack's networks, to the plan's;
    ``existing``: every network of the engine, with its subnets; ``stale``: the engine's names of this
    project's networks the plan no longer has, which the `up` removes once nothing is on them.

    - A stack whose networks exist stays in their block, when no other network is in it, and each
      that runs at the size the plan gives it keeps its subnet, the others placed around them
      (:func:`_keeping`): moving a network recreates every container on it.
    - Else the drawn block, when no other network overlaps it (the whole block: the stack grows in
      it), then the blocks of a sequence drawn from the project's name, then the pool's first free one.
    - A stale network is in no block's way, only in the way of a planned subnet it overlaps (it still
      exists while the new networks are made): so a component disabled moves no other network.
    """
    pool = Network(planned.pool)
    size, prefix = Network(planned.block).num_addresses, Network(planned.block).prefixlen
    others: list[Network] = []
    leaving: list[Network] = []
    mine: dict[str, Network] = {}
    for name, subnets_of in existing:
        found = ipv4_networks(subnets_of)
        if name in own:
            mine.update((own[name], network) for network in found if network.subnet_of(pool))
        elif name in stale:
            leaving.extend(found)
        else:
            others.extend(found)

    def free(block: Network, layout: Subnets) -> bool:
        return not any(block.overlaps(other) for other in others) and not any(
            Network(subnet).overlaps(network) for _, subnet in layout.assigned for network in leaving
        )

    if mine:
        where = next(iter(mine.values()))
        held = Network((int(where.network_address) & ~(size - 1) & 0xFFFFFFFF, prefix))
        kept = _keeping(planned.moved_to(str(held)), mine, leaving)
        if kept is not None and free(held, kept):
            return kept
    drawn = [_block(pool, size, _draw(project, "block", str(turn))) for turn in range(1, SEQUENCE)]
    for block in (Network(planned.block), *drawn, *pool.subnets(new_prefix=prefix)):
        layout = planned if str(block) == planned.block else planned.moved_to(str(block))
        if free(block, layout):
            return layout
    return None
