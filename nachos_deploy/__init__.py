"""nachos-deploy: render, start, check and remove the Nachos stack on Docker."""

__version__ = "0.1.0"
