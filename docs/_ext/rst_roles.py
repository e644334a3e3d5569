"""Griffe extensions for the API reference (mkdocs.yml loads this file).

- veo4k's docstrings use reST roles (:class:`FakeKie`, :meth:`Veo4kClient.wait_for_4k`) and
  ``::`` literal blocks, which Markdown would show verbatim: roles become inline code, a
  paragraph ending in ``::`` ends in ``:`` (the indented block after it is already a Markdown
  code block). The docstrings stay as they are for ``help()`` and editors.
- attrs writes the ``__init__`` of ``@attrs.frozen``/``@attrs.define`` classes at import time,
  so reading the source (which keeps each constant's and member's own docstring, unlike
  ``force_inspection``) finds no signature: ``PollPolicy(...)`` would show no parameters. The
  signature is taken from the imported class instead.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj|const):`~?([^`]+)`")
LITERAL_ALONE = re.compile(r"^[ \t]*::[ \t]*$", flags=re.M)
LITERAL = re.compile(r"(\S)::$", flags=re.M)


def markdown(text: str) -> str:
    """The docstring with its reST roles and literal-block markers made Markdown."""
    text = ROLE.sub(r"`\1`", text)
    return LITERAL.sub(r"\1:", LITERAL_ALONE.sub("", text))


def _runtime(cls: griffe.Class) -> Any:
    module = importlib.import_module(cls.module.path)
    return getattr(module, cls.name)


def _annotation(value: Any) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _attrs_init(cls: griffe.Class) -> griffe.Function:
    signature = inspect.signature(_runtime(cls))
    parameters = griffe.Parameters(
        *(
            griffe.Parameter(
                p.name,
                annotation=_annotation(p.annotation),
                kind=griffe.ParameterKind[p.kind.name.lower()],
                default=None if p.default is inspect.Parameter.empty else repr(p.default),
            )
            for p in signature.parameters.values()
        )
    )
    return griffe.Function("__init__", parameters=parameters, parent=cls)


class RstRoles(griffe.Extension):
    """Markdown docstrings, and attrs classes with their real signature."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        decorators = (str(d.value) for d in cls.decorators)
        if "__init__" not in cls.members and any(d.startswith("attrs.") for d in decorators):
            cls.set_member("__init__", _attrs_init(cls))
