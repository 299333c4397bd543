"""The README's Layout section names every module of the tree, and nothing that is not in it.

A module is a tracked .py or .sh file under ingest_tasks/, listener/, migrations/, bench/ or
scripts/; an `__init__.py` that holds only its package's docstring is named by its package's line.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess

from tests.support import ROOT

PACKAGES = re.compile(r"(ingest_tasks|listener|migrations|bench|scripts)/")
NAME = re.compile(r"([\w.*/-]+\.(?:py|sh|sql)|[\w*-]+/)(?:\s|$)")  # at the start of an entry line


def layout_names(readme: str) -> set[str]:
    """Every path the Layout block names, its directory lines' names joined by indentation."""
    block = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    stack: list[str] = []
    for line in block.splitlines():
        if not line.startswith("    ") or not line.strip():
            continue
        body = line[4:]
        indent = len(body) - len(body.lstrip(" "))
        found = NAME.match(body.strip())
        if indent % 2 or not found:
            continue  # a description's continuation line
        stack = stack[: indent // 2]
        names = found.group(1)
        named.update("".join(stack) + name for name in names.split(", "))
        if names.endswith("/") and "," not in names:
            stack.append(names)
    return named


def docstring_only(path: str) -> bool:
    tree = ast.parse((ROOT / path).read_text())
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in tree.body)


def test_the_layout_names_every_module_and_only_what_exists() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    named = layout_names((ROOT / "README.md").read_text())
    modules = [f for f in files if PACKAGES.match(f) and f.endswith((".py", ".sh"))]
    missing = [f for f in modules if f not in named
               and not (f.endswith("__init__.py") and docstring_only(f) and f.rsplit("/", 1)[0] + "/" in named)]
    dirs = {"/".join(f.split("/")[:i]) + "/" for f in files for i in range(1, f.count("/") + 1)}
    unknown = sorted(p for p in named if p not in files and p not in dirs and not fnmatch.filter(files, p))
    assert len(modules) > 50 and len(named) > 50  # the block was found and read
    assert missing == [], "modules the README's Layout does not name"
    assert unknown == [], "names in the README's Layout that are not in the tree"
