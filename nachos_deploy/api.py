"""The public Python API, as ``from nachos_deploy import api``: the functions and types of
:mod:`nachos_deploy.interfaces.api`, which is where they live with the other interfaces (the CLI
and the pytest plugin go through it too)."""

from nachos_deploy.interfaces.api import *  # noqa: F403
from nachos_deploy.interfaces.api import __all__ as __all__
