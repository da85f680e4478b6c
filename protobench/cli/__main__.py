"""`python -m protobench.cli`."""

from protobench.cli import main

main()
