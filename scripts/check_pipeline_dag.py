#!/usr/bin/env python3
"""Checks that the packet pipeline (dataplane/core/src/pipeline) is a one-way graph.

Each pipeline module may use only the modules in the layers below its own (LAYERS, top first);
the modules of a folder module obey that folder's own layers (INNER). A module "uses" another when
its code names it in a path: `super::x`, `super::super::x`, `self::x` or `crate::pipeline::x`
(a group `{a, b::c}` names a and b). Naming an item of the pipeline's root (`super::Verdict` from
a top-level file) counts as using the root, the top: lower modules import from the module that
defines a thing, never from the root's re-exports. Comments and the unit tests at the end of a
file (from its first `#[cfg(test)]`) are not read. A file that no layer lists fails the check
too, so a new module has to be placed.

Usage: scripts/check_pipeline_dag.py [--root DIR] [--self-test]
"""

import argparse
import re
import sys
from pathlib import Path

# Top first. A module may use the modules of later layers only; modules of one layer are
# independent of each other.
LAYERS = [
    ["mod"],  # process, process_burst: the walk
    ["flow"],  # state machine, new flows, MPTCP, announcing
    ["egress"],  # NAT rewrite, DSR tunnel, ICMP errors to a flow's backend
    ["reply", "classify"],  # answers the gateway makes itself; what a packet is for
    ["parse", "context"],  # headers read once; worker, shared tables, Ctx
    ["announce", "verdict", "frame"],  # the outputs, and the frame
]

# The layers inside folder modules, top first (`mod` is the folder's mod.rs).
INNER = {
    "flow": [["mod"], ["mptcp", "migration"], ["announcing", "state"]],
    "egress": [["mod"], ["dsr", "nat"]],
}

PATH = re.compile(r"\b(crate::pipeline|(?:super::)+super|super|self)::")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def rank(layers, name):
    for i, layer in enumerate(layers):
        if name in layer:
            return i
    return None


def code_of(text):
    """The file's code: comments and the trailing unit tests removed."""
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    return "\n".join(line.split("//", 1)[0] for line in text.split("\n"))


def group_names(code, at):
    """The first-level names of a `{...}` group starting at `at`, and the group's end."""
    depth, names, start = 0, [], None
    for i in range(at, len(code)):
        c = code[i]
        if c == "{":
            depth += 1
            if depth == 1:
                start = i + 1
        elif c in ",}" and depth == 1:
            m = IDENT.match(code[start:i].strip())
            if m:
                names.append(m.group(0))
            start = i + 1
        if c == "}":
            depth -= 1
            if depth == 0:
                return names, i
    return names, len(code)


def named(code):
    """(prefix, name, line) for every path the code names through one of the prefixes."""
    out = []
    for m in PATH.finditer(code):
        line = code.count("\n", 0, m.start()) + 1
        rest = m.end()
        if code.startswith("{", rest):
            names, _ = group_names(code, rest)
        else:
            ident = IDENT.match(code, rest)
            names = [ident.group(0)] if ident else []
        out += [(m.group(1), n, line) for n in names if n != "self"]
    return out


def module_of(rel):
    """(top-level module, child within its folder or None) of a file's path in the pipeline."""
    parts = rel.with_suffix("").parts
    if len(parts) == 1:
        return parts[0], None
    return parts[0], parts[1]


def resolve(top, child, prefix, name, tops, children):
    """What a path names, as (top-level module, child or None); ("?", None): nothing here."""
    kids = children.get(top, set())
    if prefix == "crate::pipeline":
        return (name, None) if name in tops else ("mod", None)
    in_folder = child is not None and child != "mod"
    if prefix == "self":
        if child is None:
            return (top, None)
        if child == "mod":
            return (top, name) if name in kids else (top, "mod")
        return (top, child)
    if prefix == "super":
        if not in_folder:  # a top-level file or a folder's mod.rs: `super` is the root
            return (name, None) if name in tops else ("mod", None)
        return (top, name) if name in kids else (top, "mod")
    if prefix == "super::super" and in_folder:
        return (name, None) if name in tops else ("mod", None)
    return ("?", None)


def check(files):
    """Violations (strings) of the layering in `files`: {relative path: text}."""
    tops = {module_of(p)[0] for p in files}
    children = {}
    for p in files:
        t, c = module_of(p)
        if c is not None:
            children.setdefault(t, set()).add(c)
    errors = []
    for p, text in sorted(files.items()):
        top, child = module_of(p)
        if rank(LAYERS, top) is None:
            errors.append(f"{p}: module `{top}` is in no layer of {Path(__file__).name}")
            continue
        if child is not None and rank(INNER.get(top, []), child) is None:
            errors.append(f"{p}: `{top}::{child}` is in no layer of `{top}`")
            continue
        if top == "mod":
            continue
        for prefix, name, line in named(code_of(text)):
            t, c = resolve(top, child, prefix, name, tops, children)
            if t == "?":
                continue
            if t != top:
                if rank(LAYERS, t) is None or rank(LAYERS, t) <= rank(LAYERS, top):
                    errors.append(
                        f"{p}:{line}: `{top}` uses `{t}` (through `{prefix}::{name}`),"
                        f" which is not below it"
                    )
            elif child is not None and c is not None and c != child:
                inner = INNER.get(top, [])
                if rank(inner, c) is None or rank(inner, c) <= rank(inner, child):
                    errors.append(
                        f"{p}:{line}: `{top}::{child}` uses `{top}::{c}`"
                        f" (through `{prefix}::{name}`), which is not below it"
                    )
    return errors


def self_test():
    ok = {
        Path("mod.rs"): "use self::flow::x;",
        Path("flow/mod.rs"): "use crate::pipeline::egress::to_backend;\nuse self::mptcp::Syn;",
        Path("flow/mptcp.rs"): "use super::announcing;\nuse crate::pipeline::parse::{self, Ip};",
        Path("flow/announcing.rs"): "use crate::pipeline::announce::{A, B};",
        Path("flow/state.rs"): "",
        Path("egress/mod.rs"): "use crate::pipeline::{reply, parse::Ip};",
        Path("egress/dsr.rs"): "use super::super::reply::x;",
        Path("egress/nat.rs"): "",
        Path("reply.rs"): "use super::context::Ctx; // super::flow in a comment is not read",
        Path("classify.rs"): "use super::parse::Ip;\n#[cfg(test)]\nmod t { use super::flow; }",
        Path("parse.rs"): "use super::verdict::DropReason;",
        Path("context.rs"): "use super::announce::Q;",
        Path("announce.rs"): "",
        Path("verdict.rs"): "",
        Path("frame.rs"): "",
    }
    assert check(ok) == [], check(ok)
    bad = [
        (Path("egress/dsr.rs"), "use crate::pipeline::flow::x;"),  # up
        (Path("egress/dsr.rs"), "use super::super::Verdict;"),  # the root's re-export
        (Path("reply.rs"), "use super::{parse::Ip, classify};"),  # same layer
        (Path("parse.rs"), "fn f() { super::flow::forward(); }"),  # inline path, up
        (Path("flow/announcing.rs"), "use super::mptcp::scan;"),  # up inside flow
        (Path("flow/state.rs"), "use super::forward;"),  # flow's root
        (Path("newmod.rs"), ""),  # unplaced
    ]
    for path, text in bad:
        files = dict(ok)
        files[path] = text
        assert check(files), f"not caught: {path}: {text}"
    print("self-test: the check accepts a layered tree and catches 7 kinds of violation")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parent.parent / "dataplane/core/src/pipeline"
    ap.add_argument("--root", type=Path, default=default)
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        self_test()
    files = {p.relative_to(args.root): p.read_text() for p in args.root.rglob("*.rs")}
    errors = check(files)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"the pipeline is not a one-way graph ({len(errors)} violations)", file=sys.stderr)
        return 1
    layers = " > ".join("/".join(layer) for layer in LAYERS)
    print(f"pipeline layers hold ({len(files)} files): {layers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
