"""Everything nachos-deploy asks of Docker and Compose.

runner   the one way a docker command runs (argv in; output, exit code, or a DockerFailure out)
errors   the one table of Docker's and Compose's error texts, and the project error each becomes
parse    Docker's JSON (inspect, events, stats, info) into dataclasses; pure
compose  one Compose project and the calls on it
engine   the engine's side (versions, images, volumes, events, exec) and the names callers use
swarm    a stack on Docker Swarm
"""
