"""`python -m worker` is `fedmq worker`."""

from common.cli import main

main(["worker", *__import__("sys").argv[1:]])
