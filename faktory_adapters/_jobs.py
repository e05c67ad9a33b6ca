"""Job types by name: a registry workers include, and handlers that can enqueue themselves."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, Final, Generic, ParamSpec, Protocol, TypedDict, TypeVar, Unpack, overload

from faktory_core import Job
from faktory_core.commands import DEFAULT_QUEUE

from ._common import new_jid
from ._options import check_flag

__all__ = ["PUSH_OPTIONS", "JobType", "Jobs", "PushOptions", "Registrar", "check_result"]

P = ParamSpec("P")
R = TypeVar("R")
T_co = TypeVar("T_co", covariant=True)


class PushOptions(TypedDict, total=False):
    """The push options a job type can bind: the :class:`Job` fields that are not one job's own
    (its jid, args, or what the server fills in)."""

    queue: str
    retry: int | None
    at: datetime | str | None
    reserve_for: int | None
    backtrace: int | None
    custom: Mapping[str, Any] | None


#: The names :class:`PushOptions` takes, in the order the messages list them.
PUSH_OPTIONS: Final = tuple(PushOptions.__annotations__)


def _checked_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as a new dict, once each name is a push option and Job takes each value.

    Checked when a job type is made, so a bad option raises where it is written, not at the
    first push (the core's error names the option).
    """
    unknown = [name for name in options if name not in PUSH_OPTIONS]
    if unknown:
        raise TypeError(
            f"unknown push option {unknown[0]!r}: a job type takes {', '.join(PUSH_OPTIONS)}"
        )
    if options:
        Job.create("Check", (), jid_factory=new_jid, **options)
    return dict(options)


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
            raise ValueError(f"a job type must be a non-empty string, got {jobtype!r}")
        if not callable(handler):
            raise TypeError(
                f"the handler of {jobtype!r} is not callable (it is {type(handler).__name__})"
            )
        if raise_in_job is not None:
            check_flag("raise_in_job", raise_in_job)
        self.jobtype = jobtype
        self.__wrapped__ = handler
        #: Whether an abort interrupts this job type (None: the worker's setting).
        self.raise_in_job = raise_in_job
        self._options = _checked_options(options or {})

    @property
    def queue(self) -> str:
        """The queue its jobs are pushed to, unless a push says otherwise."""
        queue: str = self._options.get("queue", DEFAULT_QUEUE)
        return queue

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

    def options(self, **options: Unpack[PushOptions]) -> JobType[P, R]:
        """This job type with push options bound (queue, retry, at, reserve_for, backtrace,
        custom) over those it has."""
        return JobType(
            self.jobtype,
            self.__wrapped__,
            raise_in_job=self.raise_in_job,
            options={**self._options, **options},
        )


def _name_of(handler: Callable[..., Any]) -> str:
    """The job type a handler registered without a name is named after."""
    if not callable(handler):
        raise TypeError(f"a handler must be callable, got {type(handler).__name__}")
    if isinstance(handler, JobType):
        return handler.jobtype
    name = getattr(handler, "__name__", None)
    if name == "<lambda>":
        raise ValueError(
            "a lambda has no name to register it under: give one, register('Name', handler)"
        )
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"{handler!r} has no __name__ to name its job type after: give one, "
            "register('Name', handler)"
        )
    return name


class Registrar:
    """``register`` in every form, written once for :class:`Jobs` and for a Worker, which
    registers into a ``Jobs`` of its own."""

    def _registry(self) -> Jobs:
        raise NotImplementedError

    # Bare: @jobs.register, or jobs.register(handler). The job type is named after it.
    @overload
    def register(
        self,
        handler: Callable[P, R],
        /,
        *,
        raise_in_job: bool | None = None,
        **options: Unpack[PushOptions],
    ) -> JobType[P, R]: ...

    # A decorator: @jobs.register(), @jobs.register("Name", queue="mail").
    @overload
    def register(
        self,
        jobtype: str | None = None,
        handler: None = None,
        *,
        raise_in_job: bool | None = None,
        **options: Unpack[PushOptions],
    ) -> Callable[[Callable[P, R]], JobType[P, R]]: ...

    @overload
    def register(
        self,
        jobtype: str | None,
        handler: Callable[P, R],
        *,
        raise_in_job: bool | None = None,
        **options: Unpack[PushOptions],
    ) -> JobType[P, R]: ...

    def register(
        self,
        jobtype: str | Callable[..., Any] | None = None,
        handler: Callable[..., Any] | None = None,
        *,
        raise_in_job: bool | None = None,
        **options: Unpack[PushOptions],
    ) -> Any:
        """Run ``handler(*args)`` for jobs of ``jobtype``; without a handler, a decorator.

        Every form works: ``@jobs.register`` and ``jobs.register(handler)`` name the job type
        after the function (``__name__``), ``@jobs.register()`` too, ``@jobs.register("Name")``
        and ``jobs.register("Name", handler)`` name it. Returns a :class:`JobType`.
        ``raise_in_job`` overrides the worker's setting for this job type; the push options
        (``queue``, ``retry``, ``at``, ``reserve_for``, ``backtrace``, ``custom``) are bound to
        it, checked here. On a Worker, a job type registered without ``queue`` pushes to
        "default" if the worker fetches from it, else to the worker's first queue. A job type
        can be registered once.
        """
        if handler is None and callable(jobtype):  # bare
            jobtype, handler = None, jobtype
        if jobtype is not None and not isinstance(jobtype, str):
            raise TypeError(
                "register() takes a job type name (a string) or a handler (a function), "
                f"got {type(jobtype).__name__}"
            )
        registry = self._registry()
        if handler is not None:
            return registry._add(jobtype, handler, raise_in_job, options)
        # A decorator: check what it was given now, where it is written.
        if jobtype is not None:
            registry._check_free(jobtype)
        if raise_in_job is not None:
            check_flag("raise_in_job", raise_in_job)
        _checked_options(options)
        return functools.partial(registry._add, jobtype, raise_in_job=raise_in_job, options=options)


class Jobs(Registrar):
    """A registry of job types, independent of any worker or runtime.

    Register handlers in your modules and ``worker.include(jobs)`` them, or point
    ``faktory-worker -r module`` at the module: it includes every ``Jobs`` it finds there.
    """

    def __init__(self) -> None:
        self._types: dict[str, JobType[Any, Any]] = {}
        # The queue of job types registered without one; None: Job's own default. A Worker's
        # registry sets it, so its job types push where that worker fetches.
        self._queue: str | None = None

    def _registry(self) -> Jobs:
        return self

    def _check_free(self, jobtype: str) -> None:
        if jobtype in self._types:
            raise ValueError(f"a handler is already registered for {jobtype!r}")

    def _add(
        self,
        jobtype: str | None,
        handler: Callable[..., Any],
        raise_in_job: bool | None,
        options: Mapping[str, Any],
    ) -> JobType[Any, Any]:
        name = _name_of(handler) if jobtype is None else jobtype
        if isinstance(handler, JobType):  # the function inside, with its settings
            if raise_in_job is None:
                raise_in_job = handler.raise_in_job
            options = {**handler._options, **options}
            handler = handler.__wrapped__
        if self._queue is not None and "queue" not in options:
            options = {**options, "queue": self._queue}
        self._check_free(name)
        registered: JobType[Any, Any] = JobType(
            name, handler, raise_in_job=raise_in_job, options=options
        )
        self._types[name] = registered
        return registered

    def include(self, other: Jobs) -> None:
        """Add every job type ``other`` has now (not those registered later), as they are
        (their push options with them). One already here is skipped; ValueError if a
        different one is registered here under the same name."""
        clashes = sorted(
            name for name, kind in other._types.items() if self._types.get(name, kind) is not kind
        )
        if clashes:
            raise ValueError(f"other handlers are already registered for {', '.join(clashes)}")
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
