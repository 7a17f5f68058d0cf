#!/usr/bin/env python3
"""Room sizes: no source file over 800 lines and no function over 120 lines, outside tests.

Source files are the .rs files of every crate (src/, benches/, examples/), unit-test modules
included; integration tests (files under tests/) and a module's own `tests.rs` are left out.
A function runs from its `fn` line to the line of its closing brace at the same indentation.
Prints every room over its bound and exits 1 if there is one.
"""
import os
import re
import sys

MAX_FILE, MAX_FN = 800, 120
SKIP = {"target", ".git", "node_modules", ".tools", "fuzz", "tests"}
FN = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def sources(root):
    for dp, dn, fn in os.walk(root):
        dn[:] = sorted(d for d in dn if d not in SKIP)
        for f in sorted(fn):
            if f.endswith(".rs") and f != "tests.rs":
                yield os.path.join(dp, f)


def check(path):
    lines = open(path, errors="replace").read().split("\n")
    problems = []
    if len(lines) > MAX_FILE:
        problems.append(f"{path}: {len(lines)} lines (at most {MAX_FILE})")
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m or line.rstrip().endswith(";"):
            continue
        indent = m.group(1)
        for j in range(i, len(lines)):
            if lines[j].startswith(indent + "}") and not lines[j].startswith(indent + "} else"):
                length = j - i + 1
                if length > MAX_FN:
                    problems.append(
                        f"{path}:{i + 1}: fn {m.group(7)} is {length} lines (at most {MAX_FN})"
                    )
                break
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    problems = [p for path in sources(root) for p in check(path)]
    for p in problems:
        print(p)
    print(f"{len(problems)} rooms over their bounds" if problems else "every room within bounds")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
