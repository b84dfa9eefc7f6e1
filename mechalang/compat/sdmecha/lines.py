"""Reading sd-mecha's flat format into instructions: lines, tokens, values and `&N` references,
with a span for everything."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...diagnostics import Diagnostic, Span, codes, did_you_mean, error
from ...syntax import ast
from .detect import _strip_comment
from .tables import FORMAT_VERSION, LEGACY_LINE_KINDS, LINE_KINDS

# ------------------------------------------------------------------------------------------------
# Lines and tokens


@dataclass(frozen=True)
class Value:
    kind: str  # "ref" | "number" | "string" | "bool" | "null"
    value: object  # int (ref), str (number text / string), bool, None
    span: Span


@dataclass(frozen=True)
class Arg:
    name: str | None  # keyword name, or None for a positional argument
    value: Value
    span: Span  # the whole token (`alpha=0.5`)
    name_span: Span | None = None


@dataclass(frozen=True)
class Instr:
    index: int  # the N of `&N`
    kind: str
    kind_span: Span
    args: tuple[Arg, ...]
    span: Span  # the instruction's text on its line
    ok: bool = True  # False when the line had errors (it still takes its index)

    @property
    def positional(self) -> list[Arg]:
        return [a for a in self.args if a.name is None]

    @property
    def keywords(self) -> list[Arg]:
        return [a for a in self.args if a.name is not None]


_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|nan)")
_REF = re.compile(r"&(\d+)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Lexer:
    """Splits one line into raw tokens: ('word', text, start, end), ('string', value, start, end)
    and ('kw', name, name_end, value_token). Columns are 0-based, `end` exclusive."""

    def __init__(self, reader: "_Reader", lineno: int, text: str):
        self.r = reader
        self.lineno = lineno
        self.text = text
        self.ok = True

    def span(self, start: int, end: int) -> Span:
        return self.r.span(self.lineno, start, end)

    def tokens(self) -> list[tuple]:
        text, n, i = self.text, len(self.text), 0
        out: list[tuple] = []
        while i < n:
            c = text[i]
            if c in " \t\r\f\v":
                i += 1
                continue
            if c == "#":
                self.r.comments.append(ast.Comment(text[i:].rstrip(), self.lineno, i + 1,
                                                   not text[:i].strip()))
                break
            if c == '"':
                tok, i = self.string(i)
                if tok is None:
                    return out
                out.append(tok)
                continue
            start = i
            chars: list[str] = []
            while i < n and text[i] not in " \t\r\f\v\"#":
                if text[i] == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                    continue
                chars.append(text[i])
                i += 1
            word = "".join(chars)
            if i < n and text[i] == '"':
                if word.endswith("=") and len(word) > 1 and "=" not in word[:-1]:
                    value, i = self.string(i)
                    if value is None:
                        return out
                    out.append(("kw", word[:-1], start, start + len(word) - 1, value))
                    continue
                self.ok = False
                odd = _strip_comment(text).replace('\\\\', "").replace('\\"', "").count('"') % 2
                self.r.diags.append(error(
                    codes.SDMECHA_QUOTE_IN_WORD, "a quote in the middle of a word", self.span(i, i + 1),
                    label="unexpected `\"`",
                    help=("this line has an odd number of quotes: is a string before this one "
                          "missing its closing quote?" if odd else
                          'strings are written whole, in double quotes: "like this" or '
                          'name="like this"')))
                return out
            if "=" in word:
                name, _, value = word.partition("=")
                eq = start + text[start:i].index("=")
                out.append(("kw", name, start, eq, ("word", value, eq + 1, i)))
            else:
                out.append(("word", word, start, i))
        return out

    def string(self, i: int) -> tuple[tuple | None, int]:
        text, n = self.text, len(self.text)
        start, i = i, i + 1
        chars: list[str] = []
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n:
                chars.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                return ("string", "".join(chars), start, i + 1), i + 1
            chars.append(c)
            i += 1
        self.ok = False
        end = len(text.rstrip())
        self.r.diags.append(error(
            codes.SDMECHA_UNTERMINATED_STRING, "unterminated string", self.span(start, max(end, start + 1)),
            label="this string has no closing quote",
            help='close it with `"`; a `"` inside a string is written `\\"`'))
        return None, n


class _Reader:
    def __init__(self, text: str, file: str, legacy: bool = False):
        self.text = text
        self.file = file
        self.legacy = legacy  # sd-mecha's pre-1.0 format: no header, older line kinds
        self.kinds = LEGACY_LINE_KINDS if legacy else LINE_KINDS
        self.diags: list[Diagnostic] = []
        self.instrs: list[Instr] = []
        self.comments: list[ast.Comment] = []
        self.header_span: Span | None = None

    def span(self, lineno: int, start: int, end: int) -> Span:
        return Span(self.file, lineno, start + 1, lineno, max(end, start + 1) + 1)

    # -- lines -----------------------------------------------------------------------------------

    def read(self) -> None:
        lines = self.text.split("\n")
        if lines and lines[0].startswith("\ufeff"):
            lines[0] = lines[0][1:]
        seen_version = self.legacy
        first_content: tuple[int, str] | None = None
        for lineno, raw in enumerate(lines, 1):
            raw = raw.rstrip("\r")
            lexer = _Lexer(self, lineno, raw)
            raw_tokens = lexer.tokens()
            if not raw_tokens:
                if lexer.ok:
                    continue
                if seen_version:  # a line that failed to lex still takes its index
                    self.instrs.append(Instr(len(self.instrs), "?", self.span(lineno, 0, 1), (),
                                             self.span(lineno, 0, len(raw)), ok=False))
                continue
            head = raw_tokens[0]
            if first_content is None:
                first_content = (lineno, raw)
            if not seen_version:
                seen_version = True
                if self.version_line(lineno, raw_tokens):
                    continue
                # no header: report once, then read the line as an instruction anyway
            elif head[0] == "word" and head[1] == "version":
                self.diags.append(error(
                    codes.SDMECHA_SECOND_VERSION, "a second `version` line", self.span(lineno, head[2], head[3]),
                    label="the header was already given",
                    help="`version 0.1.0` is written once, as the first line"))
                self.instrs.append(Instr(len(self.instrs), "?", self.span(lineno, head[2], head[3]),
                                         (), self.span(lineno, head[2], head[3]), ok=False))
                continue
            self.instrs.append(self.instruction(lineno, raw, raw_tokens, lexer.ok))
        if first_content is None:
            self.diags.append(error(
                codes.SDMECHA_NOT_A_RECIPE, "empty sd-mecha recipe", Span(self.file, 1, 1, 1, 2),
                label="expected `version 0.1.0` here",
                help="an sd-mecha recipe starts with `version 0.1.0`, then one instruction a line"))
        elif not self.instrs and not any(d.is_error for d in self.diags):
            lineno, raw = first_content
            self.diags.append(error(
                codes.SDMECHA_NO_INSTRUCTIONS, "the recipe has no instructions", self.span(lineno, 0, len(raw.rstrip())),
                label="nothing follows the header",
                help='add instructions after the header: model "a.safetensors", merge "weighted_sum" &0 &1, ...'))

    def version_line(self, lineno: int, toks: list[tuple]) -> bool:
        """True when `toks` is a version header (a correct one or not)."""
        head = toks[0]
        self.header_span = self.span(lineno, head[2], _tok_end(toks[-1]))
        if head[0] != "word" or head[1] != "version":
            self.diags.append(error(
                codes.SDMECHA_NOT_A_RECIPE, "sd-mecha recipes start with `version 0.1.0`",
                self.span(lineno, head[2], head[3] if head[0] != "kw" else head[3]),
                label="expected `version 0.1.0` before this",
                help="add `version 0.1.0` as the first line"))
            return False
        if len(toks) != 2 or toks[1][0] != "word":
            end = toks[-1][3] if toks[-1][0] != "kw" else toks[-1][4][3]
            self.diags.append(error(
                codes.SDMECHA_BAD_VERSION, "malformed version header", self.span(lineno, head[2], end),
                label="expected `version 0.1.0`"))
            return True
        if toks[1][1] != FORMAT_VERSION:
            self.diags.append(error(
                codes.SDMECHA_BAD_VERSION, f"unsupported sd-mecha format version `{toks[1][1]}`",
                self.span(lineno, toks[1][2], toks[1][3]), label="this version",
                notes=[f"this reader understands sd-mecha format {FORMAT_VERSION}"]))
        return True

    def instruction(self, lineno: int, raw: str, toks: list[tuple], ok: bool) -> Instr:
        index = len(self.instrs)
        head = toks[0]
        line_span = self.span(lineno, len(raw) - len(raw.lstrip()), _tok_end(toks[-1]))
        head_span = self.span(lineno, head[2], head[3])
        kind = head[1] if head[0] == "word" else "?"
        if self.legacy and kind == "call":
            kind = "merge"  # the earliest name of `merge`
        if head[0] != "word" or head[1] not in self.kinds:
            what = {"string": "a string", "kw": "a keyword argument"}.get(head[0], f"`{head[1]}`")
            guess = did_you_mean(head[1], self.kinds) if head[0] == "word" else None
            self.diags.append(error(
                codes.SDMECHA_UNKNOWN_INSTRUCTION, f"unknown instruction {what}", head_span, label="not an sd-mecha instruction",
                help=(f"did you mean `{guess}`?" if guess else
                      "each line is " + ", ".join(f"`{k}`" for k in self.kinds[:-1])
                      + f" or `{self.kinds[-1]}`, then its arguments")))
            return Instr(index, "?", head_span, (), line_span, ok=False)
        args: list[Arg] = []
        if kind in ("model", "merge", "lora", "parameter") and len(toks) > 1 and toks[1][0] == "word" \
                and not _is_value_word(toks[1][1]):
            t = toks[1]
            what = "method name" if kind == "merge" else "path"
            self.diags.append(error(
                codes.SDMECHA_BAD_LINE, f"the {what} of a `{kind}` line goes in double quotes",
                self.span(lineno, t[2], t[3]), label=f"expected \"{t[1]}\"",
                help=f'write `{kind} "{t[1]}"`'))
            return Instr(index, kind, head_span, (), line_span, ok=False)
        for t in toks[1:]:
            arg = self.argument(lineno, t, index)
            if arg is None:
                ok = False
            else:
                args.append(arg)
        return Instr(index, kind, head_span, tuple(args), line_span, ok)

    def argument(self, lineno: int, tok: tuple, index: int) -> Arg | None:
        if tok[0] == "kw":
            _, name, start, eq, vtok = tok
            name_span = self.span(lineno, start, eq)
            whole = self.span(lineno, start, _tok_end(vtok))
            if not name:
                self.diags.append(error(codes.SDMECHA_BAD_ARGUMENT, "a keyword argument without a name", whole,
                                        label="expected `name=value`"))
                return None
            if vtok[0] == "word" and not vtok[1]:
                self.diags.append(error(codes.SDMECHA_BAD_ARGUMENT, f"no value after `{name}=`", whole,
                                        label="expected a value", help=f"write `{name}=VALUE`"))
                return None
            value = self.value(lineno, vtok, index)
            return None if value is None else Arg(name, value, whole, name_span)
        value = self.value(lineno, tok, index)
        return None if value is None else Arg(None, value, value.span)

    def value(self, lineno: int, tok: tuple, index: int) -> Value | None:
        kind, text, start, end = tok[:4]
        span = self.span(lineno, start, end)
        if kind == "string":
            return Value("string", text, span)
        if text in ("true", "false"):
            return Value("bool", text == "true", span)
        if text == "null":
            return Value("null", None, span)
        if text.startswith("&"):
            m = _REF.fullmatch(text)
            if m is None:
                self.diags.append(error(codes.SDMECHA_BAD_ARGUMENT, f"invalid reference `{text}`", span,
                                        label="expected `&` and a line number",
                                        help="`&N` names the result of instruction N, counting from &0"))
                return None
            return Value("ref", int(m.group(1)), span)
        if _NUMBER.fullmatch(text):
            return Value("number", text, span)
        self.diags.append(error(
            codes.SDMECHA_BAD_ARGUMENT, f"unexpected `{text}`", span, label="expected a value",
            help='a value is a number, a "string", true, false, null or a reference &N'))
        return None


def _is_value_word(word: str) -> bool:
    return word in ("true", "false", "null") or word.startswith("&") or bool(_NUMBER.fullmatch(word))


def _tok_end(tok: tuple) -> int:
    return tok[4][3] if tok[0] == "kw" else tok[3]

