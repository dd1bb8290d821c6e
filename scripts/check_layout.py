"""Checks the layout rules of src/ that the compiler does not:

- only src/shell/aws imports the AWS SDK (`aws_sdk_*`, and its `aws_smithy_*`,
  `aws_config`, `aws_credential_types` crates);
- src/core does no I/O: outside its tests it names no tokio, notify, hyper, AWS crate,
  std::fs, std::net, std::process or std::env, and nothing in src/shell;
- no module imports one that imports it back: the graph of `crate::`/`super::` paths
  between module files has no cycle. A module's own submodules do not count as its
  imports (it declares them, and may re-export their items); a submodule's use of its
  parent, or of a sibling, does;
- no function outside tests is longer than MAX_FN_LINES lines, from its `fn` line to its
  closing brace;
- no file is longer than MAX_FILE_LINES lines outside its tests;
- inside src/core, imports go down the layers (CORE_LAYERS) and never up: the model
  imports nothing above it, the judgement nothing of the planner, and so on (a module's
  tests may use any layer).

Prints each breach and exits 1 if there is any. `--src DIR` checks another tree.
"""

import argparse
import re
import sys
from pathlib import Path

SDK = re.compile(r"\b(aws_sdk_\w+|aws_smithy_\w+|aws_config|aws_credential_types)\b")
CORE_FORBIDDEN = re.compile(
    r"\b(tokio|notify|hyper|hyper_util|aws_sdk_\w+|aws_smithy_\w+|aws_config|aws_credential_types"
    r"|std::fs|std::net|std::process|std::env|crate::shell)\b"
)
FN = re.compile(r"^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)")
MAX_FN_LINES = 60
MAX_FILE_LINES = 600
# The layers of src/core, lowest first: a module may import its own layer or a lower one.
CORE_LAYERS = {
    "model": 0,
    "config": 1,
    "policy": 1,
    "naming": 1,
    "launch": 2,
    "reencrypt": 2,
    "activity": 2,
    "units": 2,
    "select": 2,
    "events": 2,
    "contest": 2,
    "judge": 3,
    "plan": 4,
    "next": 4,
    "status": 5,
    "output": 5,
    "handoff": 5,
    "iam_policy": 5,
    "access": 5,
}
PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
USE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M | re.S)


def module_of(src: Path, file: Path) -> tuple:
    """The module path of a file: src/shell/aws/mod.rs is ("shell", "aws")."""
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def code_lines(text: str, file: Path) -> str:
    """The text without comments and string literals and, unless the whole file is tests, without the
    `#[cfg(test)]` part at its end."""
    lines = text.split("\n")
    if file.name != "tests.rs":
        for i, line in enumerate(lines):
            if line.startswith("#[cfg(test)]"):
                lines = lines[:i]
                break
    strings = re.compile(r'"(?:[^"\\]|\\.)*"')
    return "\n".join(re.sub(r"//.*", "", strings.sub('""', line)) for line in lines)


def long_functions(code: str) -> list:
    """(line, name, length) of each function longer than MAX_FN_LINES: from its `fn` line
    to the first line after it that is its closing brace at the same indent."""
    lines, out = code.split("\n"), []
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m or line.rstrip().endswith(";"):
            continue
        close = m.group(1) + "}"
        if line.rstrip().endswith("}"):
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == close), i)
        if end - i + 1 > MAX_FN_LINES:
            out.append((i + 1, m.group(2), end - i + 1))
    return out


def expand(tree: str) -> list:
    """The paths a use tree names: `a::{b, c::{d}}` is a::b and a::c::d."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if start is None:
        return [tree]
    prefix, inner = tree[:start], tree[start + 1 : tree.rindex("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for item in filter(None, items):
        for p in expand(item):
            out.append(prefix.rstrip(":") if p == "self" else prefix + p)
    return out


def resolve(path: str, here: tuple, modules: set):
    """The module file a path lands in: its longest prefix that is a module."""
    segs = path.split("::")
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = here
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
        rest = segs
    else:
        return None
    target = base
    for s in rest:
        if target + (s,) in modules:
            target = target + (s,)
        else:
            break
    return target if target in modules else None


def cycles(graph: dict) -> list:
    """One cycle through each group of modules that reach one another (Tarjan's
    strongly connected components), as lists of modules."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def connect(n):
        index[n] = low[n] = len(index)
        stack.append(n)
        on_stack.add(n)
        for m in sorted(graph.get(n, ())):
            if m not in index:
                connect(m)
                low[n] = min(low[n], low[m])
            elif m in on_stack:
                low[n] = min(low[n], index[m])
        if low[n] == index[n]:
            group = set()
            while True:
                m = stack.pop()
                on_stack.discard(m)
                group.add(m)
                if m == n:
                    break
            if len(group) > 1:
                found.append(path_within(graph, group))

    for n in sorted(graph):
        if n not in index:
            connect(n)
    return found


def path_within(graph: dict, group: set) -> list:
    """A cycle inside a strongly connected group: from its first module back to it."""
    start = min(group)
    prev, queue = {start: None}, [start]
    while queue:
        n = queue.pop(0)
        for m in sorted(graph.get(n, ())):
            if m == start:
                path = [n]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return [start] + path[::-1][1:] + [start] if n != start else [start, start]
            if m in group and m not in prev:
                prev[m] = n
                queue.append(m)
    return sorted(group)


def layer_breach(rel, here: tuple, target: tuple) -> list:
    """A breach of the core's layers, when `here` imports a module of a higher layer."""
    if here[:1] != ("core",) or target[:1] != ("core",) or len(here) < 2 or len(target) < 2:
        return []
    mine, theirs = CORE_LAYERS.get(here[1]), CORE_LAYERS.get(target[1])
    if mine is None:
        return [f"{rel}: core::{here[1]} has no layer in CORE_LAYERS (scripts/check_layout.py): give it one"]
    if theirs is not None and theirs > mine:
        return [f"{rel}: core::{here[1]} (layer {mine}) imports core::{target[1]} (layer {theirs}): a lower layer imports nothing above it"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src"))
    src = Path(parser.parse_args().src)
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f): f for f in files}
    problems, graph = [], {}
    for f in files:
        rel = f.relative_to(src.parent)
        code = code_lines(f.read_text(), f)
        here = module_of(src, f)
        in_aws = here[:2] == ("shell", "aws")
        for n, line in enumerate(code.split("\n"), 1):
            if not in_aws and SDK.search(line):
                problems.append(f"{rel}:{n}: the AWS SDK outside src/shell/aws: {line.strip()}")
            if here[:1] == ("core",) and CORE_FORBIDDEN.search(line):
                problems.append(f"{rel}:{n}: I/O or shell in src/core: {line.strip()}")
        if f.name != "tests.rs":
            for n, name, length in long_functions(code):
                problems.append(f"{rel}:{n}: fn {name} is {length} lines, over {MAX_FN_LINES}: split it")
            lines = len(code.rstrip("\n").split("\n"))
            if lines > MAX_FILE_LINES:
                problems.append(f"{rel}: {lines} lines outside its tests, over {MAX_FILE_LINES}: split it")
        paths = [p for u in USE.findall(code) for p in expand(u)]
        paths += ["".join(m) for m in PATH.findall(USE.sub("", code))]
        for p in paths:
            target = resolve(p, here, set(modules))
            # A module's own submodules are part of it, not its imports.
            if target is None or target[: len(here)] == here:
                continue
            graph.setdefault(here, set()).add(target)
            if f.name != "tests.rs":
                problems.extend(layer_breach(rel, here, target))
    for cycle in cycles(graph):
        names = " -> ".join("::".join(("crate",) + m) for m in cycle)
        problems.append(f"import cycle: {names}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
