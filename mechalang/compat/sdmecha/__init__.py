"""sd-mecha's flat recipe format (`version 0.1.0`), read as a mechalang program.

An sd-mecha recipe is a list of instructions, one a line, after a `version 0.1.0` header:

    version 0.1.0
    model "ghostmix.safetensors" model_config="sd1-ldm" merge_space="weight"
    model "dreamshaper.safetensors" model_config="sd1-ldm" merge_space="weight"
    dict BASE=0 IN00=0.3 M00=0.5 OUT11=0.7
    literal &2 model_config="sd1-supermerger_blocks" merge_space="param"
    merge "convert_sd1_blocks_to_ldm" &3
    merge "weighted_sum" &0 &1 &4

`&N` names the result of instruction N (counted from 0, the first line after the header; only
earlier instructions can be named). Arguments are numbers, `"strings"` (with `\\` escapes), `true`,
`false`, `null`, `&N`, and `name=value` keywords. The last instruction is the recipe's result.

`read_sdmecha` builds the equivalent mechalang module:

- every instruction that a later one uses becomes a `let`: models are named after their file
  (`ghostmix`), merges after their method (`weighted_sum_1`), maps after the hyperparameter they
  are first given to (`alpha_1`); numbers and strings are written where they are used;
- the last instruction is exported to `out`, a `param out: str = "<recipe>_merged.safetensors"`
  (sd-mecha recipes do not say where the result goes; `--set out=...` or `-o` chooses);
- `model_config` becomes `arch=` where mechalang has the architecture (`"sd1-ldm"` → `sd1`, see
  `ARCHES`); otherwise the architecture is left to detection, with a warning;
- `dict` lines (with the `literal` and `convert_*_blocks_*` lines that wrap them) become
  hyperparameter maps: supermerger block keys (`BASE`, `IN00`, `M00`, `OUT11`) are mechalang's
  block names (sdxl's `VAE` is the `vae` component, written after `BASE`), sd-mecha's older `<config>_unet_block_in3` / `<config>_txt_default` keys become
  blocks and components, and anything else is a tensor key, written `key("...")`;
- methods keep their names, except where mechalang spells the same operation differently:
  `subtract(a, b)` is `a - b`, `fallback(a, b)` is `a | b`, `add_difference(a, subtract(b, c),
  alpha)` is `add_difference(a, b, c, alpha=...)` (and `a + alpha * d` for any other delta), and
  the methods in `METHODS` are renamed with their keywords (`ties_sum(k=, vote_sgn=)` is
  `ties(density=, consensus=)`, with sd-mecha's defaults written out where mechalang's differ).
  Hyperparameters that sd-mecha wrote positionally become keywords, by the method's sd-mecha
  signature (`METHOD_SIGNATURES`). Keywords set to `null` (sd-mecha's "unset") are left out, so
  the mechalang default applies. Other names are kept as they are: `mecha check` reports a
  method mechalang does not have.

Unlike sd-mecha's own reader, blank lines, a trailing newline, and `#` comments (whole lines or
after an instruction) are accepted; comments and blank lines are kept in the converted text, and
every node of the module has a span into the sd-mecha file. Malformed input gives diagnostics with
spans (codes E09xx, warnings W09xx), never an exception.
"""

from __future__ import annotations

from ...diagnostics import Diagnostic, codes, error
from ...syntax import ast
from .detect import header_position, is_legacy, is_sdmecha
from .tables import FORMAT_VERSION

__all__ = ["FORMAT_VERSION", "convert_text", "is_sdmecha", "not_mechalang", "read_sdmecha"]


# ------------------------------------------------------------------------------------------------
# Entry points


def read_sdmecha(text: str, file: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    """The mechalang module equivalent to the sd-mecha recipe `text` (read from `file`), and the
    diagnostics; the module is None when there is any error."""
    from .build import _Builder, _output_default  # the reader is imported only for sd-mecha files
    from .lines import _Reader

    reader = _Reader(text, file, legacy=header_position(text) is None and is_legacy(text))
    reader.read()
    builder = _Builder(reader)
    builder.classify()
    if not any(d.is_error for d in reader.diags):
        builder.count_uses()
        builder.fuse()
        builder.fuse_component_filters()
        builder.assign_names()
        builder.build_exprs()
    module = None
    if not any(d.is_error for d in reader.diags):
        module = builder.module(_output_default(file))
    diags = sorted(reader.diags, key=lambda d: (d.span.line, d.span.col) if d.span else (0, 0))
    if any(d.is_error for d in diags):
        return None, diags
    return module, diags



def not_mechalang(text: str, file: str, command: str) -> Diagnostic | None:
    """E0932 when `text` is an sd-mecha recipe, for a command (`mecha fmt`) that reads only
    mechalang; None otherwise."""
    from ...diagnostics import Span

    pos = header_position(text)
    if pos is None:
        return None
    line, start, end = pos
    return error(codes.SDMECHA_NOT_MECHALANG, f"`{file}` is an sd-mecha recipe, not mechalang",
                 Span(file, line, start, line, end), label="sd-mecha's format header",
                 notes=[f"`{command}` reads only mechalang; `mecha check` and `mecha run` also "
                        "read sd-mecha recipes as they are"],
                 help=f"run `mecha convert {file}` to print it as mechalang (save that to a new "
                      "file to format or edit it)")


def convert_text(text: str, file: str) -> tuple[str | None, list[Diagnostic]]:
    """The sd-mecha recipe `text` as canonical mechalang text (None when there is any error), and
    the diagnostics."""
    from ...syntax.printer import print_module

    module, diags = read_sdmecha(text, file)
    if module is None:
        return None, diags
    out = print_module(module)
    problems = _reparse_check(out, file)
    if problems:
        return None, diags + problems
    return out, diags


def _reparse_check(out: str, path: str) -> list[Diagnostic]:
    """The converted text must parse: anything else is a bug of this converter."""
    from ...syntax.parser import parse

    tree, diags = parse(out, f"{path} (converted)")
    errors = [d for d in diags if d.is_error]
    if tree is not None and not errors:
        return []
    first = errors[0].message if errors else "no module"
    return [error(codes.INTERNAL_ERROR, "internal error: the converted recipe does not parse", None,
                  notes=[first], help="please report this with the sd-mecha recipe")]

