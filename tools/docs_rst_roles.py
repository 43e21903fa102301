"""A griffe extension for the API reference: reST cross-reference roles in docstrings become links.

perface's docstrings use reST roles (``:func:`perface.similarity```, ``:class:`~perface.NoFaceError```,
``:meth:`embed```) so that they also read well in ``help()``. mkdocstrings renders docstrings as
Markdown, where a role would show as raw text. This extension rewrites each role into an *optional*
mkdocs-autorefs reference: a link when the target is rendered somewhere in the reference, plain
code otherwise (no warning, so ``mkdocs build --strict`` stays meaningful for real breakage).
A trailing reST ``::`` (literal block marker) becomes ``:``.

Enabled in ``mkdocs.yml`` under ``plugins: mkdocstrings: handlers: python: options: extensions``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const):`(~?)([^`<>]+?)`")
LITERAL = re.compile(r"(\S)::$", re.M)


def _candidates(obj: griffe.Object, target: str) -> list[str]:
    """Full paths ``target`` may mean when written in the docstring of ``obj`` (most specific first)."""
    if target.startswith("."):
        return [obj.module.path + target] if obj.module else []
    scopes = []
    scope = obj if obj.is_class or obj.is_module else obj.parent
    while scope is not None:
        scopes.append(scope.path)
        scope = scope.parent
    return [f"{s}.{target}" for s in scopes] + [target]


def _resolve(obj: griffe.Object, target: str) -> str:
    collection = obj.modules_collection
    for path in _candidates(obj, target):
        try:
            collection.get_member(path)
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        return path
    return target.lstrip(".")


def rewrite(obj: griffe.Object, text: str) -> str:
    """``text`` with every reST role turned into an optional autorefs reference."""

    def link(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2).strip()
        title = target.lstrip(".").rsplit(".", 1)[-1] if short else target.lstrip(".")
        return f'<autoref identifier="{_resolve(obj, target)}" optional><code>{title}</code></autoref>'

    return LITERAL.sub(r"\1:", ROLE.sub(link, text))


class RstRoles(griffe.Extension):
    """Rewrite reST roles in every docstring once the object tree is complete."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
