"""Static name checks of one module, before anything is evaluated.

Reports (all of them, not just the first): names bound twice, undefined names (with a
did-you-mean), names used before their `let`, duplicate template parameters, and recursion
among `def`s. Works on unused templates too, which evaluation alone would never look into.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from ..diagnostics import Diagnostic, Label, Span, codes, did_you_mean, error
from ..syntax import ast


def stmt_bindings(stmt: ast.Stmt) -> list[tuple[str, Span | None]]:
    if isinstance(stmt, ast.Import):
        return [(stmt.alias, stmt.alias_span or stmt.span)]
    if isinstance(stmt, ast.FromImport):
        return [(n.bound, n.span) for n in stmt.names]
    if isinstance(stmt, (ast.Param, ast.Let, ast.Def)):
        return [(stmt.name, stmt.name_span or stmt.span)]
    return []


def sub_expressions(e) -> Iterator:
    """Direct children of an expression that are expressions (or splats)."""
    if isinstance(e, (ast.Attribute,)):
        yield e.value
    elif isinstance(e, ast.Index):
        yield e.value
        yield e.index
    elif isinstance(e, ast.Splat):
        yield e.value
    elif isinstance(e, ast.Call):
        yield e.func
        yield from e.args
        for k in e.kwargs:
            yield k.value
    elif isinstance(e, ast.ListExpr):
        yield from e.items
    elif isinstance(e, ast.UnaryOp):
        yield e.operand
    elif isinstance(e, ast.BinOp):
        yield e.left
        yield e.right
    elif isinstance(e, ast.Pipe):
        yield e.value
        yield e.call
    elif isinstance(e, ast.HyperMap):
        for entry in e.entries:
            yield entry.value
    elif isinstance(e, ast.With):
        yield e.base
        yield e.overrides


class _Visible:
    """The names an expression may use: its local names (template parameters, block `let`s,
    comprehension variables), and the module's top-level names bound before statement `index`
    (templates always; inside a template, every top-level name). Computed on demand, so checking
    a module of n statements is linear, not quadratic."""

    __slots__ = ("order", "defs", "index", "local")

    def __init__(self, order: dict[str, int], defs: dict, index: int | None, local: frozenset[str] = frozenset()):
        self.order, self.defs, self.index, self.local = order, defs, index, local

    def __contains__(self, name: str) -> bool:
        if name in self.local:
            return True
        i = self.order.get(name)
        return i is not None and (self.index is None or i < self.index or name in self.defs)

    def __or__(self, names) -> "_Visible":
        return _Visible(self.order, self.defs, self.index, self.local | frozenset(names))

    def __iter__(self):
        yield from self.local
        yield from (n for n in self.order if n in self and n not in self.local)


class NameChecker:
    def __init__(self, builtins: Iterable[str]):
        self.builtins = set(builtins)
        self.diags: list[Diagnostic] = []

    def check_module(self, module: ast.Module) -> list[Diagnostic]:
        first: dict[str, Span | None] = {}
        order: dict[str, int] = {}
        defs: dict[str, ast.Def] = {}
        for i, stmt in enumerate(module.statements):
            for name, span in stmt_bindings(stmt):
                if name in first:
                    self.diags.append(error(
                        codes.ALREADY_BOUND, f"`{name}` is already bound", span, label="bound again here",
                        secondary=[Label(first[name], "first bound here")] if first[name] else [],
                        help="names are bound once; choose another name"))
                    continue
                first[name] = span
                order[name] = i
            if isinstance(stmt, ast.Def):
                defs.setdefault(stmt.name, stmt)
        top = set(first)
        uses = self.template_uses(defs, top)
        for i, stmt in enumerate(module.statements):
            # Templates may refer to each other in any order; other names must come first.
            visible = _Visible(order, defs, i)
            if not isinstance(stmt, ast.Def):
                self.early_calls(stmt, i, defs, uses, order)
            if isinstance(stmt, ast.Param):
                if stmt.default is not None:
                    self.expr(stmt.default, visible, top, order)
            elif isinstance(stmt, ast.Let):
                self.expr(stmt.value, visible, top, order)
            elif isinstance(stmt, ast.Def):
                self.definition(stmt, _Visible(order, defs, None), top, order)
            elif isinstance(stmt, ast.Export):
                self.expr(stmt.value, visible, top, order)
                self.expr(stmt.path, visible, top, order)
        self.recursion(defs)
        return self.diags

    def definition(self, d: ast.Def, visible: _Visible, top: set[str], order: dict[str, int]) -> None:
        seen: dict[str, Span | None] = {}
        scope = visible
        for p in d.params:
            if p.name in seen:
                self.diags.append(error(codes.DUPLICATE_PARAMETER, f"template `{d.name}` has two parameters named `{p.name}`",
                                        p.span, label="second one here",
                                        secondary=[Label(seen[p.name], "first one here")] if seen[p.name] else []))
            seen[p.name] = p.span
            if p.default is not None:
                self.expr(p.default, visible, top, order)
            scope = scope | {p.name}
        if isinstance(d.body, ast.Block):
            local: dict[str, Span | None] = {}
            for let in d.body.lets:
                self.expr(let.value, scope, top, order)
                if let.name in local or let.name in seen:
                    prev = local.get(let.name) or seen.get(let.name)
                    self.diags.append(error(codes.ALREADY_BOUND, f"`{let.name}` is already bound", let.name_span or let.span,
                                            label="bound again here",
                                            secondary=[Label(prev, "first bound here")] if prev else []))
                local[let.name] = let.name_span or let.span
                scope = scope | {let.name}
            self.expr(d.body.result, scope, top, order)
        else:
            self.expr(d.body, scope, top, order)

    def expr(self, e, scope: _Visible, top: set[str], order: dict[str, int]) -> None:
        stack = [(e, scope)]
        while stack:
            node, sc = stack.pop()
            if isinstance(node, ast.Name):
                if node.id in sc or node.id in self.builtins:
                    continue
                if node.id in top:
                    self.diags.append(error(codes.USED_BEFORE_BOUND, f"`{node.id}` is used before it is bound", node.span,
                                            label="used here",
                                            help="move its `let` (or `param`, `import`) above this line"))
                    continue
                suggestion = did_you_mean(node.id, list(sc) + sorted(self.builtins))
                self.diags.append(error(codes.UNDEFINED_NAME, f"undefined name `{node.id}`", node.span, label="not defined",
                                        help=f"did you mean `{suggestion}`?" if suggestion else None))
            elif isinstance(node, ast.ListComp):
                stack.append((node.iterable, sc))
                stack.append((node.element, sc | {node.var}))
            else:
                for child in sub_expressions(node):
                    stack.append((child, sc))

    @staticmethod
    def template_uses(defs: dict[str, ast.Def], top: set[str]) -> dict[str, set[str]]:
        """For each template, the top-level names other than templates its body uses, through
        the templates it calls too (computed once per group of templates that call each other,
        callees first, so a chain of thousands of templates costs linear time)."""
        direct: dict[str, set[str]] = {}
        calls: dict[str, set[str]] = {}
        for name, d in defs.items():
            locals_ = {p.name for p in d.params} | ({l.name for l in d.body.lets} if isinstance(d.body, ast.Block) else set())
            bodies = [d.body.result, *[l.value for l in d.body.lets]] if isinstance(d.body, ast.Block) else [d.body]
            bodies += [p.default for p in d.params if p.default is not None]
            used = {n for b in bodies for n in free_names(b) if n in top and n not in locals_}
            calls[name] = {n for n in used if n in defs}
            direct[name] = used - calls[name]
        out: dict[str, set[str]] = {}
        for scc in strongly_connected(calls):  # callees' groups come first
            names = set(direct[scc[0]]) if len(scc) == 1 else set().union(*(direct[n] for n in scc))
            for n in scc:
                for callee in calls[n]:
                    if callee not in scc:
                        names |= out[callee]
            for n in scc:
                out[n] = names
        return out

    def early_calls(self, stmt: ast.Stmt, index: int, defs: dict[str, ast.Def], uses: dict[str, set[str]],
                    order: dict[str, int]) -> None:
        """A template used by statement `index` must find every name it uses already bound."""
        exprs = {ast.Let: lambda s: [s.value], ast.Export: lambda s: [s.value, s.path],
                 ast.Param: lambda s: [s.default] if s.default is not None else []}.get(type(stmt), lambda s: [])
        for e in exprs(stmt):
            for node in _names_in(e):
                if node.id not in defs:
                    continue
                late = sorted((n for n in uses[node.id] if order.get(n, -1) >= index), key=lambda n: order[n])
                if late:
                    self.diags.append(error(
                        codes.USED_BEFORE_BOUND,
                        f"`{node.id}` is used before `{late[0]}`, which it uses, is bound", node.span,
                        label="used here", help=f"move this statement below the `let` (or `param`, `import`) "
                                                f"of `{late[0]}`"))

    def recursion(self, defs: dict[str, ast.Def]) -> None:
        calls: dict[str, set[str]] = {}
        for name, d in defs.items():
            params = {p.name for p in d.params}
            bodies = [d.body.result, *[l.value for l in d.body.lets]] if isinstance(d.body, ast.Block) else [d.body]
            locals_ = params | ({l.name for l in d.body.lets} if isinstance(d.body, ast.Block) else set())
            refs: set[str] = set()
            for b in bodies:
                refs |= {n for n in free_names(b) if n in defs and n not in locals_}
            calls[name] = refs
        reported: set[frozenset] = set()
        cyclic = {n for scc in strongly_connected(calls) for n in scc
                  if len(scc) > 1 or scc[0] in calls.get(scc[0], ())}
        for start in (d for d in defs if d in cyclic):  # only these can be on a cycle
            path = self._cycle_from(start, calls)
            if path and frozenset(path) not in reported:
                reported.add(frozenset(path))
                chain = " → ".join(path + [path[0]])
                d = defs[path[0]]
                self.diags.append(error(codes.RECURSIVE_TEMPLATE, f"template `{path[0]}` is recursive: {chain}",
                                        d.name_span or d.span, label="defined here",
                                        help="templates are inlined when used, so they cannot call themselves"))

    @staticmethod
    def _cycle_from(start: str, calls: dict[str, set[str]]) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            cur, path = stack.pop()
            for nxt in sorted(calls.get(cur, ())):
                if nxt == start:
                    return path
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None


def free_names(e) -> set[str]:
    out: set[str] = set()
    stack = [(e, frozenset())]
    while stack:
        node, bound = stack.pop()
        if isinstance(node, ast.Name):
            if node.id not in bound:
                out.add(node.id)
        elif isinstance(node, ast.ListComp):
            stack.append((node.iterable, bound))
            stack.append((node.element, bound | {node.var}))
        else:
            for c in sub_expressions(node):
                stack.append((c, bound))
    return out


def _names_in(e):
    """Every `Name` node under an expression (comprehension variables included)."""
    stack = [e]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            yield node
        elif isinstance(node, ast.ListComp):
            stack.extend((node.iterable, node.element))
        else:
            stack.extend(sub_expressions(node))


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of a call graph (Tarjan's algorithm, iteratively), each
    listed after every component it calls into."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                out.append(component)
    return out
