"""What the web server lets through: the per-launch token, the Host and Origin a request names, and
the files a request or a recipe may touch (only under the models and output folders).

The server listens on the loopback address, but any web page the user visits can make the browser
send requests there: a foreign page cannot read the token (it is in the URL the server opened and
then in an HttpOnly, SameSite=Strict cookie), and a page that rebinds its own DNS name to 127.0.0.1
still sends its own name as Host and Origin, which is refused.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..syntax import ast
from ..syntax.parser import parse

COOKIE = "mecha_ui_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class Refused(Exception):
    """A request the server will not serve; `reason` is shown to the user."""

    def __init__(self, reason: str, status: int = 403):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class Guard:
    models: Path
    output: Path
    token: str = field(default_factory=new_token)
    hosts: tuple[str, ...] = LOOPBACK_NAMES   # host names a request may name (any port)

    def __post_init__(self) -> None:
        self.models = Path(self.models).expanduser().resolve()
        self.output = Path(self.output).expanduser().resolve()

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.models, self.output) if self.output != self.models else (self.models,)

    # -- requests -----------------------------------------------------------------------------

    def host_ok(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        name = urlsplit("//" + host_header).hostname
        return name is not None and name.lower() in self.hosts

    def origin_ok(self, origin: str | None) -> bool:
        """No Origin (a top-level navigation, a same-origin GET) is fine; one naming another site is not."""
        if origin is None:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and (parts.hostname or "").lower() in self.hosts

    def token_ok(self, given: str | None) -> bool:
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    # -- files --------------------------------------------------------------------------------

    def inside(self, path: str | os.PathLike) -> bool:
        """Whether `path`, every link followed, lies under the models or the output folder."""
        real = Path(path).expanduser().resolve()
        return any(real == r or r in real.parents for r in self.roots)

    def file_in(self, root: Path, name: str) -> Path:
        """`root/name` for a plain file name: no folders, no `..`, no link out of `root`."""
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise Refused(f"{name!r} is not a file name in the folder (no paths, no `..`)")
        path = root / name
        real = path.resolve()
        if real.parent != root and root not in real.parents:
            raise Refused(f"{name!r} links outside the folder the server was started with")
        return path

    def recipe_paths(self, text: str, base: Path | None = None, seen: set[Path] | None = None) -> list[str]:
        """What a recipe names outside the folders, read from its text before it is checked: the
        literal file names of `model(…)` and `lora(…)`, and imports other than `std/…`, which must
        be files beside it (else the loader would look on MECHA_PATH), themselves read the same way."""
        base = base or self.output
        seen = set() if seen is None else seen
        tree, _ = parse(text, "<editor>")
        if tree is None:
            return []
        out = []
        for node in _walk(tree):
            if isinstance(node, (ast.Import, ast.FromImport)) and not node.path.startswith("std/"):
                name = node.path if Path(node.path).suffix else node.path + ".mecha"
                path = base / name
                if not path.is_file() or not self.inside(path):
                    out.append(node.path)
                    continue
                real = path.resolve()
                if real not in seen:
                    seen.add(real)
                    try:
                        more = real.read_text(encoding="utf-8")
                    except (OSError, ValueError):
                        continue  # the checker says why it cannot be read
                    out += self.recipe_paths(more, real.parent, seen)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("model", "lora"):
                first = node.args[0] if node.args else None
                if isinstance(first, ast.String) and not any(self.inside(r / first.value) for r in self.roots):
                    out.append(first.value)
        return out

    def program_paths(self, program) -> list[str]:
        """What a checked program reads or writes outside the folders (a param's value included)."""
        out = [n.load.path for n in program.builder.file_nodes() if not self.inside(n.load.path)]
        out += [ex.path for ex in program.runnable_exports if not _under(Path(ex.path), self.output)]
        return out


def _under(path: Path, root: Path) -> bool:
    real = path.expanduser().resolve()
    return real.parent == root or root in real.parents


def _walk(node):
    """Every AST node under `node` (dataclass fields, tuples of nodes)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (tuple, list)):
            stack.extend(n)
            continue
        if not isinstance(n, ast.Node):
            continue
        yield n
        for name in getattr(n, "__dataclass_fields__", {}):
            v = getattr(n, name)
            if isinstance(v, (ast.Node, tuple, list)):
                stack.append(v)
