"""Sphinx configuration of the documentation site: the guides in docs/*.md and an API reference.

Built strictly, as tests/test_docs_site.py builds it:
``python -m sphinx -W --keep-going -n -b html docs docs/_build/html``.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from docutils import nodes
from pygments.lexers.special import TextLexer
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

ROOT = Path(__file__).resolve().parents[1]
# The reference documents the checkout's code, whatever else is installed.
sys.path.insert(0, str(ROOT))

import faktory_core  # noqa: E402  (needs the path above)

project = "faktory-sansio"
author = "the faktory-sansio authors"
copyright = "the faktory-sansio authors, MIT licensed"
version = release = faktory_core.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
# Not pages. A link to a file of examples/ becomes a download (MyST does that for any link to
# a file that is not a page), so library-authors.md's link to minimal_adapter.py works.
exclude_patterns = ["_build", "examples", "deploy", "**/.*"]

# GitHub's anchors, so the links between pages that work on GitHub
# (`configuration.md#faktory-worker`) work on the site too.
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"faktory-sansio {release}"

# -- the API reference ---------------------------------------------------------------------------

#: The public modules: the reference documents each one's ``__all__``, and nothing else.
PUBLIC_MODULES = (
    "faktory_core",
    "faktory_core.commands",
    "faktory_core.events",
    "faktory_core.machine_io",
    "faktory_core.testing",
    "faktory_adapters",
    "faktory_adapters.asyncio",
    "faktory_adapters.thread",
    "faktory_adapters.gevent",
    "faktory_adapters.prometheus",
    "faktory_adapters.opentelemetry",
    "faktory_adapters.health",
)
_PACKAGES = ("faktory_core", "faktory_adapters")


def _public_names() -> Iterator[tuple[str, str, Any]]:
    for module_name in PUBLIC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise RuntimeError(
                f"the API reference documents {module_name}, which needs {error.name}: "
                "pip install -e . --group docs"
            ) from error
        for name in module.__all__:
            yield module_name, name, getattr(module, name)


def _is_ours(cls: Any) -> bool:
    return isinstance(cls, type) and cls.__module__.split(".")[0] in _PACKAGES


_PUBLIC_IDS = {id(obj) for _, _, obj in _public_names()}

# A public class's members include what it inherits from internal classes (thread's Worker.run
# is defined in a private base class); what it inherits from a public class is documented
# there, and what it inherits from Python (args, with_traceback...) is Python's.
_STOP_INHERITING = sorted(
    {obj.__name__ for _, _, obj in _public_names() if _is_ours(obj)}
    | {"BaseException", "OSError", "Enum", "Generic", "Protocol", "object"}
)

autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
    "inherited-members": ", ".join(_STOP_INHERITING),
}
autodoc_member_order = "bysource"
# Each page's title names its module; signatures read better without it.
add_module_names = False

nitpicky = True
nitpick_ignore_regex = [
    # The standard library: documented on docs.python.org. Linking there (intersphinx) would
    # fetch its inventory over the network at every build.
    ("py:.*", rf"(?:{'|'.join(sorted(sys.stdlib_module_names))})\..+"),
    ("py:mod", "|".join(sorted(sys.stdlib_module_names))),
    # Third-party: hypothesis's strategies, in faktory_core.testing's signatures,
    # prometheus_client's registry, in faktory_adapters.prometheus's, and OpenTelemetry's
    # tracer provider, in faktory_adapters.opentelemetry's.
    ("py:class", r"hypothesis\..+"),
    ("py:class", r"prometheus_client\..+"),
    ("py:class", r"opentelemetry\..+"),
]
# Internal classes that public signatures or docstrings name: not exported, so not documented.
# A new one fails the build, so that whether to export it is decided first.
nitpick_ignore = [
    ("py:class", "faktory_adapters._worker_base.WorkerBase"),  # any adapter's Worker
    ("py:class", "faktory_adapters._common.BulkPushProgress"),  # push_bulk(on_progress=)
    ("py:class", "faktory_adapters._driver.IsSet"),  # what AbortSignal.wait() returns
    ("py:class", "faktory_adapters._jobs.PushOptions"),  # register(**options)'s TypedDict
    ("py:class", "faktory_adapters._jobs.Pusher"),  # JobType.send()'s client protocol
    ("py:class", "faktory_adapters.asyncio.AbortWait"),  # asyncio AbortSignal.wait()'s awaitable
    ("py:class", "faktory_core._links.Link"),  # the Worker's and Heartbeat's internals
    ("py:class", "faktory_core._links.LinkMachine"),
    ("py:class", "faktory_core._worker._JobLink"),
    ("py:class", "faktory_core._resp.ErrorReply"),  # ReplyParser's kinds of reply
    ("py:class", "faktory_core._resp.NeedData"),
    ("py:class", "faktory_core._resp.OversizedBulk"),
    ("py:class", "faktory_core._resp.Skim"),
]

_MISSING = object()
_DOCUMENTED: dict[int, list[str]] = {}
_TYPE_VARIABLES = (typing.TypeVar, typing.ParamSpec, typing.ParamSpecArgs, typing.ParamSpecKwargs)
_log = logging.getLogger(__name__)


def _lookup(dotted: str) -> Any:
    """The object a dotted name names: its longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except (ImportError, ValueError):
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute, _MISSING)
            if found is _MISSING:
                return _MISSING
        return found
    return _MISSING


def _identity(obj: Any) -> int | None:
    """A key for the objects that can be told apart by identity (not ints or strings)."""
    if inspect.ismethod(obj):
        obj = obj.__func__
    if isinstance(obj, type | types.FunctionType | property | types.MemberDescriptorType):
        return id(obj)
    return None


def _documented(env: BuildEnvironment) -> dict[int, list[str]]:
    """Every documented Python object, by identity, with the names it is documented under."""
    by_identity: dict[int, list[str]] = {}
    for fullname, entry in env.domaindata["py"]["objects"].items():
        if entry.aliased:
            continue
        key = _identity(_lookup(fullname))
        if key is not None:
            by_identity.setdefault(key, []).append(fullname)
    return by_identity


def _scopes(node: addnodes.pending_xref) -> Iterator[str]:
    """Where a name in a docstring or signature is looked up, as Python would see it."""
    for ancestor in _ancestors(node):
        if isinstance(ancestor, addnodes.desc):
            signature = next(iter(ancestor.findall(addnodes.desc_signature)), None)
            if signature is None or not signature.get("fullname"):
                continue
            owner_name = f"{signature.get('module')}.{signature['fullname']}"
            owner = _lookup(owner_name)
            yield f"{owner_name}."
            if hasattr(owner, "__module__") and isinstance(owner.__module__, str):
                yield f"{owner.__module__}."
    module, cls = node.get("py:module"), node.get("py:class")
    if module and cls:
        yield f"{module}.{cls}."
    if module:
        yield f"{module}."
    yield ""


def _ancestors(node: nodes.Node) -> Iterator[nodes.Element]:
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def resolve_by_identity(
    app: Sphinx, env: BuildEnvironment, node: addnodes.pending_xref, contnode: nodes.TextElement
) -> nodes.Element | None:
    """Resolve a Python reference to wherever its object is documented, under whatever name.

    Docstrings name things as their own module sees them (``Job`` in faktory_adapters._jobs is
    faktory_core.Job), and one object can be exported by several modules, while Sphinx matches
    names only. So the name is looked up as Python would, from the docstring's object.
    """
    if node.get("refdomain") != "py":
        return None
    if not _DOCUMENTED:  # once: references are resolved after every page was read
        _DOCUMENTED.update(_documented(env))
    documented = _DOCUMENTED
    target, role = node["reftarget"], node["reftype"]
    for scope in _scopes(node):
        found = _lookup(scope + target)
        if found is _MISSING:
            continue
        if isinstance(found, _TYPE_VARIABLES):
            return contnode  # a type variable has no page: its name is shown as it is
        key = _identity(found)
        names = documented.get(key) if key is not None else None
        if names:
            return _resolve(app, env, node, contnode, _nearest(names, scope))
        if _is_ours(found) and (f"py:{role}", f"{found.__module__}.{found.__qualname__}") in (
            nitpick_ignore
        ):
            return contnode  # internal on purpose, under a short name
    # A short name the docstring's module does not see (``cut_backtrace`` in machine_io) but
    # that names exactly one documented object.
    matches = [
        name
        for names in documented.values()
        for name in names
        if name.endswith(f".{target}") and "._" not in name
    ]
    if len(set(matches)) == 1:
        return _resolve(app, env, node, contnode, matches[0])
    return None


def _nearest(names: list[str], scope: str) -> str:
    """The name that shares the most of the reference's scope: thread's Worker.serve there."""

    def shared(name: str) -> int:
        count = 0
        for a, b in zip(name.split("."), scope.split("."), strict=False):
            if a != b:
                break
            count += 1
        return count

    return max(sorted(names), key=shared)


def _resolve(
    app: Sphinx,
    env: BuildEnvironment,
    node: addnodes.pending_xref,
    contnode: nodes.TextElement,
    name: str,
) -> nodes.Element | None:
    domain = env.get_domain("py")
    for role in (node["reftype"], "obj"):
        resolved = domain.resolve_xref(env, node["refdoc"], app.builder, role, name, node, contnode)
        if resolved is not None:
            return resolved
    return None


def public_bases(
    app: Sphinx, name: str, obj: type, options: dict[str, Any], bases: list[Any]
) -> None:
    """Show a class's public ancestors in its "Bases:" line, in place of internal ones."""

    def shown(base: Any) -> list[Any]:
        if not _is_ours(base) or id(base) in _PUBLIC_IDS:
            return [base]
        return [ancestor for parent in base.__bases__ for ancestor in shown(parent)]

    replaced = [ancestor for base in bases for ancestor in shown(base)]
    bases[:] = list(dict.fromkeys(replaced))


_FUNCTION_REPR = re.compile(r"<function (\w+)>")
# Sphinx renders ``*args: P.args`` as ``*args: ~typing.~P`` (or ``~P``), like a TypeVar.
_STARRED = re.compile(r"(\*{1,2})(\w+): ~(?:typing\.~)?(\w+)(?=[,)])")


def _paramspec_parameters(obj: Any) -> set[str]:
    """The names of ``obj``'s ``*args``/``**kwargs`` typed ``P.args``/``P.kwargs``."""
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return set()
    starred = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {
        parameter.name
        for parameter in parameters
        if parameter.kind in starred
        and (
            isinstance(parameter.annotation, typing.ParamSpecArgs | typing.ParamSpecKwargs)
            or str(parameter.annotation).endswith((".args", ".kwargs"))
        )
    }


def readable_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: dict[str, Any],
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    """A default that is a function shows as its name (its repr breaks Sphinx's parsing), and
    ``*args`` typed by a ParamSpec as ``P.args``."""
    if signature is not None:
        signature = _FUNCTION_REPR.sub(r"\1", signature)
        paramspec = _paramspec_parameters(obj)

        def spelled(match: re.Match[str]) -> str:
            stars, parameter, variable = match.groups()
            if parameter not in paramspec:
                return match[0]
            return f"{stars}{parameter}: {variable}.{'args' if stars == '*' else 'kwargs'}"

        signature = _STARRED.sub(spelled, signature)
    return signature, return_annotation


def _data_docs() -> dict[str, list[str]]:
    """The ``#:`` comments of the constants a public module re-exports, by public name: autodoc
    reads those only in the module that documents them, not where they were defined."""
    comments: dict[str, list[tuple[Any, list[str]]]] = {}
    # The modules the public ones imported: where what they re-export was defined.
    loaded = [name for name in sys.modules if name.split(".")[0] in _PACKAGES]
    for module_name in sorted(loaded):
        module = sys.modules[module_name]
        attr_docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        for (namespace, name), lines in attr_docs.items():
            if not namespace and hasattr(module, name):
                comments.setdefault(name, []).append((getattr(module, name), lines))
    found = {}
    for module_name, name, obj in _public_names():
        for value, lines in comments.get(name, []):
            if value is obj:
                found[f"{module_name}.{name}"] = lines
    return found


_DATA_DOCS = _data_docs()


def constant_docs(
    app: Sphinx, what: str, name: str, obj: Any, options: dict[str, Any], lines: list[str]
) -> None:
    # Without it, a constant would show its type's docstring (int's, dict's).
    if what == "data" and name in _DATA_DOCS:
        lines[:] = _DATA_DOCS[name]


def every_public_name_is_documented(app: Sphinx, env: BuildEnvironment) -> None:
    """Fail the build when a name of a public module's ``__all__`` is missing from the reference
    (excluded from one page, say, and documented on none)."""
    documented = _documented(env)
    objects = env.domaindata["py"]["objects"]
    for module_name, name, obj in _public_names():
        if isinstance(obj, types.ModuleType):
            continue
        key = _identity(obj)
        if f"{module_name}.{name}" in objects or (key is not None and key in documented):
            continue
        _log.warning(
            "%s.%s is in __all__ but not in the API reference",
            module_name,
            name,
            type="faktory",
            subtype="reference",
        )


def setup(app: Sphinx) -> None:
    # state-machines.md holds Mermaid diagrams, generated by scripts/diagrams.py; without a
    # Mermaid renderer they show as their source text, which reads as the table it is.
    app.add_lexer("mermaid", TextLexer)
    app.connect("missing-reference", resolve_by_identity)
    app.connect("autodoc-process-bases", public_bases)
    app.connect("autodoc-process-signature", readable_signature)
    app.connect("autodoc-process-docstring", constant_docs)
    app.connect("env-check-consistency", every_public_name_is_documented)
