"""A module that registers its handler on a Worker, which the command cannot use."""

from faktory_adapters.thread import Worker

worker = Worker()


@worker.register("CliUnreachable")
def unreachable() -> None:
    """Never runs."""
