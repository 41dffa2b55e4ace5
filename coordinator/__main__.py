"""`python -m coordinator` is `fedmq coordinator`."""

from common.cli import main

main(["coordinator", *__import__("sys").argv[1:]])
