"""`python -m fedmq ...` is the `fedmq` command."""

from fedmq.cli import main

main()
