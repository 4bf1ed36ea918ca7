"""`python -m launcher ...` is the `llmlaunch` command."""

from launcher.cli import main

main()
