"""Evaluating the key expressions of ONE tensor key: every output's tensor for that key at once.

`KeyProgram` turns the expressions of all outputs' tensors named `key` into a small DAG in which
structurally equal sub-expressions are one node (in time linear in the number of distinct
expression objects, even when the plan shares sub-trees heavily). `Evaluator.run` evaluates the
nodes in dependency order, frees each value after its last use, and yields every output tensor
as soon as it exists, already cast to the output dtype and on the CPU, so it can be written and
dropped at once.

Floating inputs are converted to the compute dtype (`Plan.precision`) on the target device before
any arithmetic; non-float inputs are passed as they are. An output that is a plain read of an input
tensor with the same dtype and shape is copied byte for byte (exact, and no conversion work).

Keys whose expression uses only element-wise operations (the built-ins, and methods that declare
themselves element-wise) can be evaluated in slices of the flattened tensor (`run(prog, span)`):
memory then stays bounded by the slice size however large the tensor or the number of models, and
one huge key can be spread over several threads. Slice boundaries are multiples of a large power
of two, so results are identical to whole-tensor evaluation.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from ..dtypes import FLOAT_DTYPES, element_size
from ..methods.registry import REGISTRY, MethodRegistry
from ..runtime.plan import ADAPTER_OP, BUILTIN_OPS, LORA_OPS, SOURCE_OPS, KeyExpr, Op, OutTensor, Read
from .errors import RuntimeFailure
from .reader import InputReader, torch_dtype, view_as

COMPUTE_DTYPES = {"fp32": torch.float32, "fp64": torch.float64}


def compute_dtype(precision: str) -> torch.dtype:
    try:
        return COMPUTE_DTYPES[precision]
    except KeyError:
        raise RuntimeFailure(f"unknown precision {precision!r} (expected fp32 or fp64)") from None


class Cancelled(Exception):
    """Raised inside a key task when the run is being stopped (another task failed)."""


@dataclass
class Node:
    expr: KeyExpr
    children: tuple[int, ...]
    uses: int = 0  # consumers: parent edges (with multiplicity) plus output roots
    roots: list[int] = field(default_factory=list)  # targets computed through the compute dtype
    raw_roots: list[int] = field(default_factory=list)  # targets copied byte for byte (Reads)
    feeds_ops: bool = False


class KeyProgram:
    """The distinct nodes needed for the targets (one OutTensor per output), children first."""

    def __init__(self, key: str, targets: Sequence[OutTensor]):
        self.key = key
        self.targets = tuple(targets)
        self.nodes: list[Node] = []
        by_id: dict[int, int] = {}
        by_sig: dict[object, int] = {}
        self.root_of: list[int] = []
        for ti, t in enumerate(self.targets):
            idx = self._visit(t.expr, by_id, by_sig)
            node = self.nodes[idx]
            node.uses += 1
            self.root_of.append(idx)
            e = node.expr
            if isinstance(e, Read) and e.dtype == t.dtype and tuple(e.shape) == tuple(t.shape):
                node.raw_roots.append(ti)
            elif isinstance(e, Read) and e.dtype not in FLOAT_DTYPES:
                raise RuntimeFailure(
                    f"internal error: non-float tensor {key!r} ({e.dtype}) cannot become {t.dtype} "
                    f"{list(t.shape)}: non-float tensors are copied unchanged", key=key)
            else:
                node.roots.append(ti)
        for node in self.nodes:
            for c in node.children:
                self.nodes[c].uses += 1
                self.nodes[c].feeds_ops = True

    def _visit(self, root: KeyExpr, by_id: dict[int, int], by_sig: dict[object, int]) -> int:
        if id(root) in by_id:
            return by_id[id(root)]
        stack: list[tuple[KeyExpr, bool]] = [(root, False)]
        while stack:
            e, expanded = stack.pop()
            if id(e) in by_id:
                continue
            if isinstance(e, Read):
                sig: object = ("read", e.source, e.key, e.dtype, tuple(e.shape), e.begin, e.end)
                by_id[id(e)] = self._intern(sig, e, (), by_sig)
            elif isinstance(e, Op):
                if not expanded:
                    stack.append((e, True))
                    stack.extend((a, False) for a in reversed(e.args) if id(a) not in by_id)
                    continue
                kids = tuple(by_id[id(a)] for a in e.args)
                sig = ("op", e.op, _exact(e.hypers), kids)
                by_id[id(e)] = self._intern(sig, e, kids, by_sig)
            else:
                raise RuntimeFailure(f"internal error: unknown plan node {type(e).__name__} for "
                                     f"key {self.key!r}", key=self.key)
        return by_id[id(root)]

    def _intern(self, sig: object, e: KeyExpr, kids: tuple[int, ...], by_sig: dict) -> int:
        try:
            found = by_sig.get(sig)
        except TypeError:  # an unhashable hyperparameter value: no sharing for this node
            sig, found = ("id", id(e)), None
        if found is not None:
            return found
        self.nodes.append(Node(e, kids))
        by_sig[sig] = len(self.nodes) - 1
        return len(self.nodes) - 1


def _exact(value: object) -> object:
    """A hashable stand-in for hyperparameter values that tells apart what `==` does not but
    arithmetic does: 0.0 and -0.0, 1 and 1.0 and True."""
    if isinstance(value, tuple):
        return tuple(_exact(v) for v in value)
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def is_elementwise(op: str, registry: MethodRegistry | None = None) -> bool:
    """Whether `op` computes each output element from the same position of its inputs only, and
    accepts 1-D slices: the built-ins, and methods registered with `elementwise=True`."""
    if op in BUILTIN_OPS:
        return True
    spec = (registry if registry is not None else REGISTRY).get(op)
    return spec is not None and spec.elementwise


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def can_slice(prog: KeyProgram, registry: MethodRegistry | None = None) -> bool:
    """True when every node of `prog` is element-wise over floating tensors of one shape."""
    shape = tuple(prog.targets[0].shape)
    if any(tuple(t.shape) != shape for t in prog.targets):
        return False
    for node in prog.nodes:
        e = node.expr
        if isinstance(e, Read):
            if e.dtype not in FLOAT_DTYPES or tuple(e.shape) != shape:
                return False
        elif not is_elementwise(e.op, registry):
            return False
    return True


def streamed_spec(op: str, registry: MethodRegistry | None = None):
    """The stream factory of `op` (see MethodSpec.streamed), or None."""
    if op in BUILTIN_OPS:
        return None
    spec = (registry if registry is not None else REGISTRY).get(op)
    return spec.streamed if spec is not None else None


def can_stream(prog: KeyProgram, registry: MethodRegistry | None = None) -> bool:
    """True when `prog` can be evaluated in slices with passes (`Evaluator.run_streamed`): every
    node element-wise or streamed, over floating tensors of one shape, and at least one streamed."""
    shape = tuple(prog.targets[0].shape)
    if any(tuple(t.shape) != shape for t in prog.targets):
        return False
    streamed = False
    for node in prog.nodes:
        e = node.expr
        if isinstance(e, Read):
            if e.dtype not in FLOAT_DTYPES or tuple(e.shape) != shape:
                return False
        elif streamed_spec(e.op, registry) is not None:
            streamed = True
        elif not is_elementwise(e.op, registry):
            return False
    return streamed


def _shape_for(factory, prog: KeyProgram) -> dict:
    """{"shape": the key's shape} for stream factories that take a `shape` keyword (a method that
    works per row needs more than the number of elements), else nothing."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {"shape": tuple(prog.targets[0].shape)} if "shape" in params else {}


def describe(e: KeyExpr) -> str:
    if isinstance(e, Read):
        return f"input {e.source} tensor {e.key!r}"
    return f"`{e.op}`"


class Evaluator:
    """Shared per-run settings; `run()` is called once per key, from any thread."""

    def __init__(self, reader: InputReader, *, device: torch.device,
                 dtype: torch.dtype = torch.float32, registry: MethodRegistry | None = None,
                 check_finite: bool = False):
        self.reader = reader
        self.device = device
        self.dtype = dtype
        self.registry = registry if registry is not None else REGISTRY
        self.check_finite = check_finite
        self.non_blocking = device.type == "cuda"

    def run(self, prog: KeyProgram, span: tuple[int, int] | None = None,
            cancelled: Callable[[], bool] | None = None, streams: dict[int, object] | None = None
            ) -> Iterator[tuple[int, torch.Tensor, bool | None]]:
        """Yield (target index, CPU tensor in the target's dtype and shape, finite or None).

        With `span=(lo, hi)` (only for programs where `can_slice` holds, or with `streams`),
        evaluate elements `lo:hi` of the flattened tensors instead, and yield 1-D tensors of
        `hi - lo` elements. `streams` maps node indices to streams ready to `apply`.
        """
        key = prog.key
        values: dict[int, torch.Tensor] = {}
        remaining = [n.uses for n in prog.nodes]
        for idx, node in enumerate(prog.nodes):
            if cancelled is not None and cancelled():
                raise Cancelled()
            e = node.expr
            if isinstance(e, Read):
                if span is None:
                    raw, shape = self.reader.read_raw(e), tuple(e.shape)
                else:
                    size = element_size(e.dtype)
                    raw = self.reader.read_raw(e, span[0] * size, span[1] * size)
                    shape = (span[1] - span[0],)
                for ti in node.raw_roots:
                    finite = None
                    if self.check_finite and e.dtype in FLOAT_DTYPES:
                        finite = _all_finite(view_as(raw, e.dtype, shape))
                    yield ti, raw, finite
                    remaining[idx] -= 1
                if not (node.roots or node.feeds_ops):
                    del raw
                    continue
                try:
                    value = self._to_compute(view_as(raw, e.dtype, shape), e.dtype)
                except Exception as ex:
                    raise _device_failure(f"loading {e.key!r} from input {e.source}", key, ex,
                                          None) from ex
                del raw
            else:
                args = [values[c] for c in node.children]
                value = self._apply(e, args, key, streams.get(idx) if streams else None)
                del args
                for c in node.children:
                    remaining[c] -= 1
                    if remaining[c] == 0:
                        values.pop(c, None)
            for ti in node.roots:
                t = prog.targets[ti]
                want = tuple(t.shape) if span is None else (span[1] - span[0],)
                try:
                    out, finite = self._finalize(value, t, want, e, key)
                except RuntimeFailure:
                    raise
                except Exception as ex:
                    raise _device_failure(f"converting the result to {t.dtype}", key, ex,
                                          e.origin if isinstance(e, Op) else None) from ex
                yield ti, out, finite
                del out
                remaining[idx] -= 1
            if remaining[idx] > 0:
                values[idx] = value
            del value

    def run_streamed(self, prog: KeyProgram, step: int,
                     cancelled: Callable[[], bool] | None = None
                     ) -> Iterator[tuple[int, torch.Tensor, bool | None, int, int]]:
        """Evaluate a program where `can_stream` holds in slices of `step` elements: for each
        streamed node (children first), the passes its stream wants over all slices of its
        arguments, then every slice of the outputs. Yields (target index, 1-D CPU tensor in the
        target's dtype, finite or None, first element, end element). Memory: a few slices."""
        n = numel(tuple(prog.targets[0].shape))
        spans = [(lo, min(lo + step, n)) for lo in range(0, n, step)] or [(0, 0)]
        streams: dict[int, object] = {}
        for idx, node in enumerate(prog.nodes):
            e = node.expr
            factory = streamed_spec(e.op, self.registry) if isinstance(e, Op) else None
            if factory is None:
                continue
            try:
                stream = factory(n, **self._kwargs(e, prog.key), **_shape_for(factory, prog))
            except Exception as ex:
                raise _op_failure(e, prog.key, ex) from ex
            while self._call(e, prog.key, stream.wants_pass):
                for span in spans:
                    if cancelled is not None and cancelled():
                        raise Cancelled()
                    args = self._args_on(prog, idx, span, streams)
                    self._call(e, prog.key, stream.observe, args)
                    del args
                self._call(e, prog.key, stream.end_pass)
            streams[idx] = stream
        for span in spans:
            for ti, out, finite in self.run(prog, span, cancelled, streams):
                yield ti, out, finite, span[0], span[1]

    def _args_on(self, prog: KeyProgram, target: int, span: tuple[int, int],
                 streams: dict[int, object]) -> list[torch.Tensor]:
        """The values of node `target`'s arguments on elements `span` (streams before `target`
        are ready to apply)."""
        need: set[int] = set()
        stack = list(prog.nodes[target].children)
        while stack:
            i = stack.pop()
            if i not in need:
                need.add(i)
                stack.extend(prog.nodes[i].children)
        values: dict[int, torch.Tensor] = {}
        for idx in sorted(need):  # children come before their parents in `prog.nodes`
            e = prog.nodes[idx].expr
            if isinstance(e, Read):
                size = element_size(e.dtype)
                raw = self.reader.read_raw(e, span[0] * size, span[1] * size)
                try:
                    values[idx] = self._to_compute(view_as(raw, e.dtype, (span[1] - span[0],)),
                                                   e.dtype)
                except Exception as ex:
                    raise _device_failure(f"loading {e.key!r} from input {e.source}", prog.key,
                                          ex, None) from ex
                del raw
            else:
                values[idx] = self._apply(e, [values[c] for c in prog.nodes[idx].children],
                                          prog.key, streams.get(idx))
        return [values[c] for c in prog.nodes[target].children]

    def _call(self, e: Op, key: str, fn: Callable, *args):
        """A stream's method, its failures reported like the method's own."""
        try:
            return fn(*args)
        except RuntimeFailure:
            raise
        except Exception as ex:
            raise _op_failure(e, key, ex) from ex

    def _kwargs(self, e: Op, key: str) -> dict:
        """The keyword arguments of a registered method's function: hyperparameters by their
        Python names, and the key name where the method asks for it."""
        spec = self.registry.get(e.op)
        kwargs = {}
        for name, value in dict(e.hypers).items():
            h = spec.hyper(name)  # recipes say `lambda` where Python says `lambda_`
            kwargs[getattr(h, "arg", name) if h is not None else name] = value
        if spec.key_param:
            kwargs[spec.key_param] = key
        return kwargs

    def _to_compute(self, t: torch.Tensor, dtype: str) -> torch.Tensor:
        if self.device.type != "cpu":
            t = t.to(self.device, non_blocking=self.non_blocking)
        if dtype in FLOAT_DTYPES:
            t = t.to(self.dtype)
        return t

    def _apply(self, e: Op, args: list[torch.Tensor], key: str, stream=None) -> torch.Tensor:
        hypers = dict(e.hypers)
        try:
            if stream is not None:  # a streamed method on one slice, its statistics gathered
                result = stream.apply(args)
            elif e.op == "add" or e.op == "sub":
                if len(args) != 2 or hypers:
                    raise RuntimeFailure(f"internal error: `{e.op}` takes two tensors and no "
                                         f"hyperparameters (key {key!r})", key=key, origin=e.origin)
                result = args[0] + args[1] if e.op == "add" else args[0] - args[1]
            elif e.op == "scale":
                if len(args) != 1 or set(hypers) != {"factor"}:
                    raise RuntimeFailure(f"internal error: `scale` takes one tensor and a `factor` "
                                         f"(key {key!r})", key=key, origin=e.origin)
                result = args[0] * hypers["factor"]
            elif e.op == ADAPTER_OP:
                from ..kinds.apply import evaluate

                result = evaluate(args, hypers)
            elif e.op in SOURCE_OPS:
                result = _source_op(e.op, args, hypers)
            elif e.op in LORA_OPS:
                from ..kinds.export import evaluate as lora_factor

                result = lora_factor(e.op, args, hypers)
            else:
                spec = self.registry.get(e.op)
                if spec is None:
                    raise RuntimeFailure(f"unknown merge method `{e.op}` (key {key!r})", key=key,
                                         origin=e.origin)
                result = spec.func(*args, **self._kwargs(e, key))
        except RuntimeFailure as f:
            if f.origin is None and f.key in (None, key):
                f.key, f.origin = key, e.origin
            raise
        except Exception as ex:  # a method's own failure, reported against the recipe line
            raise _op_failure(e, key, ex) from ex
        if not isinstance(result, torch.Tensor):
            raise RuntimeFailure(f"`{e.op}` returned {type(result).__name__}, not a tensor, for key "
                                 f"{key!r}", key=key, origin=e.origin)
        return result

    def _finalize(self, value: torch.Tensor, t: OutTensor, shape: tuple[int, ...], e: KeyExpr,
                  key: str) -> tuple[torch.Tensor, bool | None]:
        origin = e.origin if isinstance(e, Op) else None
        if tuple(value.shape) != shape:
            raise RuntimeFailure(
                f"{describe(e)} produced a tensor of shape {list(value.shape)} for key {key!r}, "
                f"but the output expects {list(shape)}", key=key, origin=origin)
        target = torch_dtype(t.dtype)
        finite: bool | None = None
        check = self.check_finite and t.dtype in FLOAT_DTYPES
        if check and t.dtype == "F8_E4M3":  # this fp8 has no inf: overflow saturates, so look first
            finite = _all_finite(value)
        out = value.to(target) if value.dtype != target else value
        if check and finite is None:
            finite = _all_finite(out)
        if out.device.type != "cpu":
            out = out.to("cpu")
        return out.contiguous(), finite


def _source_op(op: str, args: list[torch.Tensor], hypers: dict) -> torch.Tensor:
    """A model source's derived tensor from its stored parts (sources/model.py DERIVE_OPS)."""
    if op == "source.cat":
        return torch.cat(args, dim=0)
    if op == "source.reshape":
        return args[0].reshape(tuple(hypers["shape"]))
    if op == "source.transpose":
        return args[0].t().contiguous()
    if op == "source.rows":
        return args[0][hypers["start"]:hypers["stop"]]
    # source.mul: a scale of one value, or one per row of the weight
    w, s = args
    if s.numel() == 1:
        return w * s.reshape(())
    return w * s.reshape((w.shape[0],) + (1,) * (w.dim() - 1))


def _all_finite(t: torch.Tensor) -> bool:
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if t.dtype == getattr(torch, "float8_e4m3fn", None):  # NaN is S.1111.111, there is no inf
        return not bool(((t.view(torch.uint8) & 0x7F) == 0x7F).any())
    return bool(torch.isfinite(t).all())


def _device_failure(what: str, key: str, ex: Exception, origin) -> RuntimeFailure:
    text = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
    if isinstance(ex, (MemoryError, torch.cuda.OutOfMemoryError)) or "out of memory" in text.lower():
        return RuntimeFailure(f"out of memory while {what} (key {key!r}); try fewer --threads",
                              key=key, origin=origin)
    return RuntimeFailure(f"failed while {what} (key {key!r}): {text}", key=key, origin=origin)


def _op_failure(e: Op, key: str, ex: Exception) -> RuntimeFailure:
    text = str(ex).lower()
    if (isinstance(ex, (MemoryError, torch.cuda.OutOfMemoryError)) or "out of memory" in text
            or "not enough memory" in text):
        return RuntimeFailure(f"out of memory while computing `{e.op}` for key {key!r}; try fewer "
                              f"--threads or a smaller memory budget", key=key, origin=e.origin)
    detail = str(ex).strip().splitlines()[0] if str(ex).strip() else ""
    return RuntimeFailure(f"`{e.op}` failed for key {key!r}: {type(ex).__name__}"
                          + (f": {detail}" if detail else ""), key=key, origin=e.origin)
