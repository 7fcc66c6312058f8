#!/usr/bin/env python3
"""Keeps the workspace's layout honest (issue 15): no source file over 800 lines, and no import
circle between the modules of a crate (the crate root, which every module may name for the
crate's shared types, does not count). Run by scripts/test.sh; exits non-zero naming what is
wrong."""
import os
import re
import sys

MAX_LINES = 800
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates")


def modules(src):
    """Module path (tuple) -> file, for every .rs file under a crate's src/."""
    out = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)[:-3].split(os.sep)
            if rel[-1] in ("lib", "main", "mod"):
                rel = rel[:-1]
            out[tuple(rel)] = os.path.join(dirpath, f)
    return out


def uses(path, me, known):
    """The modules of this crate that `path` (module `me`) names."""
    text = open(path, encoding="utf-8").read()
    # Test modules may reach anything.
    text = text.split("#[cfg(test)]\nmod tests {")[0]
    found = set()
    for m in re.finditer(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)", text):
        base = () if m.group(1) == "crate" else me[:-1]
        parts = list(base) + m.group(2).strip(":").split("::")
        # The longest prefix that is a module of this crate.
        for n in range(len(parts), 0, -1):
            cand = tuple(parts[:n])
            if cand in known:
                found.add(cand)
                break
    # Braced groups: `use crate::{a::X, b}` and `use super::{x, y}`.
    for m in re.finditer(r"\buse (crate|super)::\{([^;]*)\};", text, re.S):
        base = () if m.group(1) == "crate" else me[:-1]
        for item in re.split(r"[,\s]+", m.group(2)):
            head = item.split("::")[0].strip("{} ")
            if head and tuple(list(base) + [head]) in known:
                found.add(tuple(list(base) + [head]))
    return {f for f in found if f != me and f != () and not (len(f) < len(me) and me[: len(f)] == f)}


def cycles(graph):
    """Every elementary cycle's node list, found by DFS (graphs here are small)."""
    found, seen = [], set()

    def dfs(node, stack, on):
        for nxt in sorted(graph.get(node, ())):
            if nxt in on:
                cyc = stack[stack.index(nxt):]
                key = frozenset(cyc)
                if key not in seen:
                    seen.add(key)
                    found.append(cyc + [nxt])
            elif len(stack) < 12:
                dfs(nxt, stack + [nxt], on | {nxt})

    for n in sorted(graph):
        dfs(n, [n], {n})
    return found


def main():
    bad = []
    for crate in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, crate, "src")
        if not os.path.isdir(src):
            continue
        mods = modules(src)
        for path in mods.values():
            n = sum(1 for _ in open(path, encoding="utf-8"))
            if n > MAX_LINES:
                bad.append(f"{os.path.relpath(path, ROOT)}: {n} lines (at most {MAX_LINES})")
        # A module is its top-level part (a module's children count as the module).
        top = lambda m: m[:1] if m and m[0] not in ("api", "v2", "reconcile", "cli", "endpoint", "autoscale") else m[:2]
        graph = {}
        for me, path in mods.items():
            if me == ():
                continue
            for dep in uses(path, me, set(mods)):
                a, b = top(me), top(dep)
                if a != b and not (len(b) < len(a) and a[: len(b)] == b) and not (len(a) < len(b) and b[: len(a)] == a):
                    graph.setdefault(a, set()).add(b)
        for cyc in cycles(graph):
            bad.append(f"crates/{crate}: import circle " + " -> ".join("::".join(c) for c in cyc))
    for b in bad:
        print(b, file=sys.stderr)
    if bad:
        sys.exit(1)
    print("layout: every file within 800 lines, no import circle")


main()
