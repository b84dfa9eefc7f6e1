"""Which architecture a safetensors file is, from its header's key names alone.

Inventory architectures are scored by how well their inventory covers the file: a file key
*matches* when its canonical name (aliases resolved) is an inventory key; *missing* counts the
required inventory keys the file lacks (optional ones never count); *extra* the file keys the
inventory does not know. The score is matched / (matched + missing + extra), so a file is the
architecture that explains most of its keys while leaving least of the inventory unexplained.
Families without inventories (llama, bert) are recognised by their `[detect]` patterns. A file that
nothing covers for at least half its keys is `generic`.

Names alone cannot tell apart architectures that share them (an SD1 and an SD2 UNet have the same
LDM names, and a UNet-only file scores higher as SD1, whose text encoder has fewer keys to miss):
when the file's tensor *ranks* contradict the winner's inventory for some matched keys (SD2's
proj_in is a linear [c, c], SD1's a 1x1 conv [c, c, 1, 1]) and another candidate explains at
least as many keys with every rank right, that one wins. Ranks, not sizes, so that scaled-down
test models are detected as the real ones; a file mixing two architectures keeps the one that
explains most of it (and the checker warns about the ranks, W0283).

A detection is *confident* when the winner explains nearly all the file's keys (at most 5% extra)
and the file holds at least one of its components complete (a UNet-only or VAE-less checkpoint is
still confidently identified); otherwise the checker should say so, with `describe_poor_match`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .arch import Arch
from .header import Header
from .registry import all_archs, get_arch

#: Share of a file's keys the winner must explain to be chosen over `generic`.
MIN_MATCHED_SHARE = 0.5
#: Largest share of unexplained keys for a confident detection.
MAX_EXTRA_SHARE = 0.05


@dataclass(frozen=True)
class Candidate:
    arch: Arch
    matched: int
    missing: int
    extra: int
    complete_components: tuple[str, ...] = ()
    same_rank: int = 0      # matched keys whose rank is the inventory's (0 when shapes are unknown)

    @property
    def score(self) -> float:
        total = self.matched + self.missing + self.extra
        return self.matched / total if total else 0.0


@dataclass
class Detection:
    arch: Arch
    confident: bool
    candidates: list[Candidate] = field(default_factory=list)  # best first
    n_keys: int = 0

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


def detect(header: Header) -> Detection:
    """The architecture of the file whose header this is."""
    return detect_keys(list(header.tensors), {k: m.shape for k, m in header.tensors.items()})


def detect_keys(keys: Sequence[str], shapes: Mapping[str, Sequence[int]] | None = None) -> Detection:
    """The architecture of a file with these keys; `shapes` (key -> shape), when known, break ties
    between architectures that share key names."""
    keys = list(keys)
    n = len(keys)
    candidates: list[Candidate] = []
    for arch in all_archs():
        cand = _score(arch, keys, shapes)
        if cand is not None and cand.matched > 0:
            candidates.append(cand)
    candidates.sort(key=lambda c: (-c.score, -c.matched, -c.same_rank, c.arch.name))
    if shapes is not None and candidates and candidates[0].same_rank < candidates[0].matched:
        top = candidates[0]
        right = next((c for c in candidates[1:] if c.matched >= top.matched and c.same_rank == c.matched), None)
        if right is not None:
            candidates.remove(right)
            candidates.insert(0, right)

    for cand in candidates:
        arch = cand.arch
        need = MIN_MATCHED_SHARE if arch.inventory is not None else arch.detect_min_coverage
        if not n or cand.matched < need * n:
            continue
        confident = cand.extra <= MAX_EXTRA_SHARE * n and (
            arch.inventory is None or bool(cand.complete_components) or cand.missing == 0)
        if cand is not candidates[0]:
            confident = False
        return Detection(arch.specialize(keys), confident, candidates, n)
    generic = get_arch("generic")
    if generic is None:  # only possible if the bundled files were removed
        raise RuntimeError("the `generic` architecture is missing from the standard library")
    return Detection(generic.specialize(keys), False, candidates, n)


def _score(arch: Arch, keys: list[str], shapes: Mapping[str, Sequence[int]] | None) -> Candidate | None:
    if arch.inventory is not None:
        inv = arch.inventory
        present: set[str] = set()
        matched = same_rank = 0
        for k in keys:
            ck = arch.canonical(k)
            if ck in inv:
                matched += 1
                present.add(ck)
                if shapes is not None and k in shapes and len(shapes[k]) == len(inv[ck].shape):
                    same_rank += 1
        if matched == 0:
            return Candidate(arch, 0, 0, len(keys))
        required: dict[str, list[int]] = {}
        missing = 0
        for k, spec in inv.items():
            if spec.optional:
                continue
            comp = arch.component_of_inventory_key(k) or ""
            counts = required.setdefault(comp, [0, 0])
            counts[0] += 1
            if k in present:
                counts[1] += 1
            else:
                missing += 1
        complete = tuple(c for c, (need, have) in required.items() if need and need == have)
        return Candidate(arch, matched, missing, len(keys) - matched, complete, same_rank)
    if arch.detect_require:
        fm = arch.family_match(keys)
        if fm is None:
            return None
        hit, miss = fm
        return Candidate(arch, hit, 0, miss)
    return None


def describe_poor_match(detection: Detection, limit: int = 3) -> str:
    """A sentence for a diagnostic: what the file was taken as and how close the best candidates
    came (`sd1 matches 1020 of the file's 1130 keys, 110 of its own keys are missing`)."""
    n = detection.n_keys
    arch = detection.arch
    parts = []
    for c in detection.candidates[:limit]:
        bits = [f"`{c.arch.name}` matches {c.matched} of the file's {n} keys"]
        if c.missing:
            bits.append(f"misses {c.missing} of its {_required(c.arch)} required keys")
        if c.extra and c.arch.inventory is not None:
            bits.append(f"does not know {c.extra}")
        parts.append(", ".join(bits))
    if arch.name == "generic":
        head = (f"no architecture matches this file's {n} keys; it is treated as `generic` "
                f"(blocks from numbered key segments)")
    else:
        head = f"the file was taken as `{arch.name}`, but the match is poor"
    if not parts:
        return head
    return head + "; closest: " + "; ".join(parts)


def _required(arch: Arch) -> int:
    return len(arch.expected_keys())


def rank_mismatches(arch: Arch, shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """The keys (canonical names) of a file whose rank differs from `arch`'s inventory: a file
    with one architecture's names and another's layers (an SD2 UNet in an SD1 checkpoint)."""
    inv = arch.inventory or {}
    return [k for k, shape in shapes.items() if k in inv and len(shape) != len(inv[k].shape)]


def ranks_fit(shapes: Mapping[str, Sequence[int]], exclude: str) -> list[str]:
    """The other inventory architectures that know every one of these keys with their ranks."""
    out = []
    for arch in all_archs():
        inv = arch.inventory
        if arch.name == exclude or not inv:
            continue
        if all(k in inv and len(s) == len(inv[k].shape) for k, s in shapes.items()):
            out.append(arch.name)
    return out
