from faktory_adapters import Jobs


class Exploding(Jobs):
    """A registry with a bug of its own: the command must not exit 1 ("aborted") for it."""

    def __len__(self) -> int:
        raise RuntimeError("a registry that explodes on purpose")


jobs = Exploding()
