"""`mecha check` on any text ends in a summary (exit 0) or diagnostics (exit 1), never an exception.

Mutations of the example recipes reach far into the checker (they mostly still parse), which is
where a traceback would hide; arbitrary text exercises the parser's error paths.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechalang.commands.check import check_command

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.mecha"))
TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|\.\.|\|>|\S')

# Fragments a mutation may splice in: names of every kind, operators, literals that stress limits.
FRAGMENTS = ["a", "b", "model", "mbw", "key", "weighted_sum", "ties", "n_average", "slerp", "sd1", "sdxl",
             "default", "IN00", "OUT11", "attn2", "clip_l", "+", "-", "*", "/", "|", "|>", "&", "!", "..",
             "(", ")", "[", "]", "{", "}", ",", ":", "=", "with", "let", "def", "export", "to", "as", "for",
             "in", "0", "1e308", "inf", "nan", "-1", '"OUT*"', '"x.safetensors"', "9" * 50, "true", "*"]


def mutate(text: str, ops: list[tuple[int, int, int]]) -> str:
    toks = TOKEN.findall(text)
    for kind, pos, frag in ops:
        if not toks:
            break
        i = pos % len(toks)
        if kind == 0:
            del toks[i]
        elif kind == 1:
            toks.insert(i, toks[i])
        elif kind == 2:
            toks[i] = FRAGMENTS[frag % len(FRAGMENTS)]
        else:
            j = (pos * 7 + frag) % len(toks)
            toks[i], toks[j] = toks[j], toks[i]
    return " ".join(toks)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(example=st.sampled_from(EXAMPLES),
       ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 100)), min_size=1, max_size=4))
def test_mutated_examples_never_crash(example_workspace, tmp_path_factory, capsys, example, ops):
    tmp = tmp_path_factory.mktemp("fuzz")
    # run from the examples' folder semantics: copy the recipe next to its models and libraries
    text = mutate(example.read_text(), ops)
    path = example_workspace / f".fuzz-{tmp.name}.mecha"
    path.write_text(text)
    try:
        code = check_command(str(path))
    finally:
        path.unlink(missing_ok=True)
    capsys.readouterr()
    assert code in (0, 1)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_input_never_crashes(tmp_path_factory, capsys, text):
    tmp = tmp_path_factory.mktemp("any")
    path = tmp / "any.mecha"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    code = check_command(str(path))
    out, err = capsys.readouterr()
    assert code in (0, 1)
    if code == 1:
        assert "error" in err


def test_directory_and_missing_file(tmp_path, capsys):
    assert check_command(str(tmp_path)) == 1
    assert check_command(str(tmp_path / "nope.mecha")) == 1
    err = capsys.readouterr().err
    assert "directory" in err and "nope.mecha" in err
