"""Choosing an adapter is one import line: the same names, methods and parameter names."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import faktory_adapters.asyncio
import faktory_adapters.gevent
import faktory_adapters.thread

ADAPTERS: list[ModuleType] = [
    faktory_adapters.asyncio,
    faktory_adapters.thread,
    faktory_adapters.gevent,
]
REFERENCE = ADAPTERS[0]


def public_methods(cls: type) -> dict[str, list[str]]:
    methods = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name != "__init__":
            continue
        if callable(member):
            try:
                parameters = inspect.signature(member).parameters
            except ValueError:  # a builtin's method, the same in every module
                methods[name] = ["<builtin>"]
                continue
            methods[name] = [p for p in parameters if p != "self"]
        elif isinstance(member, property):
            methods[name] = ["<property>"]
    return methods


@pytest.mark.parametrize("adapter", ADAPTERS[1:], ids=lambda module: module.__name__)
def test_the_same_public_names(adapter: ModuleType) -> None:
    assert sorted(adapter.__all__) == sorted(REFERENCE.__all__)


@pytest.mark.parametrize("adapter", ADAPTERS[1:], ids=lambda module: module.__name__)
@pytest.mark.parametrize("name", sorted(REFERENCE.__all__))
def test_the_same_methods_and_parameter_names(adapter: ModuleType, name: str) -> None:
    ours, theirs = getattr(REFERENCE, name), getattr(adapter, name)
    if inspect.isclass(ours):
        assert public_methods(theirs) == public_methods(ours)
    else:
        assert list(inspect.signature(theirs).parameters) == list(
            inspect.signature(ours).parameters
        )


def test_importing_the_package_imports_no_runtime() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, faktory_adapters; "
        "probed = ('asyncio', 'gevent', 'prometheus_client', 'opentelemetry'); "
        "print(sorted(m for m in probed if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_one_abort_exception_that_except_exception_does_not_catch() -> None:
    aborted = {module.JobAborted for module in ADAPTERS}
    assert len(aborted) == 1
    (kind,) = aborted
    assert issubclass(kind, BaseException)
    assert not issubclass(kind, Exception)


def test_the_prometheus_module_without_prometheus_client_names_the_extra() -> None:
    import subprocess
    import sys

    probe = (
        "import sys; sys.modules['prometheus_client'] = None; import faktory_adapters.prometheus"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "faktory-sansio[prometheus]" in out.stderr


def test_the_gevent_adapter_without_gevent_names_the_extra() -> None:
    import subprocess
    import sys

    probe = "import sys; sys.modules['gevent'] = None; import faktory_adapters.gevent"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "faktory-sansio[gevent]" in out.stderr
