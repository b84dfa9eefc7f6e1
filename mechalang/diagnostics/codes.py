"""The registry of diagnostic codes: each code is defined once, here, with its one meaning.

Code that reports a problem names it by its constant (`error(codes.UNDEFINED_NAME, ...)`), never by
a string, so a code cannot come to mean two things: defining an id or a name twice raises, and a
test checks that no module outside this one writes a code as a literal. The long explanation of
each code (`mecha explain-code E0401`, and docs/diagnostics.md) is in `explanations.py`.

Ranges: E00xx reading recipe files · E01xx syntax · E02xx values, types, calls, models, exports ·
E03xx keys and hyperparameter maps · E04xx names · E05xx modules and params · E06xx running ·
E07xx the command line · E09xx sd-mecha recipes · E0999 a bug in mechalang. Warnings are Wxxxx in
the same ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(r"^[EW]\d{4}$")
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Code:
    id: str  # "E0401"; W for warnings
    name: str  # "undefined-name": a stable slug, for people and for JSON consumers
    summary: str  # one line: what the code means

    @property
    def severity(self) -> str:
        return "error" if self.id.startswith("E") else "warning"

    def __str__(self) -> str:
        return self.id


class DuplicateCode(ValueError):
    """A code id or name defined twice: two meanings for one code."""


class CodeRegistry:
    def __init__(self) -> None:
        self._by_id: dict[str, Code] = {}
        self._by_name: dict[str, Code] = {}

    def define(self, id: str, name: str, summary: str) -> Code:
        if not _ID.match(id):
            raise ValueError(f"diagnostic code {id!r} is not E or W and four digits")
        if not _NAME.match(name):
            raise ValueError(f"diagnostic code name {name!r} is not a lower-case slug")
        if id in self._by_id:
            raise DuplicateCode(f"code {id} is already defined as {self._by_id[id].name!r}: "
                                f"{self._by_id[id].summary}")
        if name in self._by_name:
            raise DuplicateCode(f"code name {name!r} is already used by {self._by_name[name].id}")
        code = Code(id, name, summary)
        self._by_id[id] = code
        self._by_name[name] = code
        return code

    def get(self, id_or_name: str) -> Code | None:
        key = id_or_name.strip()
        return self._by_id.get(key.upper()) or self._by_name.get(key.lower())

    def all(self) -> list[Code]:
        return sorted(self._by_id.values(), key=lambda c: (c.id[1:], c.id[0]))


CODES = CodeRegistry()
_d = CODES.define

# ------------------------------------------------------------------------------------------------
# E00xx: reading recipe files (and writing them back, for `mecha fmt`)

SOURCE_NOT_FOUND = _d("E0001", "source-not-found", "the recipe file does not exist")
SOURCE_IS_DIRECTORY = _d("E0002", "source-is-directory", "the recipe path is a folder")
SOURCE_UNREADABLE = _d("E0003", "source-unreadable", "the recipe file cannot be read")
SOURCE_NOT_UTF8 = _d("E0004", "source-not-utf8", "the recipe file is not UTF-8 text")
SOURCE_HAS_NUL = _d("E0005", "source-has-nul", "the recipe file contains a NUL byte")
SOURCE_NOT_REGULAR = _d("E0006", "source-not-regular", "the recipe path is not a regular file")
FMT_WRITE_FAILED = _d("E0007", "fmt-write-failed", "`mecha fmt` could not write the file")
FMT_UNSAFE = _d("E0008", "fmt-unsafe", "`mecha fmt` would have changed the program (a bug)")

# ------------------------------------------------------------------------------------------------
# E01xx: syntax

UNEXPECTED_CHARACTER = _d("E0101", "unexpected-character", "a character that no token starts with")
UNTERMINATED_STRING = _d("E0102", "unterminated-string", "a string without its closing quote")
UNEXPECTED_TOKEN = _d("E0103", "unexpected-token", "a token where the grammar expects another")
UNEXPECTED_EOF = _d("E0104", "unexpected-eof", "the file ends in the middle of a statement")
UNCLOSED_BRACKET = _d("E0105", "unclosed-bracket", "a bracket that is never closed")
UNMATCHED_CLOSER = _d("E0106", "unmatched-closer", "a closing bracket without an opening one")
MISSING_COMMA = _d("E0107", "missing-comma", "two items without a comma between them")
EXPECTED_EXPRESSION = _d("E0108", "expected-expression", "a value is missing")
EXPECTED_NAME = _d("E0109", "expected-name", "a name is missing, or a keyword is used as a name")
NESTING_TOO_DEEP = _d("E0110", "nesting-too-deep", "brackets or expressions nested too deeply")
UNKNOWN_ESCAPE = _d("E0111", "unknown-escape", "an unknown `\\` escape in a string")
INVALID_UNICODE_ESCAPE = _d("E0112", "invalid-unicode-escape", "a `\\u`/`\\U` escape that is no character")
FLOAT_TOO_LARGE = _d("E0113", "float-too-large", "a number too large for a float")
INTEGER_TOO_LONG = _d("E0114", "integer-too-long", "an integer literal with too many digits")
INVALID_NUMBER = _d("E0115", "invalid-number", "a malformed number")
POSITIONAL_AFTER_KEYWORD = _d("E0116", "positional-after-keyword",
                              "a positional argument after a keyword argument")
PIPE_NEEDS_CALL = _d("E0117", "pipe-needs-call", "the right side of `|>` is not a call")
BLOCK_WITHOUT_RESULT = _d("E0118", "block-without-result", "a `{ let ... }` block with no result")
EXPECTED_SELECTOR = _d("E0119", "expected-selector", "a map entry without a valid selector")
PARSER_INTERNAL = _d("E0199", "parser-internal", "the parser failed (a bug)")

# ------------------------------------------------------------------------------------------------
# E02xx: values, types, calls, model files, exports

MODEL_NOT_FOUND = _d("E0201", "model-not-found", "a model file does not exist")
MODEL_UNREADABLE = _d("E0202", "model-unreadable", "a model path is not a readable model (file or folder)")
ARCH_UNDETECTED = _d("E0203", "arch-undetected", "a model's architecture cannot be told from its keys")
NOT_CALLABLE = _d("E0204", "not-callable", "a value that is not a function is called")
NO_MEMBER = _d("E0205", "no-member", "`a.b` where `a` has no member or component `b`")
BAD_INDEX = _d("E0206", "bad-index", "indexing something that is not a list, or with a non-int")
INDEX_OUT_OF_RANGE = _d("E0207", "index-out-of-range", "a list index past the end")
EXPECTED_LIST = _d("E0208", "expected-list", "`*` or a comprehension over something not a list")
ARGUMENT_TWICE = _d("E0209", "argument-twice", "an argument given twice")
TOO_MANY_ARGUMENTS = _d("E0211", "too-many-arguments", "a template called with too many arguments")
NO_SUCH_PARAMETER = _d("E0212", "no-such-parameter", "a template has no parameter of that name")
MISSING_ARGUMENT = _d("E0213", "missing-argument", "a template parameter without an argument")
WRONG_ARGUMENT_TYPE = _d("E0214", "wrong-argument-type", "an argument of the wrong type")
WRONG_ARGUMENT_COUNT = _d("E0215", "wrong-argument-count", "a builtin or method given the wrong number of arguments")
WRONG_SPACE = _d("E0216", "wrong-space", "a Model where a Delta is needed, or the other way round")
MIXED_SPACES = _d("E0217", "mixed-spaces", "models and deltas mixed where a method needs one kind")
NO_SUCH_KEYWORD = _d("E0218", "no-such-keyword", "a keyword argument the function does not have")
MISSING_HYPERPARAMETER = _d("E0219", "missing-hyperparameter", "a required hyperparameter is not given")
ARCH_MISMATCH = _d("E0220", "arch-mismatch", "models of different architectures combined")
NAN_VALUE = _d("E0221", "nan-value", "a number that is nan where a number is needed")
HYPER_OUT_OF_RANGE = _d("E0222", "hyper-out-of-range", "a hyperparameter value outside what the method accepts")
MAP_FOR_OTHER_ARCH = _d("E0223", "map-for-other-arch", "a hyperparameter map built for another architecture")
HYPER_WRONG_TYPE = _d("E0224", "hyper-wrong-type", "a hyperparameter that is neither a scalar nor a map")
UNKNOWN_ARCH = _d("E0225", "unknown-arch", "an architecture name that does not exist")
BAD_SHA256 = _d("E0226", "bad-sha256", "`sha256=` is not 64 hexadecimal digits")
SHA256_MISMATCH = _d("E0227", "sha256-mismatch", "a model file does not have the expected sha256")
UNSUPPORTED_DTYPE = _d("E0228", "unsupported-dtype", "a model has tensors of a dtype mechalang cannot compute with")
ARCH_FILE_INVALID = _d("W0229", "arch-file-invalid", "an architecture file on MECHA_PATH cannot be read (left out)")
ANNOTATION_MISMATCH = _d("E0230", "annotation-mismatch", "a value does not have its declared type")
MODEL_PLUS_MODEL = _d("E0231", "model-plus-model", "two models added (a merge needs a method)")
BAD_OPERANDS = _d("E0232", "bad-operands", "an operator applied to values it does not take")
CANNOT_NEGATE = _d("E0233", "cannot-negate", "unary minus on something that has no negative")
SCALED_MODEL = _d("E0234", "scaled-model", "a Model multiplied or divided (only deltas scale)")
FALLBACK_MIXES_SPACES = _d("E0235", "fallback-mixes-spaces", "`|` between a Model and a Delta")
SHAPE_MISMATCH = _d("E0236", "shape-mismatch", "keys whose shapes differ between the models merged")
UNKNOWN_TYPE = _d("E0237", "unknown-type", "an annotation names a type that does not exist")
EXPORT_NOT_MODEL = _d("E0240", "export-not-model", "an export whose value is not a Model")
OUTPUT_IS_INPUT = _d("E0241", "output-is-input", "an output would overwrite one of the inputs")
BAD_OUTPUT_PATH = _d("E0242", "bad-output-path", "an output path that is empty or not a string")
UNKNOWN_OUTPUT_DTYPE = _d("E0243", "unknown-output-dtype", "`export ... as X` with an unknown dtype")
DUPLICATE_OUTPUT = _d("E0244", "duplicate-output", "two exports write the same file")
OUTPUT_NEEDS_ONE_EXPORT = _d("E0245", "output-needs-one-export", "`-o` given for a recipe with several exports")
NOTHING_TO_RUN = _d("E0246", "nothing-to-run", "`mecha run` on a recipe without an export")
NO_EXPORT = _d("W0246", "no-export", "a recipe without an export (a library, or a forgotten export)")
BAD_MAP_VALUE = _d("E0251", "bad-map-value", "a map value that is not a number, bool or string")
WITH_NEEDS_MAP = _d("E0252", "with-needs-map", "`x with {...}` where `x` is not a map")
DIVISION_BY_ZERO = _d("E0253", "division-by-zero", "a division by zero")
NUMBER_TOO_LARGE = _d("E0254", "number-too-large", "arithmetic whose result is too large")
MAP_ARITHMETIC = _d("E0255", "map-arithmetic", "arithmetic on a map without a `default`")
NUMBER_NOT_REPRESENTABLE = _d("E0256", "number-not-representable", "a number literal that cannot be represented")
VALUE_TOO_LARGE = _d("E0257", "value-too-large", "a list, map or string larger than the checker builds")
EVALUATION_TOO_LONG = _d("E0258", "evaluation-too-long", "a recipe that expands to more work than the checker does")
KEY_OUTSIDE_MAP = _d("E0260", "key-outside-map", "`key(...)` used outside a map")
ADAPTER_UNUSED_KEYS = _d("E0270", "adapter-unused-keys", "adapter tensors that update no key of the base")
ADAPTER_UNUSED_ALLOWED = _d("W0270", "adapter-unused-allowed",
                            "adapter tensors that update no key of the base, left out (--allow-unused)")
ADAPTER_DOES_NOT_FIT = _d("E0271", "adapter-does-not-fit",
                          "an adapter's tensors are inconsistent or do not fit the base's shapes")
ADAPTER_NEEDS_BASE = _d("E0272", "adapter-needs-base", "an adapter kind that needs the base weight, without base=")
ADAPTER_CONFIG = _d("E0273", "adapter-config", "a PEFT adapter without a readable adapter_config.json")
NOT_AN_ADAPTER = _d("E0274", "not-an-adapter", "`lora(...)` on a file with no adapter tensors")
ADAPTER_DEFAULT_ALPHA = _d("W0275", "adapter-default-alpha", "a LoRA without alpha tensors: scale 1, as kohya assumes")
OUTPUT_FORMAT_MISMATCH = _d("E0280", "output-format-mismatch",
                            "an output path that does not fit the format written (`.bin`, a folder, `as hf` to a file)")
BAD_SHARD_SIZE = _d("E0281", "bad-shard-size", "`shard_size=` / `--shard-size` that is not a size such as \"5GB\"")
NO_CONFIG_TO_COPY = _d("W0282", "no-config-to-copy",
                       "an `as hf` folder whose inputs have no config.json to copy (it will not load alone)")
LORA_EXPORT_LEFT_OUT = _d("W0276", "lora-export-left-out",
                          "keys with no LoRA form (biases, norms, EMA copies) left out of a LoRA export")
MODEL_IS_ADAPTER = _d("E0277", "model-is-adapter", "`model(...)` on a LoRA/adapter file (read it with `lora(...)`)")
FEW_KNOWN_KEYS = _d("W0204", "few-known-keys", "most of a model's keys are unknown to its architecture")
RANK_MISMATCH = _d("W0283", "rank-mismatch",
                  "keys shaped as another architecture's layers (an SD2 UNet under SD1's names, or arch= wrong)")
DIFFUSERS_NEEDS_CONFIG = _d("E0290", "diffusers-needs-config",
                            "`as diffusers` with no diffusers input to take the pipeline's configs from")
DIFFUSERS_BAD_CONFIG = _d("E0291", "diffusers-bad-config",
                          "`as diffusers(config=...)` that is not a pipeline folder of the model's architecture")
DIFFUSERS_NO_LAYOUT = _d("E0292", "diffusers-no-layout", "`as diffusers` for an architecture with no diffusers layout")
DIFFUSERS_LEFT_OUT = _d("W0290", "diffusers-left-out", "keys a diffusers output has no place for, left out")
DIFFUSERS_COPIED = _d("W0291", "diffusers-copied",
                      "pipeline components the exported model lacks, copied unchanged from the config pipeline")

# ------------------------------------------------------------------------------------------------
# E03xx: keys and hyperparameter maps

KEYS_NOT_IN_EVERY_INPUT = _d("E0301", "keys-not-in-every-input", "with --strict: keys some inputs lack")
NO_VALUE_FOR_KEY = _d("E0310", "no-value-for-key", "a map gives no value for a key that needs one")
UNKNOWN_SELECTOR = _d("E0311", "unknown-selector", "a selector names no component, block or class")
RANGE_END_NOT_BLOCK = _d("E0312", "range-end-not-block", "an end of a block range is not a block")
RANGE_REVERSED = _d("E0313", "range-reversed", "a block range whose ends are reversed")
GLOB_MATCHES_NO_BLOCK = _d("E0314", "glob-matches-no-block", "a quoted glob that matches no block")
DEFAULT_COMBINED = _d("E0315", "default-combined", "`default` inside `&` or `!`")
RULE_MATCHES_NOTHING = _d("E0316", "rule-matches-nothing", "a map rule that matches no key of the model")
NO_MBW_CONVENTION = _d("E0317", "no-mbw-convention", "`mbw` for an architecture without block-weight strings")
MBW_WRONG_COUNT = _d("E0318", "mbw-wrong-count", "a block-weight string with the wrong number of values")
MBW_NOT_A_NUMBER = _d("E0319", "mbw-not-a-number", "a block-weight value that is not a number")
RULE_NEVER_APPLIES = _d("W0311", "rule-never-applies", "a map rule that later rules always override")
DEFAULT_NEVER_APPLIES = _d("W0312", "default-never-applies", "a `default` that never applies")

# ------------------------------------------------------------------------------------------------
# E04xx: names

UNDEFINED_NAME = _d("E0401", "undefined-name", "a name that is not defined")
ALREADY_BOUND = _d("E0402", "already-bound", "a name bound twice")
USED_BEFORE_BOUND = _d("E0403", "used-before-bound", "a name used above the line that binds it")
DUPLICATE_PARAMETER = _d("E0404", "duplicate-parameter", "a template with two parameters of one name")
RECURSIVE_TEMPLATE = _d("E0405", "recursive-template", "a template that calls itself")
TEMPLATES_TOO_DEEP = _d("E0406", "templates-too-deep", "templates calling templates too many levels deep")

# ------------------------------------------------------------------------------------------------
# E05xx: modules and params

MODULE_NOT_FOUND = _d("E0501", "module-not-found", "an imported module cannot be found")
IMPORT_CYCLE = _d("E0502", "import-cycle", "modules that import each other")
PRIVATE_NAME = _d("E0503", "private-name", "importing a name that starts with `_`")
NO_SUCH_MODULE_NAME = _d("E0504", "no-such-module-name", "a module has no name of that spelling")
PARAM_WITHOUT_VALUE = _d("E0510", "param-without-value", "a `param` with no default and no `--set`")
UNKNOWN_PARAM = _d("E0520", "unknown-param", "`--set` names a param the recipe does not have")
BAD_PARAM_VALUE = _d("E0521", "bad-param-value", "a `--set` value of the wrong type")
RECIPE_VALUE_NOT_FOUND = _d("E0522", "recipe-value-not-found", "`--set p=file.mecha` names no file")
RECIPE_VALUE_EXPORTS = _d("E0523", "recipe-value-exports", "a recipe used as a value without exactly one export")
BAD_SET = _d("E0524", "bad-set", "`--set` not of the form NAME=VALUE")
SET_TWICE = _d("E0525", "set-twice", "`--set` gives one param twice")

# ------------------------------------------------------------------------------------------------
# E06xx: running a merge

RUN_FAILED = _d("E0601", "run-failed", "the merge failed while reading, computing or writing")
RUN_INTERRUPTED = _d("E0602", "run-interrupted", "the merge was interrupted; nothing was written")
OUTPUT_FOLDER_FAILED = _d("E0603", "output-folder-failed", "the output folder cannot be created")
OUTPUT_EXISTS = _d("E0604", "output-exists", "an output file exists and `--overwrite` is not given")

# ------------------------------------------------------------------------------------------------
# E07xx: the command line and the Python API

INVALID_OPTION = _d("E0701", "invalid-option", "a command-line option or API argument with a value it does not take")
PLUGIN_FAILED = _d("E0702", "plugin-failed", "a plugin file could not be loaded")
UNKNOWN_QUICK_METHOD = _d("E0703", "unknown-quick-method", "`mecha merge --method` names no quick-merge method")
QUICK_MERGE_MODEL_COUNT = _d("E0704", "quick-merge-model-count", "`mecha merge` given the wrong number of models")
BAD_OUTPUT_NAME = _d("E0705", "bad-output-name", "an output name with characters that are not allowed")
NO_MATCHING_KEY = _d("E0706", "no-matching-key", "no output key matches the key or glob asked for")
ADAPTER_MISPLACED = _d("E0708", "adapter-misplaced", "`mecha merge` given a LoRA where it cannot use one")
UNKNOWN_CODE = _d("E0707", "unknown-code", "`mecha explain-code` with a code that does not exist")
NO_STORED_RECIPE = _d("E0710", "no-stored-recipe", "`mecha run --from` on a model file with no mechalang recipe in it")
STORED_BY_OTHER_VERSION = _d("W0710", "stored-by-other-version",
                             "`mecha run --from` re-runs a recipe stored by another mechalang version")

# ------------------------------------------------------------------------------------------------
# E09xx: sd-mecha recipes (`version 0.1.0`)

SDMECHA_NOT_A_RECIPE = _d("E0901", "sdmecha-not-a-recipe", "an sd-mecha recipe without its `version` line")
SDMECHA_BAD_VERSION = _d("E0902", "sdmecha-bad-version", "an sd-mecha version header that is malformed or unsupported")
SDMECHA_UNTERMINATED_STRING = _d("E0903", "sdmecha-unterminated-string", "an sd-mecha string without its closing quote")
SDMECHA_UNKNOWN_INSTRUCTION = _d("E0904", "sdmecha-unknown-instruction", "a line that is no sd-mecha instruction")
SDMECHA_FORWARD_REFERENCE = _d("E0905", "sdmecha-forward-reference", "`&N` naming this line or a later one")
SDMECHA_REFERENCE_OUT_OF_RANGE = _d("E0906", "sdmecha-reference-out-of-range", "`&N` naming no line")
SDMECHA_BAD_ARGUMENT = _d("E0907", "sdmecha-bad-argument", "an sd-mecha argument that cannot be read")
SDMECHA_BAD_LINE = _d("E0908", "sdmecha-bad-line", "an sd-mecha line with the wrong arguments for its kind")
SDMECHA_UNKNOWN_KEYWORD = _d("E0909", "sdmecha-unknown-keyword", "an sd-mecha keyword the instruction does not take")
SDMECHA_ARGUMENT_TWICE = _d("E0910", "sdmecha-argument-twice", "an sd-mecha argument given twice")
SDMECHA_NO_INSTRUCTIONS = _d("E0911", "sdmecha-no-instructions", "an sd-mecha recipe with no instructions")
SDMECHA_SECOND_VERSION = _d("E0912", "sdmecha-second-version", "a second `version` line")
SDMECHA_QUOTE_IN_WORD = _d("E0913", "sdmecha-quote-in-word", "a quote in the middle of a word")
SDMECHA_NULL_NOT_ALLOWED = _d("E0914", "sdmecha-null-not-allowed", "`null` where a value is needed")
SDMECHA_BAD_LAST_LINE = _d("E0915", "sdmecha-bad-last-line", "the last line is not a model or a merge")
SDMECHA_TOO_MANY_ARGUMENTS = _d("E0916", "sdmecha-too-many-arguments", "more arguments than the method has")
SDMECHA_NOT_A_STRING = _d("E0917", "sdmecha-not-a-string", "a keyword that must be a string or null")
SDMECHA_BAD_DICT_VALUE = _d("E0918", "sdmecha-bad-dict-value", "a `dict` value that is not a number, string or bool")
SDMECHA_UNKNOWN_CONFIG = _d("W0920", "sdmecha-unknown-config", "an sd-mecha model config mechalang has no architecture for")
SDMECHA_CONVERSION_DROPPED = _d("W0921", "sdmecha-conversion-dropped", "an sd-mecha conversion of a model is left out")
SDMECHA_UNKNOWN_HYPER = _d("W0922", "sdmecha-unknown-hyper", "a positional value whose hyperparameter is unknown")
SDMECHA_MERGE_SPACE = _d("W0923", "sdmecha-merge-space", "an sd-mecha merge space other than weight")
SDMECHA_UNUSED_RESULT = _d("W0924", "sdmecha-unused-result", "an instruction whose result is never used")
SDMECHA_KEY_AS_SELECTOR = _d("W0925", "sdmecha-key-as-selector", "a `dict` key with no mechalang block, kept as a key selector")
SDMECHA_UNSUPPORTED_METHOD = _d("E0930", "sdmecha-unsupported-method", "an sd-mecha method with no exact mechalang equivalent")
SDMECHA_BAD_SINGLETON = _d("E0931", "sdmecha-bad-singleton", "a `singleton-mecha` value that is not `dict key=VALUE`")
SDMECHA_NOT_MECHALANG = _d("E0932", "sdmecha-not-mechalang", "an sd-mecha recipe given to a command that reads only mechalang")
SDMECHA_UNTRANSLATED_ARGUMENT = _d("W0926", "sdmecha-untranslated-argument", "an argument with no mechalang counterpart")

# ------------------------------------------------------------------------------------------------
# a bug in mechalang

INTERNAL_ERROR = _d("E0999", "internal-error", "something went wrong inside mechalang (a bug)")

del _d
