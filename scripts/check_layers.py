#!/usr/bin/env python3
"""Module import graph of every crate in the workspace, from the paths its non-test code names.

For each crate (a directory with Cargo.toml and src/), the nodes are the modules directly under
src/ and, inside each module directory at any depth, its submodules. An edge a -> b means code in a names
b: `crate::b` (or `super::b` in a top-level module's own file) at the top level, `crate::m::b`
or `super::b` between submodules of m. Test code
(everything after a file's first `#[cfg(test)]`) and comments are left out.

Prints every cycle with one place that makes each of its edges, and exits 1 if there is any.
`--edges` also prints the whole graph.
"""
import os
import re
import sys
from collections import defaultdict

SKIP = {"target", ".git", "node_modules", ".tools", "fuzz"}


def crates(root):
    for dp, dn, fn in os.walk(root):
        dn[:] = sorted(d for d in dn if d not in SKIP)
        if "Cargo.toml" in fn and os.path.isdir(os.path.join(dp, "src")):
            yield dp


def module_name(entry):
    return entry[:-3] if entry.endswith(".rs") else entry


def children(directory):
    """Module names directly in a directory (files and subdirectories)."""
    out = set()
    for e in os.listdir(directory):
        p = os.path.join(directory, e)
        if e.endswith(".rs") and e not in ("lib.rs", "main.rs", "mod.rs"):
            out.add(e[:-3])
        elif os.path.isdir(p):
            out.add(e)
    return out


def code_of(path):
    text = open(path, errors="replace").read()
    text = text.split("#[cfg(test)]")[0]
    text = re.sub(r"//[^\n]*", "", text)
    return text


def names_after(text, prefix):
    """Every name reached by `prefix::name` or in a `prefix::{a, b::c}` group, with line numbers."""
    found = []
    for m in re.finditer(r"\b" + prefix + r"::(\w+)", text):
        found.append((m.group(1), text.count("\n", 0, m.start()) + 1))
    for m in re.finditer(r"\b" + prefix + r"::\{", text):
        depth, i = 1, m.end()
        start = i
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[start : i - 1]
        line = text.count("\n", 0, m.start()) + 1
        # Only names at the group's first level.
        level, token = 0, ""
        for ch in body + ",":
            if ch == "{":
                level += 1
            elif ch == "}":
                level -= 1
            if level == 0 and ch in ",":
                name = re.match(r"\s*(\w+)", token)
                if name:
                    found.append((name.group(1), line))
                token = ""
            elif level == 0:
                token += ch
    return found


def rs_files(directory):
    for dp, dn, fn in os.walk(directory):
        dn.sort()
        for f in sorted(fn):
            if f.endswith(".rs"):
                yield os.path.join(dp, f)


def graphs(crate):
    """(label, nodes, edges) for the crate's top level and for each module directory."""
    src = os.path.join(crate, "src")
    top = children(src)
    result = []
    g = defaultdict(dict)
    for path in rs_files(src):
        rel = os.path.relpath(path, src).split(os.sep)
        owner = module_name(rel[0])
        if owner not in top:
            continue
        text = code_of(path)
        refs = names_after(text, "crate")
        # In a top-level module's own file (src/m.rs, src/m/mod.rs), `super` is the crate root.
        if len(rel) == 1 or rel[1:] == ["mod.rs"]:
            refs += names_after(text, "super")
        for name, line in refs:
            if name in top and name != owner:
                g[owner].setdefault(name, f"{os.path.relpath(path)}:{line}")
    result.append((os.path.relpath(crate), top, g))
    # Every module directory, at any depth: the graph between its own submodules.
    for dp, dn, fn in os.walk(src):
        dn.sort()
        if dp == src:
            continue
        parts = os.path.relpath(dp, src).split(os.sep)
        subs = children(dp)
        if len(subs) < 2:
            continue
        path_of = "crate::" + "::".join(parts)
        sg = defaultdict(dict)
        for path in rs_files(dp):
            rel = os.path.relpath(path, dp).split(os.sep)
            owner = module_name(rel[0])
            if owner not in subs:
                continue
            text = code_of(path)
            refs = names_after(text, path_of.replace("::", r"::"))
            if len(rel) == 1 or rel[1:] == ["mod.rs"]:
                refs += names_after(text, "super")
            for name, line in refs:
                if name in subs and name != owner:
                    sg[owner].setdefault(name, f"{os.path.relpath(path)}:{line}")
        result.append((f"{os.path.relpath(crate)}::{'::'.join(parts)}", subs, sg))
    return result


def cycles(nodes, g):
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    show_edges = "--edges" in sys.argv
    root = args[0] if args else "."
    bad = 0
    for crate in crates(root):
        for label, nodes, g in graphs(crate):
            if show_edges:
                for a in sorted(g):
                    for b, where in sorted(g[a].items()):
                        print(f"{label}: {a} -> {b}  ({where})")
            for comp in cycles(nodes, g):
                bad += 1
                print(f"{label}: cycle of {len(comp)} modules: {', '.join(comp)}")
                for a in comp:
                    for b, where in sorted(g[a].items()):
                        if b in comp:
                            print(f"    {a} -> {b}  ({where})")
    print(f"{bad} import cycles" if bad else "no import cycles")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
