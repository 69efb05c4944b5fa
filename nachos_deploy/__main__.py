"""``python -m nachos_deploy`` and the ``nachos-deploy`` command.

A cold `up` gets its head start here, before the command line's imports (Typer, pydantic, Jinja:
about 0.12 s): see :mod:`nachos_deploy.head_start`.
"""

import os
import sys

from nachos_deploy import head_start


def main() -> None:
    head_start.begin(sys.argv[1:], os.environ)
    from nachos_deploy import cli

    cli.main()


if __name__ == "__main__":
    main()
