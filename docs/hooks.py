"""MkDocs hooks: pages generated from the code at build time, so the documentation has one source.

- ``<!-- generated: config-reference -->`` becomes the reference of every config section: each field of the
  dataclasses in ``robustft/config/sections.py`` with its type, default and field docstring.
- ``<!-- generated: cli-help -->`` becomes ``robustft --help`` and every subcommand's ``--help``.
- In the rendered API reference, the Sphinx roles of the docstrings (``:class:`` …) are dropped before their code.

The functions are plain Python; tests/test_docs.py imports this file and checks that no field goes undocumented.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # document the robustft of this tree, whatever robustft is installed
    sys.path.insert(0, ROOT)

CONFIG_MARKER = "<!-- generated: config-reference -->"
CLI_MARKER = "<!-- generated: cli-help -->"


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (the string literal after the field), by field name;
    a field without one maps to an empty string."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef)).body
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            is_doc = (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                      and isinstance(after.value.value, str))
            docs[node.target.id] = inspect.cleandoc(after.value.value) if is_doc else ""  # type: ignore[union-attr]
    return {f.name: docs.get(f.name, "") for f in dataclasses.fields(cls)}


def sections() -> list[tuple[str, type]]:
    """The config's sections in file order: (the YAML key, its dataclass)."""
    from robustft.config import Config

    return [(f.name, type(getattr(Config(), f.name))) for f in dataclasses.fields(Config)]


def _markdown(doc: str) -> str:
    """A docstring as one Markdown table cell: reST ``code`` as `code`, one line, pipes escaped."""
    text = re.sub(r"``(.+?)``", r"`\1`", " ".join(doc.split()))
    text = re.sub(r":(?:class|func|meth|attr|mod):`~?([^`]+)`", r"`\1`", text)
    parts = text.split("`")  # a pipe inside a code span needs no escape (and would show its backslash)
    return "`".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def _default(f: dataclasses.Field[Any], eps: bool) -> str:
    """The default as YAML writes it; a radius (``EPS_KEYS``) in /255 where it is a whole number of them."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None:
        return "`null`"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if eps and isinstance(value, float) and 0 < value < 1 and abs(value * 255 - round(value * 255)) < 1e-9:
        return f"`{round(value * 255)}/255`"
    return f"`{value!r}`"


def config_reference() -> str:
    """Every config section as a Markdown table: key, type, default and the field's docstring."""
    from robustft.config.sections import EPS_KEYS

    out = []
    for name, cls in sections():
        docs = field_docs(cls)
        out += [f"## `{name}`", ""]
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            out += [_markdown(inspect.cleandoc(cls.__doc__)), ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            out.append(f"| `{name}.{f.name}` | `{f.type}` | {_default(f, (name, f.name) in EPS_KEYS)} | {_markdown(docs[f.name])} |")
        out.append("")
    return "\n".join(out)


def cli_help() -> str:
    """``robustft --help`` and each subcommand's ``--help``, as the command line prints them (100 columns)."""
    from robustft.cli import _parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = _parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        blocks = [("robustft --help", parser.format_help())]
        blocks += [(f"robustft {name} --help", p.format_help()) for name, p in sub.choices.items()]
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    out = []
    for title, text in blocks:
        anchor = title.replace(" --help", "").replace(" ", "-")
        out += [f"### `{title}` {{ #{anchor} }}", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: fill the generated parts of a page."""
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_help())
    return markdown


def on_page_content(html: str, **kwargs: Any) -> str:
    """MkDocs hook: docstrings name objects with Sphinx roles (``:class:`~robustft.X```), which mkdocstrings renders
    as the role's text before the code; keep the code alone."""
    return re.sub(r":(?:class|func|meth|attr|mod|data|exc|obj):(<code>)~?", r"\1", html)
