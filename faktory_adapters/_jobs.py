"""Job types by name: a registry workers include, and handlers that can enqueue themselves."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from faktory_core import Job

from ._common import new_jid

__all__ = ["JobType", "Jobs", "check_result"]

P = ParamSpec("P")
R = TypeVar("R")
T_co = TypeVar("T_co", covariant=True)


class Pusher(Protocol[T_co]):
    """A client: ``push(job)`` returns the jid, or with the asyncio Client an awaitable of it."""

    def push(self, job: Job) -> T_co: ...


class JobType(Generic[P, R]):
    """A registered handler: call it as the function, or make and push jobs that run it.

    ``email.job("a@b.c")`` is a :class:`Job` with a new jid; ``email.send(client, "a@b.c")``
    pushes one; ``email.options(queue="mail", retry=3)`` is the same job type with those push
    options bound. Faktory args are positional, so keyword arguments are refused.
    """

    __slots__ = ("__wrapped__", "_options", "jobtype", "raise_in_job")

    def __init__(
        self,
        jobtype: str,
        handler: Callable[P, R],
        *,
        raise_in_job: bool | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(jobtype, str) or not jobtype:
            raise ValueError("a job type must be a non-empty string")
        if not callable(handler):
            raise TypeError(f"the handler of {jobtype!r} is not callable")
        self.jobtype = jobtype
        self.__wrapped__ = handler
        #: Whether an abort interrupts this job type (None: the worker's setting).
        self.raise_in_job = raise_in_job
        self._options: dict[str, Any] = dict(options or {})
        if self._options:  # check them now, not at the first push
            Job.create(jobtype, (), jid_factory=new_jid, **self._options)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<JobType {self.jobtype} {self.__wrapped__!r}>"

    def job(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """A new :class:`Job` of this type with these args and the bound options."""
        if kwargs:
            raise TypeError(f"{self.jobtype} jobs take positional args only, got {set(kwargs)}")
        return Job.create(self.jobtype, args, jid_factory=new_jid, **self._options)

    def send(self, client: Pusher[T_co], /, *args: P.args, **kwargs: P.kwargs) -> T_co:
        """Push a job of this type with these args; ``client.push``'s result (the jid)."""
        return client.push(self.job(*args, **kwargs))

    def options(self, **options: Any) -> JobType[P, R]:
        """This job type with push options bound (queue, retry, at, reserve_for, custom...)."""
        return JobType(
            self.jobtype,
            self.__wrapped__,
            raise_in_job=self.raise_in_job,
            options={**self._options, **options},
        )


class Jobs:
    """A registry of job types, independent of any worker or runtime.

    Register handlers in your modules and ``worker.include(jobs)`` them, or point
    ``faktory-worker -r module`` at the module: it includes every ``Jobs`` it finds there.
    """

    def __init__(self) -> None:
        self._types: dict[str, JobType[Any, Any]] = {}

    @overload
    def register(
        self, jobtype: str, handler: None = None, *, raise_in_job: bool | None = None
    ) -> Callable[[Callable[P, R]], JobType[P, R]]: ...

    @overload
    def register(
        self, jobtype: str, handler: Callable[P, R], *, raise_in_job: bool | None = None
    ) -> JobType[P, R]: ...

    def register(
        self,
        jobtype: str,
        handler: Callable[..., Any] | None = None,
        *,
        raise_in_job: bool | None = None,
    ) -> Any:
        """Run ``handler(*args)`` for jobs of ``jobtype``; without a handler, a decorator.

        Returns a :class:`JobType`. ``raise_in_job`` overrides the worker's setting for this
        job type. A job type can be registered once.
        """
        if handler is None:
            return functools.partial(self.register, jobtype, raise_in_job=raise_in_job)
        if jobtype in self._types:
            raise ValueError(f"a handler is already registered for {jobtype!r}")
        if isinstance(handler, JobType):  # the function inside, with its abort setting
            if raise_in_job is None:
                raise_in_job = handler.raise_in_job
            handler = handler.__wrapped__
        registered: JobType[Any, Any] = JobType(jobtype, handler, raise_in_job=raise_in_job)
        self._types[jobtype] = registered
        return registered

    def include(self, other: Jobs) -> None:
        """Add every job type ``other`` has now (not those registered later); ValueError if
        one is registered here already."""
        clashes = sorted(self._types.keys() & other._types.keys())
        if clashes:
            raise ValueError(f"handlers are already registered for {', '.join(clashes)}")
        self._types.update(other._types)

    def __getitem__(self, jobtype: str) -> JobType[Any, Any]:
        return self._types[jobtype]

    def __contains__(self, jobtype: object) -> bool:
        return jobtype in self._types

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


def check_result(jobtype: str, result: object) -> None:
    """Fail a job whose handler returned an awaitable: its work would silently never run.

    Any other return value is ignored: Faktory keeps no results.
    """
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # no "never awaited" warning on top of the error
        raise TypeError(
            f"the handler of {jobtype!r} returned {type(result).__name__}, which nothing awaits:"
            " use an async def handler with the asyncio adapter, or await it in the handler"
        )
