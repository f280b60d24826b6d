"""The size of every function in the package, from its syntax tree: body lines (docstring excluded) and
parameters (self and cls excluded), largest first. The house rule it checks: no function over 60 lines.

    python research/scripts/function_sizes.py [--top 15] [--names eval/evaluator.py:evaluate train_loop]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def sizes(root: Path) -> list[tuple[int, int, str]]:
    """(body lines, parameters, "path:line name") of every function under ``root``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str)
            start = (body[1].lineno if len(body) > 1 else body[0].end_lineno) if has_doc else body[0].lineno
            a = node.args
            params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
            params -= bool(a.args and a.args[0].arg in ("self", "cls"))
            out.append((node.end_lineno - start + 1, params, f"{path}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("robustft"))
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--names", nargs="*", default=["eval/evaluator.py:evaluate", "eval/evaluator.py:_run",
                                                        "train/trainer.py:train_loop"],
                        help="FILE:FUNCTION (FILE a path ending) or a bare function name")
    args = parser.parse_args()
    rows = sizes(args.root)
    print("| body lines | parameters | function |\n|---|---|---|")
    for lines, params, where in rows[:args.top]:
        print(f"| {lines} | {params} | {where} |")
    for name in args.names:
        path, _, func = name.rpartition(":")
        print(*[f"{where}: {lines} lines, {params} parameters" for lines, params, where in rows
                if where.endswith(f" {func}") and where.split(":")[0].endswith(path)], sep="\n")
    print(f"functions: {len(rows)}; over 60 lines: {sum(r[0] > 60 for r in rows)}; "
          f"over 6 parameters: {sum(r[1] > 6 for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
