"""`python -m protobench` is the `protobench` command."""

from protobench.cli import main

main()
