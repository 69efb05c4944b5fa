"""``python -m nachos_deploy`` and the ``nachos-deploy`` command."""


def main() -> None:
    from nachos_deploy.interfaces import cli

    cli.main()


if __name__ == "__main__":
    main()
