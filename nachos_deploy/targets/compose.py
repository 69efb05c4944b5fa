"""A stack as a Compose project on one engine (``target: compose``, the default).

Compose restarts a container in place, so a failure shows in the containers' own states (an exit,
a restart count that grew): there are no tasks and no replicas to count. What makes this target
fast lives here, out of the algorithm's way:

- the project, the images and (on a first ``up``) the containers are read at once, in parallel,
  before anything is written (:meth:`ComposeTarget.check`);
- an ``up`` that would change nothing is recognised from the record the last full one left
  (:mod:`nachos_deploy.targets.compose_record`), and Compose is then not run at all (:meth:`unchanged`);
- while the bus starts and is proven, the containers of sidecars and components that have none yet
  are created, not started (once the bus's own networks exist), and removed again if the bus
  fails (:meth:`start_bus`, :meth:`abandon`);
  they are then started by one ``docker start`` each, at once (:meth:`start_sidecars`);
- the containers read by the gate's last look serve as the first look after it;
- on a first ``up`` (credentials just made), Compose resolves the project for the run's record while
  the bus starts, not after it, and the networks the check listed serve :meth:`clear_for_cold_start`.

Required secrets that are not set are passed to Compose as blanks: commands that only read or
remove the stack (``status``, ``logs``, ``down``) must work without them, and without Compose's
warnings about blank variables; ``up`` and ``validate`` refuse them before they get here.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from nachos_deploy.core.changes import Objects, ServiceChange, started_over
from nachos_deploy.core.errors import DeployError, EnvironmentProblem, ExitCode
from nachos_deploy.core.names import PORTS, VOLUME_INIT
from nachos_deploy.core.plan_types import ServicePlan
from nachos_deploy.core.results import Endpoints
from nachos_deploy.docker import engine, running_specs
from nachos_deploy.docker.engine import Compose, ServiceState
from nachos_deploy.io import credentials, files, host_ports, state_credentials
from nachos_deploy.io.host_ports import HostPort
from nachos_deploy.io.stack import DOTENV, Stack
from nachos_deploy.targets import compose_changes, subnet_check, upgrade_files
from nachos_deploy.targets import compose_record as fastpath
from nachos_deploy.targets.base import FilesCheck, Finding, OneShot, Progress, bus_endpoints

BUS_NETWORKS_POLL = 0.03  # seconds between looks for the networks the bus's compose up makes


@contextlib.contextmanager
def compose_client(stack: Stack) -> Iterator[Compose]:
    """A Compose client on the files as rendered now; relative paths resolve from the output folder."""
    unset = sorted({name for _, name in stack.plan.required_secrets()} - stack.variables)
    with contextlib.ExitStack() as stack_of_files:
        folder = stack_of_files.enter_context(files.staged(stack.output_dir, stack.files))
        env_files: list[Path] = []
        if unset:
            dotenv = stack.output_dir / DOTENV
            if dotenv.is_file():
                env_files.append(dotenv)  # --env-file replaces Compose's own reading of it
            blanks = stack_of_files.enter_context(tempfile.TemporaryDirectory(prefix="nachos-deploy-"))
            blank_file = Path(blanks) / "unset.env"
            blank_file.write_text("".join(f"{name}=\n" for name in unset), encoding="utf-8")
            env_files.append(blank_file)
        yield engine.compose_client(
            stack.project, folder / stack.compose_file.name, stack.output_dir, env_files, stack.override_file
        )


class ComposeTarget:
    """One Compose project, for one command; :meth:`close` releases its staged files."""

    verb = "started"
    look_interval = 0.25  # a look at the containers is two docker calls, about 50 ms

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._files = contextlib.ExitStack()
        self._client: Compose | None = None
        self._last: dict[str, ServiceState] | None = None  # the last look at the containers
        self._resolved: dict[str, object] = {}
        self._image_ids: dict[str, str] = {}
        self._cold = True  # no record of a running stack: a first up, or one after `down`
        self._credentials: dict[str, str] = {}  # the credentials as they were before this up wrote any
        self._credentials_made = False
        self._credentials_now: dict[str, str] = {}  # once this up made sure of them (compose_record)
        self._credentials_fresh = False  # made by this up where there were none
        self._record: fastpath.Record | None = None  # the last full up's, as the check read it
        self._digest = ""
        self._only: tuple[str, ...] = ()
        self._restarts: dict[str, int] = {}  # container id -> restart count before the bus started
        self._fresh: list[str] = []  # containers created while the bus is proven, not started yet
        self._pool: ThreadPoolExecutor | None = None  # this up's Compose runs in the background
        self._created: Future[None] | None = None
        self._resolved_after: Future[dict[str, object]] | None = None  # with the credentials made
        self._held: frozenset[str] = frozenset()  # running components an upgrade replaces one by one
        self._networks: subnet_check.Listed | None = None  # the engine's, as the check read them

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._files.close()

    def _background(self) -> ThreadPoolExecutor:
        """The pool of this up's background Compose runs: the record's check and the creation of
        containers while the bus is proven, which may overlap."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2)
        return self._pool

    @property
    def client(self) -> Compose:
        """The client on the files as staged on first use: after ``up`` wrote them, the output folder."""
        if self._client is None:
            self._client = self._files.enter_context(compose_client(self.stack))
        return self._client

    # -- before anything is written -------------------------------------------------------------
    def components(self, only: Sequence[str]) -> list[ServicePlan]:
        return self.stack.plan.named(only)

    def check_files(self) -> FilesCheck:
        version = engine.compose_version()
        if version is None:
            return FilesCheck(None, "no Compose v2 CLI found (`docker compose version`)")
        engine.check_compose_file(self.client, self.stack.compose_file)
        return FilesCheck(version)

    def check(self, components: Sequence[ServicePlan]) -> bool:
        """The project as Compose resolves it and the images' ids, in two docker calls at once (and,
        on a cold ``up``, the project's containers, alongside: the full path reads them first).
        Only when one fails are the engine, Compose and each image asked on their own, so that the
        error names the first thing missing: the engine, then Compose, then the images, then the
        files. A client of its own: the files it sees are staged, not yet written."""
        stack = self.stack
        images = [s.image for s in (stack.plan.bus.service, *components) if s.build_context is None]
        self._record = fastpath.load(stack.output_dir)
        self._cold = self._record is None
        self._credentials = credentials.snapshot(stack.output_dir)
        with compose_client(stack) as client, ThreadPoolExecutor(max_workers=4) as pool:
            listed = pool.submit(engine.image_ids, images)
            checked = pool.submit(engine.check_compose_file, client, stack.compose_file)
            states = pool.submit(engine.states, client) if self._cold else None
            # The engine's networks, for the planned subnets (targets/subnet_check.py).
            networks = pool.submit(engine.engine_subnets) if stack.plan.subnets is not None else None
            ids = listed.result()
            failed = False
            try:
                self._resolved = checked.result()
            except DeployError:
                failed = True
            try:
                self._last = states.result() if states is not None else None
            except DeployError:
                self._last = None  # read again, and reported in order, by the full path
            if ids is not None and not failed:
                self._image_ids = ids
                self._networks = networks.result() if networks is not None else None
                return self._settle(self._networks)
            engine.require_engine()
            missing = engine.missing_images(images)
            if missing:
                raise EnvironmentProblem(
                    f"These images are not on this Docker engine: {', '.join(missing)}. Pull them "
                    "(`docker pull IMAGE`) or point images.prefix/images.tag or a component's image at "
                    "images you have; on a machine with no registry, `bash scripts/build-images.sh` "
                    "builds the nats:alpine stand-in and the probe image. `nachos-deploy doctor` lists "
                    "what is missing."
                )
            self._resolved = engine.check_compose_file(client, stack.compose_file)
            self._image_ids = engine.image_ids(images) or {}
            return self._settle(None)

    def ports_taken(self) -> list[HostPort]:
        """Tested by binding each address (io/host_ports.py) on a cold up, where the project's
        containers were read by :meth:`check` (or are read now, for `restore`): a port one of them
        publishes is the project's own. With an up on record here the ports are the running stack's,
        and a port changed since is the engine's to refuse; so is every port of an engine on another
        machine (DOCKER_HOST, a context), asked only once a port here is found taken."""
        if not self._cold:
            return []
        found = host_ports.taken(self.stack.plan)
        if not found:
            return []
        states = self._last if self._last is not None else self.states()
        own = {host for s in states.values() if s.status == "running" for _, host in s.ports}
        taken = [p for p in found if p.port not in own]
        return taken if taken and engine.on_this_machine() else []

    def _settle(self, networks: subnet_check.Listed | None) -> bool:
        """The stack on a block of the pool no other network is in; when it moved, Compose resolves
        the files as they now render (their networks' addresses are part of what it compares)."""
        settled, held = subnet_check.settle(self.stack, networks)
        if settled is not self.stack:
            self.stack = settled
            with compose_client(settled) as client:
                self._resolved = engine.check_compose_file(client, settled.compose_file)
        return held

    def unchanged(self, changed: Sequence[str], only: Sequence[str]) -> Mapping[str, ServiceState] | None:
        """See :mod:`nachos_deploy.targets.compose_record`: the same digest of what Compose compares,
        and every recorded container the same one, in the same state, on the same image."""
        stack = self.stack
        # Made just now (a first up): Compose resolved the project without them, so that is asked
        # again once the stack is up, for the record the next up compares with.
        now = credentials.snapshot(stack.output_dir)
        self._credentials_made = now != self._credentials
        self._credentials_now = fastpath.credential_entries(now)
        self._credentials_fresh = not self._credentials and bool(now)
        self._digest = fastpath.key(fastpath.resolved_digest(self._resolved), stack.files, only)
        self._only = tuple(only)
        if self._credentials_made:
            # Compose resolves the project again, now with them, for the record `remember` leaves;
            # asked now, it runs while the bus starts instead of after it (about 0.1 s of a first up).
            self._resolved_after = self._background().submit(
                engine.check_compose_file, self.client, stack.compose_file
            )
            return None
        if self._cold or changed:
            return None
        record = self._record
        if record is None or record.key != self._digest:
            return None
        states = engine.inspect_containers([container for container, _ in record.containers.values()])
        if states is None or not fastpath.as_left(record, states, self._resolved, self._image_ids):
            return None
        return states

    def remember(self, states: Mapping[str, ServiceState], started: Sequence[str]) -> None:
        digest = self._digest
        if self._resolved_after is not None:
            resolved = self._resolved_after.result()
            digest = fastpath.key(fastpath.resolved_digest(resolved), self.stack.files, self._only)
        fastpath.save(self.stack.output_dir, digest, states, started, self._credentials_now)

    def changes(self, only: Sequence[str]) -> list[ServiceChange]:
        """See :mod:`nachos_deploy.targets.compose_changes`: reads, changes nothing. When `up` would
        start the stack over for its credentials (:meth:`_credentials_lost`), every service says so."""
        found = compose_changes.changes(self.stack, self.client, only)
        snapshot = self._credentials  # `plan` makes none: those missing would be made by `up`
        plan = self.stack.plan
        needed = [credentials.BUS_ENV] if plan.auth or plan.bus.clustered else []
        needed += [state_credentials.ENV_FILE] if plan.state is not None else []
        missing = any(name not in snapshot for name in needed)
        if self._started_with_others(missing, fastpath.credential_entries(snapshot)):
            return started_over(found)
        return found

    def to_create(self, only: Sequence[str]) -> Objects:
        return compose_changes.to_create(self.stack, self.client, only)

    # -- starting, stage by stage ----------------------------------------------------------------
    def start_bus(self, components: Sequence[ServicePlan], progress: Progress) -> list[str]:
        """``compose up`` of the bus set; meanwhile, and while the bus is proven, the containers of
        sidecars and components that have none yet are created, not started (about a third of what
        starting them costs, off the critical path; on the demo done 0.3-0.5 s sooner than when
        made after the bus's ``compose up``); running ones are left as they are. A bus that fails
        leaves none of them behind."""
        stack = self.stack
        fastpath.forget(stack.output_dir)  # an up that stops half way leaves nothing to vouch for
        previous = self._last if self._last is not None else self.states()
        self._restarts = {s.container_id: s.restart_count for s in previous.values()}
        init = [VOLUME_INIT] if any(c.waits_for_volumes for c in components) else []
        bus_set = [*(node.name for node in stack.plan.bus.nodes), PORTS, *init]
        self._fresh = [
            s.name
            for s in stack.plan.with_sidecars(components)
            if s.name not in previous and s.build_context is None  # a build waits for `up`'s --build
        ]
        bus_up = threading.Event()
        failed = threading.Event()
        if self._fresh:
            bus_networks = compose_changes.networks_of(self._resolved, bus_set)
            self._created = self._background().submit(self._create_fresh, bus_networks, bus_up, failed)
        try:
            engine.up(self.client, bus_set, failure=ExitCode.BUS)
        except DeployError:
            failed.set()
            bus_up.set()
            self.abandon()
            raise
        bus_up.set()
        return []

    def _create_fresh(
        self, bus_networks: Sequence[str] | None, bus_up: threading.Event, failed: threading.Event
    ) -> None:
        """Create the fresh containers while the bus set starts, once every network of the bus set
        exists (``bus_networks``; None: not known, so once the bus's ``compose up`` ended). That run
        makes them first, and Compose makes the networks of a service's dependencies too, even with
        ``--no-deps``: two Compose runs making one network race ("Pool overlaps"). Nothing when the
        bus's ``compose up`` failed first."""
        while not bus_up.is_set() and not (bus_networks is not None and engine.networks_exist(bus_networks)):
            time.sleep(BUS_NETWORKS_POLL)
        if not failed.is_set():
            engine.create(self.client, self._fresh)

    def clear_for_cold_start(self, progress: Progress) -> bool:
        why = self._moved_networks() or self._credentials_lost()
        if why is None:
            return False
        progress(f"{why}: removing the stack's containers first")
        engine.down(self.client, volumes=False)
        fastpath.forget(self.stack.output_dir)
        self._last = None
        return True

    def _credentials_lost(self) -> str | None:
        """The credentials are not those the project's servers started with: made by this ``up``
        (their folder removed, or a file of it), or since the last full ``up`` recorded them (an
        ``up`` that made them and failed). Its servers hold the old passwords, in a folder that may be
        gone, which a reload does not reach (a bind mount keeps the folder it was made with), so the
        bus would refuse the new ones (exit 5, "Authorization Violation"; found by hand,
        2026-12-08). A rotation that reloaded them in place notes them (:meth:`note_credentials`)."""
        if not self._started_with_others(self._credentials_fresh, self._credentials_now):
            return None
        return "The bus's credentials changed since its servers started (their folder made anew, or edited)"

    def _started_with_others(self, fresh: bool, current: Mapping[str, str]) -> bool:
        """Whether the project has containers whose servers started with other passwords than
        ``current`` (:func:`compose_record.credential_entries`): all made anew (``fresh``: by this
        ``up`` where there were none, or missing for ``plan``), or one of those the last full ``up``
        recorded with another value (a component added brings new ones: no difference)."""
        record = self._record
        changed = fresh or (record is not None and fastpath.credentials_differ(record.credentials, current))
        return changed and bool(self._last if self._last is not None else self.states())

    def _moved_networks(self) -> str | None:
        """Compose must remove a network whose subnet changed and make it anew, which the engine
        refuses while a container of a step `up` has not reached yet is on it ("has active
        endpoints"). A moved network is rare (docs/networks.md): the stack's containers go first,
        its volumes stay, and this `up` starts it as from cold."""
        subnets = self.stack.plan.subnets
        if subnets is None:  # networks.pool: docker, the engine's own choice
            return None
        wanted = {f"{self.stack.project}_{name}": subnet for name, subnet in subnets.assigned}
        if self._networks is not None:  # read by the check, under this project's lock: no docker call
            names = [n.name for n in self._networks]
            have = {
                n.name: frozenset(n.subnets)
                for n in self._networks
                if n.name in wanted and names.count(n.name) == 1
            }
        else:
            have = {name: spec.subnets for name, spec in running_specs.networks(list(wanted)).items()}
        moved = sorted(name for name, found in have.items() if found and found != {wanted[name]})
        return f"Networks {', '.join(moved)} move to other subnets" if moved else None

    def prune_networks(self) -> None:
        if self._networks is not None:  # read by the check: no docker call when nothing is stale
            stale = subnet_check.stale_networks(self.stack.plan, self._networks)
            if stale:
                engine.remove_networks(stale)

    def bus_problem(self) -> str | None:
        states = self.states()
        watched = [(node.name, f"the bus container {node.name}") for node in self.stack.plan.bus.nodes]
        for name, what in (*watched, (PORTS, f"the bus's port forwarder ({PORTS})")):
            state = states.get(name)
            if state is None:
                return f"{what} does not exist"
            if state.status in ("exited", "dead"):
                return f"{what} exited with code {state.exit_code}"
            restarted = state.restart_count > self._restarts.get(state.container_id, 0)
            if state.status == "restarting" or restarted:
                return f"{what} is restarting (exit code {state.exit_code})"
        return None

    def gate_endpoints(self) -> Endpoints | str:
        found = self.endpoints(self._last)
        return found if found is not None else "the bus has no published ports yet"

    def abandon(self) -> None:
        if self._created is not None:  # a failed bus leaves no container of a component behind
            with contextlib.suppress(DeployError):
                self._created.result()
            engine.remove_created(self.client, self._fresh)
            self._created = None

    def _await_created(self) -> None:
        if self._created is not None:
            created, self._created = self._created, None
            created.result()

    def start_sidecars(self, sidecars: Sequence[ServicePlan], states: Mapping[str, ServiceState]) -> None:
        self._start([s.name for s in sidecars], states)

    def start_components(self, components: Sequence[ServicePlan], states: Mapping[str, ServiceState]) -> None:
        self._start([c.name for c in components if c.name not in self._held], states)

    def hold(self, names: Sequence[str]) -> None:
        self._held = frozenset(names)

    def replace(self, names: Sequence[str]) -> None:
        """``compose up --no-deps`` of those services alone: Compose recreates each (its definition
        or the image behind its reference changed) and touches nothing else."""
        engine.up(self.client, names, dependencies=False)
        self._held = self._held - set(names)

    def restore(self, names: Sequence[str], rendered: Mapping[str, str], images: Mapping[str, str]) -> None:
        """The earlier files written back (all or none), then ``compose up --no-deps`` of ``names`` on
        them, each on the image id of ``images`` where its tag has moved (targets/upgrade_files.py)."""
        stack = self.stack
        restored = dict(rendered)
        name = stack.compose_file.name
        if name in restored:
            pinned = upgrade_files.pins(restored[name], {n: images[n] for n in names if n in images})
            restored[name] = upgrade_files.pin_images(restored[name], pinned)
        files.write_all(stack.output_dir, restored)
        with compose_client(replace(stack, files=restored)) as client:
            engine.up(client, names, dependencies=False)
        self._held = self._held - set(names)

    def _start(self, names: Sequence[str], states: Mapping[str, ServiceState]) -> None:
        """Those created during this up by a ``docker start`` each, at once; the others through
        Compose, which recreates a container whose configuration changed."""
        self._await_created()
        created = [name for name in names if name in self._fresh]
        others = [name for name in names if name not in self._fresh]
        with ThreadPoolExecutor(max_workers=2) as pool:
            started = pool.submit(engine.start_created, self.client, created, states) if created else None
            if others:
                engine.up(self.client, others, dependencies=False)
            if started is not None:
                started.result()

    def volume_init(self, since: float, states: Mapping[str, ServiceState] | None) -> OneShot:
        state = (states if states is not None else self.states()).get(VOLUME_INIT)
        if state is None or state.status not in ("exited", "dead"):
            return OneShot(False)
        return OneShot(True, None if state.exit_code == 0 else f"exited with code {state.exit_code}")

    def restart(self, names: Sequence[str]) -> None:
        engine.restart(self.client, names)

    def replace_bus_node(self, name: str) -> None:
        engine.up(self.client, [name], dependencies=False, failure=ExitCode.BUS)

    def reload(self, names: Sequence[str]) -> bool:
        states = self.states()
        containers = [states[name].container for name in names if name in states]
        if containers:
            engine.send_signal(containers, "HUP")
        return True

    def note_credentials(self) -> None:
        entries = fastpath.credential_entries(credentials.snapshot(self.stack.output_dir))
        fastpath.note_credentials(self.stack.output_dir, entries)

    # -- observing ---------------------------------------------------------------------------------
    def states(self, *, recent: bool = False) -> dict[str, ServiceState]:
        if recent and self._last is not None:
            return dict(self._last)
        # Listing by the project's label: no Compose run (status stays fast).
        self._last = engine.states(self.client)
        return dict(self._last)

    def endpoints(self, states: Mapping[str, ServiceState] | None = None) -> Endpoints | None:
        return bus_endpoints(self.stack, states if states is not None else self.states())

    def failed_tasks(self, names: Sequence[str], since: float) -> dict[str, str]:
        return {}  # Compose restarts a container in place: its state tells

    def shortfalls(self, names: Sequence[str]) -> dict[str, str]:
        return {}  # one container per service

    def run_check(self, container: str, test: Sequence[str] | str, timeout: float) -> bool:
        return engine.passes_check(None, container, test, timeout)

    def read_inside(self, container: str, hosts: Mapping[str, str], path: str) -> dict[str, object | None]:
        return engine.monitor_from_inside(container, hosts, path)

    def read_file(self, container: str, path: str) -> str | None:
        return engine.read_file(container, path) if container else None

    def exec_output(self, container: str, command: Sequence[str], timeout: float) -> str | None:
        return engine.exec_output(container, command, timeout) if container else None

    def exit_codes_since(self, state: ServiceState, since: float) -> list[int]:
        return engine.exit_codes_since(state.container_id, since)

    def logs_tail(self, name: str, lines: int) -> str:
        return engine.logs_tail(self.client, name, lines)

    def stream_logs(self, names: Sequence[str], *, follow: bool, tail: int | None) -> Iterator[str]:
        return engine.stream_logs(self.client, names, follow=follow, tail=tail)

    def diagnose(self) -> list[Finding]:
        return []  # Compose needs the engine and its plugin only, which doctor checks for every target

    # -- removing --------------------------------------------------------------------------------
    def volumes(self) -> list[str]:
        # No `docker version` first (0.1 s): listing the volumes fails with the same advice when the
        # engine is away, and a missing Compose is named by `compose down` itself.
        return engine.project_volumes(self.stack.project)

    def remove(self, *, volumes: bool) -> None:
        """Compose's own ``down``, which stops the components before what they depend on; with
        ``volumes``, also those of services the configuration no longer runs."""
        engine.down(self.client, volumes=volumes)
        fastpath.forget(self.stack.output_dir)
        # Compose removes the networks its files name: those of a component disabled since go too.
        leftover = engine.project_networks(self.stack.project)
        if leftover:
            engine.remove_networks(leftover)
        if volumes:
            leftovers = engine.project_volumes(self.stack.project)
            if leftovers:
                engine.remove_volumes(leftovers)
