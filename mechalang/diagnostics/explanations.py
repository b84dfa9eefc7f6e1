"""The long explanation of every diagnostic code in `codes.py`, in the same order.

Each value is Markdown without a heading: `mecha explain-code E0401` prints it, and
docs/diagnostics.md collects them under a heading per code. A ```mecha block is a recipe that
`mecha check` reports with exactly that code (a test checks each one against small SD1.5/SDXL
models named sd1_a/sd1_b/sd1_c.safetensors and sdxl_a/sdxl_b.safetensors); a ```sdmecha block is
a whole sd-mecha recipe, checked the same way; ```sh blocks are command lines, not run.
"""

from __future__ import annotations

EXPLANATIONS: dict[str, str] = {
    # --------------------------------------------------------------------------------------------
    # E00xx: reading recipe files

    "E0001": """\
The recipe file given on the command line does not exist. Usually the name is misspelled, or
the command runs in another folder than you think: a relative path is taken from the current
folder, not from the folder of the models.

```sh
mecha check recipes/ghost_dream.mecha
```

Check the path (`ls recipes/`), or pass an absolute one.""",

    "E0002": """\
The path given as the recipe is a folder, not a file. `mecha check`, `mecha run` and the other
commands read one `.mecha` file; they do not look inside folders for one.

Pass the recipe file itself, e.g. `mecha run recipes/ghost_dream.mecha` rather than
`mecha run recipes`.""",

    "E0003": """\
The recipe file exists but cannot be read; the message gives the reason the operating system
reported (usually "permission denied", sometimes an I/O error on a failing or disconnected drive).

Fix the permissions (`chmod u+r FILE`, or copy the file somewhere you own), or check the disk.""",

    "E0004": """\
The recipe is not UTF-8 text: the message gives the line and column of the first byte that is not
valid UTF-8. This happens when an editor saved the file in a legacy encoding (Windows-1252,
Latin-1, Shift-JIS), typically because of an accented letter in a comment or a model path, or as
UTF-16 (PowerShell's `>` redirection does this).

Re-save the file as UTF-8 ("UTF-8" or "UTF-8 without BOM" in the editor's encoding menu).""",

    "E0005": """\
The recipe contains a NUL byte (the message says where), so it is not a text file. The usual
cause is passing the wrong file, such as a `.safetensors` model where the recipe goes, or a
recipe saved as UTF-16 text.

Pass the `.mecha` recipe; if it is UTF-16, re-save it as UTF-8.""",

    "E0006": """\
The recipe path exists but is neither a file nor a folder: a named pipe, a socket or a device.
Shell process substitution is the common case: `mecha check <(generate_recipe)` passes a pipe
such as `/dev/fd/63`, which mechalang does not read.

Write the recipe to a file first (`generate_recipe > merge.mecha && mecha check merge.mecha`).""",

    "E0007": """\
`mecha fmt` formatted the file but could not write it back; the message gives the operating
system's reason. `mecha fmt` writes a temporary file next to the recipe and renames it over the
original, so it needs write permission on the folder as well as on the file; a read-only folder,
a full disk or a file locked by another program also cause this.

The file is left unchanged. Fix the permission or free space, or use `mecha fmt --diff FILE` to
see the formatting without writing.""",

    "E0008": """\
`mecha fmt` checks its own output: it parses the formatted text again and compares it with the
original program and comments. This error means the formatted text would have meant something
else, or lost a comment, so `mecha fmt` refused to write it. The file is left unchanged.

This is a bug in mechalang, not in your recipe. Please report it with the recipe file; until it
is fixed, format that file by hand.""",

    # --------------------------------------------------------------------------------------------
    # E01xx: syntax

    "E0101": """\
The parser met a character that no part of the language starts with. Common cases are single
quotes (strings use double quotes only), `@`, `$`, `%`, `^` or `~` copied from another language,
and letters outside ASCII in a name.

```mecha
let a = model('sd1_a.safetensors')
export a to "out.safetensors"
```

Use double quotes for strings (`model("sd1_a.safetensors")`), and only ASCII letters, digits and
`_` in names. Non-ASCII text is fine inside strings and comments.""",

    "E0102": r"""A string starts with `"` but its closing `"` is missing on the same
line. Strings cannot span lines; a string that ends with a backslash before the quote
(`"C:\models\"`) is also unclosed, because `\"` is an escaped quote.

```mecha
let a = model("sd1_a.safetensors)
export a to "out.safetensors"
```

Add the closing quote. Write a newline inside a string as `\n`, a quote as `\"` and a backslash
as `\\` (or use `/` in paths, which works on Windows too).""",

    "E0103": """\
The parser found a token where the grammar does not allow it; the message says what it expected.
Frequent causes: an assignment without `let` (`a = model(...)`), an `export` without `to`, a
missing `:` in a map entry, or two values side by side.

```mecha
let a = model("sd1_a.safetensors")
export a "out.safetensors"
```

Follow the message: here, write `export a to "out.safetensors"`. Every statement starts with a
keyword: `let`, `param`, `def`, `import`, `from` or `export`.""",

    "E0104": """\
The file ends in the middle of a statement: a bracket is still open, or an operator, `=`, `to` or
`as` has nothing after it. The message points at the opening bracket when one is unclosed. This
often happens when the end of a recipe was cut off while copying it.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=0.5
```

Complete the statement; here, close the call and add the output:
`export weighted_sum(a, b, alpha=0.5) to "out.safetensors"`.""",

    "E0105": """\
A bracket (`(`, `[` or `{`) is opened and never closed: either a different closing bracket comes
first, or a new statement starts while it is still open. The message shows where the bracket was
opened.

```mecha
let models = [model("sd1_a.safetensors"), model("sd1_b.safetensors"))
export n_average(*models) to "out.safetensors"
```

Close each bracket with its partner: `[` with `]`, `(` with `)`, `{` with `}`. Here the list
should end with `]`.""",

    "E0106": """\
A closing bracket (`)`, `]` or `}`) appears where no bracket is open, usually one too many at the
end of a call.

```mecha
let a = model("sd1_a.safetensors"))
export a to "out.safetensors"
```

Remove the extra closing bracket, or add the opening one it was meant to match.""",

    "E0107": """\
Two items of a list, of a call's arguments, of a map or of a template's parameters follow each
other without a comma between them. This is most common at the end of a line in a map written
over several lines.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a b, alpha=0.5) to "out.safetensors"
```

Add the `,` where the message points. A trailing comma after the last item is allowed, so a
comma at the end of every line of a map is always safe.""",

    "E0108": """\
A value is missing: after `=`, after an operator such as `+` or `*`, after `:` in a map entry or
after a `,`, the parser found a closing bracket, a keyword or the next statement instead.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=) to "out.safetensors"
```

Write the missing value (`alpha=0.5`), or remove the argument to use the method's default.""",

    "E0109": """\
A name is needed (after `let`, `param`, `def`, `as`, or after `.`) but something else is there,
often a keyword. Keywords such as `with`, `in`, `for`, `to`, `as`, `import`, `export`, `true` and
`false` are reserved and cannot name a value.

```mecha
let with = model("sd1_a.safetensors")
```

Choose another name (`let tuned = ...`).""",

    "E0110": """\
Brackets or expressions are nested more than 200 levels deep. Hand-written recipes never get
near this; it happens with generated recipes that build one huge nested expression, for
example a chain of hundreds of merges written as one call inside another.

Split the expression into several `let` statements, one per step (`let m1 = ...`,
`let m2 = weighted_sum(m1, ...)`); the result is the same merge.""",

    "E0111": r"""A string contains a backslash followed by a character that is no
escape. This almost always comes from a Windows path such as `"C:\models\base.safetensors"`,
where `\m` and `\b` are read as escapes.

```mecha
let a = model("C:\models\sd1_a.safetensors")
export a to "out.safetensors"
```

Write paths with `/` (`"C:/models/sd1_a.safetensors"`, which works on Windows) or double each
backslash (`"C:\\models\\sd1_a.safetensors"`). The escapes are `\\`, `\"`, `\n`, `\t`, `\r`,
`\0` and `\u{...}`.""",

    "E0112": r"""A `\u{...}` escape in a string does not name a character: it is not
written as 1 to 6 hex digits in braces, it is a UTF-16 surrogate (U+D800 to U+DFFF), or it is
beyond U+10FFFF.

```mecha
let a = model("sd1_a.safetensors")
export a to "out \u{D83D}.safetensors"
```

Write the code point of the character itself in braces, e.g. `\u{1F600}`, rather than the
surrogate pair `\u{D83D}\u{DE00}` or the brace-less `\uD83D` of JavaScript, JSON and Python; or
type the character directly, since strings are UTF-8.""",

    "E0113": """\
A number literal is larger than the largest float (about 1.8e308), so it would silently become
infinity.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export a + 1e400 * (b - a) to "out.safetensors"
```

Write a number in range; if you mean infinity, write `inf`.""",

    "E0114": """\
An integer literal has more than 4300 digits, more than mechalang converts to a number. No
recipe needs such a number; this usually means a generated file went wrong, or data was pasted
into a recipe by mistake.

Shorten the number, or write a float in exponent notation (`1e300`) if a huge value is really
meant.""",

    "E0115": """\
Something that starts like a number is not one: digits run straight into letters (`0.5x`,
`3rd`), or a number ends with a dot (`1.`).

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=0.5x) to "out.safetensors"
```

Numbers look like `3`, `0.5`, `.5`, `1e-3`, `1_000`, `inf` or `nan`; write `1.0` rather than
`1.`, and put a space or an operator between a number and a name.""",

    "E0116": """\
A positional argument comes after a keyword argument in a call. Positional arguments (and `*`
splats) must come first, as in Python.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, alpha=0.3, b) to "out.safetensors"
```

Put the models first and the hyperparameters after them:
`weighted_sum(a, b, alpha=0.3)`.""",

    "E0117": """\
The right side of the pipe operator `|>` is not a call. `x |> f(y)` means `f(x, y)`: the value on
the left becomes the first argument of the call on the right, so the right side needs its
parentheses even when there are no other arguments.

```mecha
let a = model("sd1_a.safetensors")
export a |> copy to "out.safetensors"
```

Write the call with parentheses: `a |> copy()`, or `a |> clamp(b, c)`.""",

    "E0118": """\
A `{ let ...; result }` block, as the body of a `def`, has `let`s but no result expression before
its closing `}`. A block computes one value: the expression after its last `let`.

```mecha
def scaled(a, b, k=0.5) = {
    let d = b - a
    let s = d * k
}

export scaled(model("sd1_a.safetensors"), model("sd1_b.safetensors")) to "out.safetensors"
```

End the block with the value it produces, e.g. `a + s` after the last `let`.""",

    "E0119": """\
An entry of a hyperparameter map does not start with a selector. A selector is `default`, a
component, block or class name (`clip_l`, `IN04`, `attn2`), a block range (`IN00..IN05`), a glob
over block names in quotes (`"OUT*"`), `key("...")`, or these combined with `&` and `!`.
Numbers are not selectors, so block-weight lists written as indexes do not work.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha={default: 0.5, 4: 0.3}) to "out.safetensors"
```

Name the block instead (`IN04: 0.3`); `mecha info sd1` lists the names. For a supermerger-style
list of block weights use `mbw(sd1, "0,0.5,...")`.""",

    "E0199": """\
The parser failed in a way it does not expect: this is a bug in mechalang, not a mistake in the
recipe. The message names the internal exception.

Please report it with the recipe that triggers it. Until it is fixed, rewriting the line the
recipe fails on in another way (splitting it into several `let`s, say) may avoid the problem.""",

    # --------------------------------------------------------------------------------------------
    # E02xx: values, types, calls, model files, exports

    "E0201": """\
A `model("...")` path names no file. A relative path is looked up next to the recipe first, then
in each folder given with `--models-dir` or the `MECHA_MODELS_DIR` environment variable; the help
line lists every place tried. Typical causes are a typo, a missing extension, or a checkpoint
that lives in the web UI's `models/Stable-diffusion` folder while the recipe is elsewhere.

```mecha
let a = model("sd1_d.safetensors")
export a to "out.safetensors"
```

Fix the name, use an absolute path, or point `--models-dir` at the folder that holds your
checkpoints (`mecha run merge.mecha --models-dir ~/sd/models/Stable-diffusion`).""",

    "E0202": """\
The model path exists but is not a model mechalang can read; the message names the file at fault
and the problem. For a `.safetensors` file: the header is not valid JSON, the file is truncated (an
interrupted download), a tensor has a dtype safetensors does not define. For a `.ckpt`, `.pt`,
`.pth` or `.bin` file: it is not in torch's zip format (re-save it with a current torch), or its
pickle refers to something that is not a tensor or a plain container (a training callback's
class, or code such as `os.system`: it is refused, never run). For a Hugging Face folder or
`*.index.json`: a shard the index lists is missing, the index names a tensor twice or a tensor
its shard does not hold, or `config.json` disagrees with the weights. A folder with none of the
known layouts is refused with what it holds.

```mecha
let a = model(".")
export a to "out.safetensors"
```

Download the file again if it is truncated; convert a pickled checkpoint that needs code to
safetensors with the tool that made it (the web UIs and most model hubs offer a safetensors
version). `mecha info PATH` shows what mechalang reads from a file or folder.""",

    "E0203": """\
mechalang could not tell which architecture a model file is from the tensor names in its
header: some keys look like a known architecture, but too few for a confident guess. The note
shows the best partial match. This happens with pruned or partial files (a UNet alone, an
extracted text encoder), with LoRA or LyCORIS files, and with checkpoints that use a naming
mechalang does not know. Files that match nothing at all are read as `generic` instead.

If you know the architecture, say it: `model("file.safetensors", arch=sd1)`; `mecha info` lists
the architectures. If the file is a LoRA or LyCORIS adapter, it is not a full model: open it with
`lora("file.safetensors")`, a Delta to add to a model (docs/adapters.md).""",

    "E0204": """\
A value that is not a function is called with `(...)`: a model, a number, a list or a map. This
usually means a name was reused, or a method name was mistyped into the name of a model.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export a(b) to "out.safetensors"
```

Call a merge method or a template (`weighted_sum(a, b)`); `mecha info --methods` lists the
methods.""",

    "E0205": """\
`a.b` names a member that `a` does not have. On a model, `.name` selects a component, and the
component must exist in the model's architecture: SD1.5 has `diffuser`, `clip_l` and `vae`
(among others) but not SDXL's second text encoder `clip_g`. Numbers, lists and maps have no
members at all. (A name missing from an
imported module is reported as E0504.)

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export a.clip_g | b to "out.safetensors"
```

Use a component of that architecture (`mecha info sd1` lists them), or check the spelling; the
help line suggests the closest name.""",

    "E0206": """\
Something that is not a list is indexed with `[...]`, or a list is indexed with something other
than an int (a float such as `1.0`, a string). Only lists can be indexed: `models[0]`.

```mecha
let a = model("sd1_a.safetensors")
export a[0] to "out.safetensors"
```

Index a list (`let models = [a, b]` then `models[0]`), with an int. To select part of a model,
use a component (`a.diffuser`) or a hyperparameter map.""",

    "E0207": """\
A list index is past the end of the list. Indexes count from 0, so a list of 2 has indexes 0 and
1 (and -1, -2 from the end).

```mecha
let models = [model("sd1_a.safetensors"), model("sd1_b.safetensors")]
export models[2] to "out.safetensors"
```

Use an index below the length of the list, or add the missing item to the list.""",

    "E0208": """\
`*x` (spreading a list into a call or a list) or a comprehension `[... for m in x]` is used on
something that is not a list, usually a single model.

```mecha
let a = model("sd1_a.safetensors")
export n_average(*a) to "out.safetensors"
```

Spread a list: `n_average(*[a, b, c])` or `n_average(a, b, c)`; iterate over a list:
`[m - base for m in models]`.""",

    "E0209": """\
The same argument is given twice in one call: two keyword arguments with one name, or a
hyperparameter given both by position and by name.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=0.3, alpha=0.5) to "out.safetensors"
```

Keep one of them. Hyperparameters are clearest passed by name only:
`weighted_sum(a, b, alpha=0.3)`.""",

    "E0211": """\
A template (a `def`) is called with more positional arguments than it has parameters. (Merge
methods given too many arguments report E0215 instead.)

```mecha
def blend(x, y, alpha=0.5) = weighted_sum(x, y, alpha=alpha)

let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export blend(a, b, 0.3, 0.5) to "out.safetensors"
```

Pass as many arguments as the `def` declares, or add the parameter to the `def`.""",

    "E0212": """\
A template (a `def`) is called with a keyword argument that is not one of its parameters,
usually a typo. The help line suggests the closest parameter.

```mecha
def blend(x, y, alpha=0.5) = weighted_sum(x, y, alpha=alpha)

let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export blend(a, b, alhpa=0.3) to "out.safetensors"
```

Use the parameter's name as the `def` spells it (`alpha=0.3`), or add the parameter to the
`def`.""",

    "E0213": """\
A template (a `def`) is called without a value for a parameter that has no default. The
secondary label shows where the parameter is declared.

```mecha
def blend(x, y, alpha=0.5) = weighted_sum(x, y, alpha=alpha)

let a = model("sd1_a.safetensors")
export blend(a) to "out.safetensors"
```

Pass the missing argument (`blend(a, b)`), or give the parameter a default in the `def`
(`def blend(x, y=..., alpha=0.5)`).""",

    "E0214": """\
An argument has the wrong type for the function it is passed to: a number where a merge method
needs a model, a path that is not a string in `model(...)`, or an `mbw` argument that is not an
architecture or a string. A frequent cause is passing a hyperparameter by position, as GUI
mergers list it, where a model is expected.

```mecha
let a = model("sd1_a.safetensors")
export weighted_sum(a, 0.5) to "out.safetensors"
```

Pass the models the method expects, and hyperparameters by name:
`weighted_sum(a, b, alpha=0.5)`. `mecha info --methods` shows each method's signature.""",

    "E0215": """\
A merge method, `model(...)` or `mbw(...)` is given the wrong number of arguments. For merge
methods this is usually the number of models: `slerp` and `weighted_sum` take 2,
`add_difference` takes 3, `model_stock` at least 3. The help line shows the method's signature.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
let c = model("sd1_c.safetensors")
export slerp(a, b, c) to "out.safetensors"
```

Pass as many models as the signature says, or pick a method that takes more
(`n_average(a, b, c)`, or nested calls: `slerp(slerp(a, b), c)`).""",

    "E0216": """\
A merge method gets a Model where it needs a Delta, or the other way round. A Model is a whole
checkpoint; a Delta is a difference of two models (`tuned - base`), what a fine-tune or LoRA
"learned". Methods like `ties`, `dare_ties` and `della` combine deltas; methods like
`add_difference` and `weighted_sum` take whole models.

```mecha
let base = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
let c = model("sd1_c.safetensors")
export base + ties(b, c) to "out.safetensors"
```

Subtract the base model to get deltas (`ties(b - base, c - base)`), or add a delta to a base
model to get a model (`base + (b - c)`), as the help line says.""",

    "E0217": """\
A method whose models may be either Models or Deltas (such as `weighted_sum`, `slerp`,
`n_average`) is given some of each. Interpolating a checkpoint with a difference of checkpoints
has no meaning.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export a + weighted_sum(a - b, b) to "out.safetensors"
```

Pass only models (`weighted_sum(a, b)`), or only deltas
(`a + weighted_sum(a - b, c - b)`).""",

    "E0218": """\
A merge method, or `model(...)`, is given a keyword argument it does not have, usually a typo or
a parameter name from another tool (supermerger's, sd-mecha's or mergekit's). The help line
suggests the closest name or lists the method's hyperparameters.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpah=0.5) to "out.safetensors"
```

Use the method's own names: `mecha info --methods` prints every method with its hyperparameters
(here `alpha=0.5`).""",

    "E0219": """\
A merge method has a hyperparameter without a default, and the call does not give it. The
built-in methods all have defaults, so this comes from a plugin method (loaded with `--plugin`)
whose keyword-only parameter has no default value.

Pass the hyperparameter by name in the call (`my_method(a, b, strength=0.5)`);
`mecha info --methods --plugin my_methods.py` shows its signature. If you wrote the plugin, you
can give the parameter a default instead.""",

    "E0220": """\
Models of different architectures are combined in one merge or in task arithmetic, e.g. an SD1.5
checkpoint with an SDXL one: their tensors have different names and shapes, so there is nothing
to merge key by key. The secondary labels show which argument is which architecture.

```mecha
let a = model("sd1_a.safetensors")
let xl = model("sdxl_a.safetensors")
export weighted_sum(a, xl, alpha=0.5) to "out.safetensors"
```

Merge models of one architecture. If a model is detected wrongly (a checkpoint in an unusual
naming, say), pass its architecture: `model("file.safetensors", arch=sdxl)`; `mecha check` shows
what each file was detected as.""",

    "E0221": """\
A number is `nan` ("not a number") where a real number is needed. `nan` cannot be interpolated,
compared or clamped: a merge with it would fill the output with NaNs and give black or noise
images. (A `nan` given as a hyperparameter is reported as E0222.)

Replace `nan` with the value you meant. If it comes from a `--set` value or an imported preset,
fix it there.""",

    "E0222": """\
A hyperparameter value is outside the range the method accepts, or has the wrong kind (a string
for a number, `nan`); the message shows the accepted range, as in `float in [0, 1]`. In a map,
the error points at the rule whose value is out of range. Typical cases: `slerp` or `sigmoid`
with `alpha` above 1 (use `weighted_sum`, which accepts any alpha, to extrapolate), or
`density=0` for TIES/DARE.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export slerp(a, b, alpha=1.5) to "out.safetensors"
```

Use a value inside the range; `mecha info --methods` shows every method's ranges.""",

    "E0223": """\
A hyperparameter map built for one architecture is used with models of another. A map from
`mbw(sd1, "...")`, or a preset defined only for SD1.5, names SD1.5 blocks (IN00..IN11,
OUT00..OUT11), which an SDXL model does not have (IN00..IN08, OUT00..OUT08).

```mecha
let a = model("sdxl_a.safetensors")
let b = model("sdxl_b.safetensors")
let w = mbw(sd1, "0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1")
export weighted_sum(a, b, alpha=w) to "out.safetensors"
```

Build the map for the models' architecture: `mbw(sdxl, "...")` with one value per SDXL block (20),
or a map literal whose selectors exist in both.""",

    "E0224": """\
A hyperparameter is given something that is neither a number (or bool or string, as the method
needs) nor a hyperparameter map: a model, a list, a delta. A list of per-block values, as
written in other tools, is the common case.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=[0.3, 0.7]) to "out.safetensors"
```

Give a number (`alpha=0.3`) or a map with selectors (`alpha={default: 0.3, "OUT*": 0.7}`); for a
block-weight string use `mbw(sd1, "...")`.""",

    "E0225": """\
An architecture name does not exist: in `model(..., arch="...")` or in a type such as
`Model[...]`. Names are the ones `mecha info` lists (`sd1`, `sdxl`, `sd3`, `flux`, `llama`, ...)
or their aliases (`sd15`, `sd1_5`, ...). Note that `arch=sd4` without quotes is a name lookup and
reports E0401 instead.

```mecha
let a = model("sd1_a.safetensors", arch="sd4")
export a to "out.safetensors"
```

Use a listed architecture, or leave `arch=` out to detect it from the file.""",

    "E0226": """\
`model(..., sha256="...")` is given something that is not a SHA-256 hash: exactly 64 hexadecimal
digits. Short hashes such as the 10-digit "model hash" shown by the web UIs, or AutoV2 hashes
from model sites, are not accepted.

```mecha
let a = model("sd1_a.safetensors", sha256="6ce0161689")
export a to "out.safetensors"
```

Give the full SHA-256 of the file (`sha256sum FILE` on Linux, `Get-FileHash FILE` in PowerShell;
model sites list it as "SHA256"), or leave `sha256=` out.""",

    "E0227": """\
A model file does not have the SHA-256 the recipe gives in `model(..., sha256="...")`: the file
was replaced by another version, re-saved, or only partly downloaded. Hashing reads the whole
file, so this is checked by `mecha run`, before anything is merged; the notes show the expected
and the found hash.

Get the file the recipe was written for, or, if the new file is the one you want, update the
`sha256=` in the recipe to the found hash.""",

    "E0228": """\
A model file has tensors in a dtype that mechalang can read from the header but cannot compute
with, such as `F8_E4M3FNUZ`, `F8_E5M2FNUZ`, `F8_E8M0` or the 6- and 4-bit floats (`F6_E2M3`,
`F6_E3M2`, `F4`). The message names the file and a key with that dtype. Such files usually come
from quantizers for particular accelerators.

Merge a version of the model stored in fp16, bf16, fp32 or the common fp8 formats (`F8_E4M3`,
`F8_E5M2`), or convert the file to one of those first.""",

    "W0229": """\
An architecture file (a `.toml` in the bundled library or in a folder on `MECHA_PATH`) could not
be read: it is not valid TOML, it has a field mechalang does not know (often a misspelling such as
`paterns`), or its patterns, blocks or inventory do not make sense. The message names the file and
the field. That file is left out, so models that need it fall back to detection among the other
architectures; every other command still works.

```sh
MECHA_PATH=my_archs mecha info
```

Fix the field the message names (`mecha info` lists the architectures once the file loads), or move
the file off `MECHA_PATH`. The format is described in docs/plugins.md.
""",
    "E0230": """\
A value does not have the type its annotation declares (`let x: Model[sdxl] = ...`,
`param p: float`, a `def` parameter with a type). The label shows the type the value really has;
it may be the wrong architecture, or a Delta where a Model is declared.

```mecha
let a: Model[sdxl] = model("sd1_a.safetensors")
export a to "out.safetensors"
```

Fix the value (the file, or the expression), or the annotation if it was wrong.""",

    "E0231": """\
Two models are added with `+`. Adding two checkpoints doubles every weight and produces a broken
model; a merge needs a method. In task arithmetic, what you add to a model is a difference of
models (a Delta).

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export a + b to "out.safetensors"
```

Interpolate with a method (`weighted_sum(a, b, alpha=0.5)`), or add what a fine-tune learned
over its base: `a + (b - base)`, which is `add_difference(a, b, base)`.""",

    "E0232": """\
An operator (`+`, `-`, `*`, `/`, `|`) is applied to values it does not take: two models
multiplied, a string minus a number, a delta divided by a model. Models combine only as task
arithmetic: `Model - Model` is a Delta, `Model + Delta` a Model, `number * Delta` a Delta.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export a * b to "out.safetensors"
```

Use a merge method for anything else (`mecha info --methods`), or fix the operand's type.""",

    "E0233": """\
Unary minus is applied to something that has no negative: a whole model, a string, a map. A
negated checkpoint is not a model; what can be negated is a difference of models.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export b + (-a - b) to "out.safetensors"
```

Negate a difference (`-(a - b)`, the same as `b - a`), or subtract instead
(`b - 0.5 * (a - b)`).""",

    "E0234": """\
A Model is multiplied or divided by a number. Scaling a whole checkpoint changes every weight
(including normalization and VAE weights) and breaks the model; what can be scaled is a
difference of models.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(0.5 * a, b) to "out.safetensors"
```

To interpolate, use `weighted_sum(a, b, alpha=0.5)`; to apply part of a fine-tune, scale the
difference: `base + 0.5 * (tuned - base)`.""",

    "E0235": """\
The fallback operator `|` joins a Model and a Delta. `a | b` takes each key from `a` when `a`
has it, else from `b`, so both sides must be the same kind of value: two models, or two deltas.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export a | (b - a) to "out.safetensors"
```

Make both sides models (`a.diffuser | b`), or both deltas; add a delta to a model first if the
result should be a model.""",

    "E0236": """\
The models merged have keys of the same name but different shapes. The usual cause is an
inpainting or instruct-pix2pix checkpoint (9 or 8 input channels) merged with a regular one (4),
or a model forced to an architecture it is not with `arch=`. The notes list the keys and their
shapes.

```mecha
# an SDXL file read as SD1: many keys share names but not shapes
let a = model("sd1_a.safetensors")
let xl = model("sdxl_a.safetensors", arch=sd1)
export weighted_sum(a, xl) to "out.safetensors"
```

Merge models of one layout: regular checkpoints with regular ones, inpainting with inpainting.
If `arch=` is forced, check that it is right or leave it out.""",

    "E0237": """\
A type annotation names a type that does not exist, usually a typo. The types are `Model[A]`,
`Delta[A]`, `Hyper[A]`, `float`, `int`, `bool`, `str`, `list[T]` and `Arch`.

```mecha
param alpha: flaot = 0.5

let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=alpha) to "out.safetensors"
```

Spell the type as listed (the help line suggests the closest), or leave the annotation out.""",

    "E0240": """\
The value of an `export` is not a Model, so it cannot be written as a checkpoint. Usually it is
a Delta (a difference of models, which is not a usable checkpoint by itself), sometimes a number
or a map.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export a - b to "out.safetensors"
```

Add the difference to a base model (`base + (a - b)`) and export that; or, to write the Delta
itself as a LoRA file, say so: `export a - b to "x.safetensors" as lora(rank=32)`.""",

    "E0241": """\
An output path is the same file as one of the recipe's input models, so running the recipe would
overwrite a model while it is being read. The same check applies to `-o`.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b) to "sd1_a.safetensors"
```

Write to another file. Output paths are relative to the recipe's folder, so an output such as
`"../models/a.safetensors"` can name an input from another folder.""",

    "E0242": """\
The path after `to` in an `export` is empty or not a string, e.g. a number or a model.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b) to ""
```

Give a file name in quotes: `to "out/merged.safetensors"` (relative to the recipe's folder), or a
string-valued `param` you set with `--set`.""",

    "E0280": """\
An export's path does not fit the format it writes. mechalang writes safetensors only: a `.bin`,
`.ckpt`, `.pt` or `.pth` output path is refused (they are pickles, which mechalang never writes);
`as hf` writes a Hugging Face folder, so its path must name a folder, not a `.safetensors` file
(nor an existing file).

```mecha
let a = model("sd1_a.safetensors")
export a to "merged.bin"
```

Write `"merged.safetensors"`, or a folder: `export a to "merged/" as hf`. A single-file export to a
folder path is E0242.""",

    "E0281": """\
The largest shard of an `as hf` folder, given by `shard_size=` or `mecha run --shard-size`, is not
a size. Sizes are written as Hugging Face writes `max_shard_size`: a number with `KB`, `MB`, `GB`
(powers of ten) or `KiB`, `MiB`, `GiB` (powers of two), or a whole number of bytes.

```mecha
let a = model("sd1_a.safetensors")
export a to "merged/" as hf(shard_size="huge")
```

Write `shard_size="5GB"` (the default) or `shard_size="500MiB"`.""",

    "W0282": """\
An `as hf` export writes a Hugging Face folder, whose `config.json` and tokenizer files are copied
from the first input that is a Hugging Face folder; none of this export's inputs is one, so the
output has weights and an index but no `config.json`, and `from_pretrained` cannot load it alone.

```mecha
let a = model("sd1_a.safetensors")
export a to "merged/" as hf
```

Copy a matching `config.json` (and tokenizer files) into the folder, merge Hugging Face folders,
or write a single file instead (`to "merged.safetensors"`).""",

    "E0243": """\
`export ... as X` names an output dtype that does not exist. The dtypes are `fp16`, `bf16`,
`fp32`, `fp64`, `fp8` (the same as `fp8_e4m3`) and `fp8_e5m2`; spellings such as `float16` or
`half` are not accepted here.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b) to "out.safetensors" as float16
```

Use one of the names above (`as fp16`), or leave `as` out to keep the first input's dtype.""",

    "E0244": """\
Two `export` statements write the same file, so the second would replace the first. This usually
comes from copying an export line and forgetting to change its path.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b) to "out.safetensors"
export weighted_sum(b, a) to "out.safetensors"
```

Give each export its own path.""",

    "E0245": """\
`-o`/`--output` replaces the output path of a recipe's one export; the recipe given has several
exports (or none), so mechalang cannot tell which one `-o` is meant for.

```sh
mecha run two_merges.mecha -o merged.safetensors
```

Leave `-o` out and let each export write its own path, or make the paths `param`s and set them
with `--set`.""",

    "E0246": """\
`mecha run` was given a recipe without an `export` statement, so there is nothing to write.
Either the export was forgotten, or the file is a library of `def`s and `let`s meant to be
imported by other recipes.

```sh
mecha run lib/blends.mecha
```

Add `export VALUE to "out.safetensors"` for each model to write, or run the recipe that imports
the library.""",

    "W0246": """\
The recipe has no `export` statement, so `mecha run` would write nothing. That is right for a
library of `def`s and presets imported by other recipes; otherwise an export was forgotten.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
let soup = weighted_sum(a, b)
```

Add an export for each model to write, e.g. `export soup to "out.safetensors"`.""",

    "E0251": """\
A value in a hyperparameter map is not a number, bool or string: a model, a list, or another
map. Map values are the hyperparameter's value for the keys the selector matches.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha={default: a}) to "out.safetensors"
```

Give a number (`{default: 0.5}`). To take some parts of the output from another model, use
components and `|` instead (`a.clip_l | weighted_sum(a, b)`).""",

    "E0252": """\
`x with {...}` adds rules to a hyperparameter map (or turns a number into a map with that
default), but `x` here is neither: a model, a string or a list.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=a with {IN00: 1}) to "out.safetensors"
```

Use `with` on the map or number that is the hyperparameter: `alpha=0.5 with {IN00: 1}`, or
`alpha=SMOOTHSTEP with {M00: 0.5}`.""",

    "E0253": """\
A number, a map or a delta is divided by zero, or a number is divided by a map that has a 0 value.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export a + (b - a) / 0 to "out.safetensors"
```

Divide by a non-zero value. If the divisor comes from a `param`, check the value given with
`--set`.""",

    "E0254": """\
Arithmetic on numbers gives a result too large to represent as a float (integers are exact and
unbounded, but turning one above about 1.8e308 into a float fails). This only happens with
numbers far outside any hyperparameter's useful range, usually from a runaway generated recipe.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
let n = 1000000000000000000000000000000
let big = n * n * n * n * n * n * n * n * n * n * n
export weighted_sum(a, b, alpha=big * 0.5) to "out.safetensors"
```

Check the computation that builds the number.""",

    "E0255": """\
Arithmetic on a hyperparameter map (`1 - w`, `w * 0.5`) needs every key to have a value to
compute with, but the map has no `default` rule: keys no rule matches would get the method's
default, which the arithmetic cannot reach. It also fails when a map value is not a number.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=1 - {IN00: 0.5}) to "out.safetensors"
```

Add a `default` rule to the map (`1 - {default: 0.5, IN00: 0.2}`).""",

    "E0256": """\
A number literal cannot be converted to a value mechalang can compute with. The parser already
rejects numbers that are too long or too large (E0113, E0114), so seeing this code means a
number got past those checks: most likely a bug in mechalang.

Rewrite the number in ordinary notation (`0.5`, `1e-3`); if the recipe looks right, please report
it with the recipe.""",

    "E0257": """\
A value the recipe builds is larger than the checker will build: a list of more than 100,000
items, a hyperparameter map of more than 100,000 rules, or a string of more than 1,000,000
characters. Recipes do not need values this large; they arise from a mistake that doubles a value
on every line, such as `let v2 = [*v1, *v1]` repeated, or `let w2 = w1 | w1`.

```mecha
let v0 = [1, 2, 3, 4, 5, 6, 7, 8]
let v1 = [*v0, *v0]
let v2 = [*v1, *v1]
let v3 = [*v2, *v2]
let v4 = [*v3, *v3]
let v5 = [*v4, *v4]
let v6 = [*v5, *v5]
let v7 = [*v6, *v6]
let v8 = [*v7, *v7]
let v9 = [*v8, *v8]
let v10 = [*v9, *v9]
let v11 = [*v10, *v10]
let v12 = [*v11, *v11]
let v13 = [*v12, *v12]
let v14 = [*v13, *v13]
```

The diagnostic points at the line that crossed the limit. Build the value from what it needs
instead of doubling it.
""",
    "E0258": """\
Evaluating the recipe would take more work than the checker does: more than 100,000 template
calls, or more than 1,000,000 distinct nodes in the recipe graph. This happens when templates
call other templates twice at each level, so the work doubles per level (`def f2(x) =
weighted_sum(f1(x), f1(x))`, and so on): the result is small, but computing it is exponential.

```sh
mecha check exponential.mecha
```

Bind the repeated value once (`def f2(x) { let y = f1(x); weighted_sum(y, y) }`), so each level
evaluates its inner template once.
""",
    "E0260": """\
`key("...")` is used as a value. It is a selector: it matches tensor keys by name, on the left of
a map entry, and means nothing elsewhere.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=key("*.proj_in.*")) to "out.safetensors"
```

Use it inside a map: `alpha={default: 0.5, key("*.proj_in.*"): 0.8}`.""",

    "E0270": """\
Some tensors of an adapter file (a LoRA, LyCORIS, ...) given to `lora(...)` update no key of the
base: their module names name no weight of the base's architecture, or a weight this base does
not have. Usually the adapter is for another architecture (an SDXL LoRA with an SD1 base), or it
also trained layers this checkpoint lacks. Applying only the tensors that fit would silently drop
part of the adapter, so this is an error. The message lists the first of those tensors, and the
note says which naming they were read in (kohya, PEFT, diffusers, ComfyUI or native); an adapter
none of whose tensors fit says it "updates no key" of the architecture.

```mecha
let base = model("sd1_a.safetensors")
export base + lora("sdxl_lora.safetensors", base=base) to "out.safetensors"
```

Check that the adapter is for this model's architecture: without `base=`, `mecha check` says
which architecture it is read as (`note: ... update 264 keys of sd1`). If the leftover tensors
are expected, pass `--allow-unused` to `mecha check`, `run`, `plan` or `explain`: they are then
left out and listed in warning W0270.""",

    "W0270": """\
With `--allow-unused`, the tensors of an adapter that update no key of the base (an error
otherwise, E0270) are left out, and this warning lists them, so what was dropped stays visible.
The rest of the adapter is applied as usual.

```sh
mecha run bake.mecha --allow-unused
```

Read the list: if it is most of the adapter, the adapter is probably for another architecture
or another base, and the output barely differs from the base. `mecha explain FILE KEY` shows
which adapter modules update a key.""",

    "E0271": """\
An adapter's tensors cannot make a delta of the shape of the weight they update. Either they do
not fit the base (a LoRA's up [out, r] and down [r, in] make an [out, in] delta, and the base's
tensor has other dimensions), or they disagree among themselves: an up and a down of different
ranks, a Tucker core that does not fit them, a DoRA magnitude that fits neither the outputs nor
the inputs, Hadamard or Kronecker factors that do not match, a PEFT `adapter_config.json` whose
rank differs from the tensors'. The message names
the module, the key and the shapes (the first five modules, then how many more).

```mecha
let base = model("sd1_a.safetensors")
export base + lora("sd1_lora_wide.safetensors", base=base) to "out.safetensors"
```

Use the adapter with the model family it was trained for (`mecha check` without `base=` says
which architecture its names match). Without `base=`, the shapes come from the adapter itself,
and a mismatch shows up where the delta is added to a model, as E0236.""",

    "E0272": """\
An adapter has modules whose delta depends on the weight they update, and `lora(...)` was not
given that weight: DoRA (a LoRA with `dora_scale` or PEFT's `lora_magnitude_vector`, where the
updated weight is re-normalised to a learned magnitude), (IA)³ (which scales the weight) and OFT
(which rotates it). Without `base=` there is nothing to compute them from. The message names the
first modules and their kind.

```mecha
let base = model("sd1_a.safetensors")
export base + lora("sd1_dora.safetensors") to "out.safetensors"
```

Name the model the adapter is applied to: `lora("sd1_dora.safetensors", base=base)`. The delta
is computed against that model's weights, so add it to that same model.""",

    "E0273": """\
A PEFT adapter (tensor names starting with `base_model.model.`) has no readable
`adapter_config.json` beside it: the file is missing, is not JSON, or is not a JSON object. The
config holds what the tensors do not: `lora_alpha` (and so the scale α/r), per-module
`rank_pattern` and `alpha_pattern`, `use_rslora` and `fan_in_fan_out`. A guessed α would scale
every delta wrongly, so the adapter is refused.

```mecha
let base = model("sd1_a.safetensors")
export base + lora("sd1_peft.safetensors") to "out.safetensors"
```

Keep the adapter in the folder PEFT saved it to (`adapter_model.safetensors` and
`adapter_config.json` side by side) and pass the `.safetensors` file's path; a renamed or moved
adapter needs its config copied next to it, under the name `adapter_config.json`.""",

    "E0274": """\
`lora(...)` was given a file that holds no adapter tensors: no LoRA up/down pairs, and none of
LyCORIS' LoHa, LoKr, (IA)³, full-diff or OFT tensors. Most often it is a full checkpoint, or a
textual-inversion embedding.

```mecha
let base = model("sd1_a.safetensors")
export base + lora("sd1_b.safetensors") to "out.safetensors"
```

Open a checkpoint with `model(...)` and merge it with a method (`weighted_sum(base, other)`), or
add what it learned as a difference (`base + (other - its_base)`). Embeddings are not merged into
checkpoints.""",

    "W0275": """\
A LoRA has no `alpha` tensors, so the file does not say its scale α/r. mechalang does what
kohya's scripts and the web UIs do: α = rank, a scale of 1 (the delta is up·down). That is right
for files saved without alpha, but a LoRA whose alpha was lost in a conversion is then applied
rank/α times too strongly.

```mecha
let base = model("sd1_a.safetensors")
export base + lora("sd1_lora_no_alpha.safetensors") to "out.safetensors"
```

If the result is too strong, scale the adapter: `base + 0.25 * lora(...)` is what a LoRA of rank
16 and alpha 4 would give. `mecha explain FILE KEY` shows, for each module updating a key, where
its α came from. A PEFT adapter takes α from `lora_alpha` in its `adapter_config.json`.""",

    "W0276": """\
A delta was written as a LoRA (`export … as lora(...)`), and some of its keys have no LoRA form:
biases and norms (one dimension), parameters that are not a module's weight, and copies such as
SD1's dot-less EMA keys. They are left out of the file, and this warning lists them: a LoRA
extracted from two checkpoints changes their matrices and convolutions only.

```mecha
let base = model("sd1_a.safetensors")
export model("sd1_b.safetensors") - base to "extracted.safetensors" as lora(rank=4)
```

To keep every difference, bake the delta into a model instead (`export base + delta to …`), or
export only the parts that have a LoRA form, such as `(tuned - base).diffuser`.""",

    "E0277": """\
`model(...)` was given an adapter file (a LoRA, LoHa, LoKr, …). Read as a model, its factors
would be merged as if they were weights: averaging the `lora_up` of two LoRAs and their
`lora_down` separately gives a file whose product is far from either.

```mecha
let base = model("sd1_a.safetensors")
export weighted_sum(base, model("sd1_lora.safetensors")) to "out.safetensors"
```

Read it with `lora(...)`, a Delta: `base + 0.8 * lora("sd1_lora.safetensors", base=base)` bakes it;
`0.5 * lora("a.safetensors") + 0.5 * lora("b.safetensors")` merges two LoRAs, and `export … as
lora()` writes the result as one LoRA.""",

    "W0204": """\
Most of a model's keys are unknown to the architecture it is read as, so per-block maps and
components will not select them. This usually means `arch=` names the wrong architecture, or the
file is a variant (a different naming, extra EMA weights) that mechalang does not describe.

```mecha
let a = model("sd1_a.safetensors", arch=sdxl)
export a to "out.safetensors"
```

Check `arch=`, or leave it out to detect the architecture from the file; `mecha info` lists the
architectures and `mecha info NAME -v` their keys. Unknown keys are still merged, key by key.""",

    "W0283": """\
Some of a model's tensors have a different number of dimensions than the same keys have in the
architecture it is read as. Architectures can share key names and differ in their layers: SD1
and SD2 UNets have the same LDM names, but SD2 projects attention with a linear `proj_in` /
`proj_out` ([c, c]) where SD1 has a 1x1 convolution ([c, c, 1, 1]). So either `arch=` names the
wrong one, or the file mixes two architectures (an SD2 UNet saved with an SD1 text encoder), which
no UI loads as either. Merging it with a real model of either architecture clashes on those keys.

```mecha
let a = model("sd1_a.safetensors", arch=sd2)
export a to "out.safetensors"
```

Check `arch=` (the note says which architecture has these shapes), or leave it out to detect it
from the file; a mixed file has to be repaired where it was made.""",

    "E0290": """\
`export … as diffusers` writes a diffusers pipeline folder, and a pipeline cannot be loaded
without its configs: model_index.json, each component's config.json, the tokenizers and the
scheduler. They are copied from the model's first input that is a pipeline folder of the same
architecture; here every input is a single file, so there is nothing to copy them from.

```mecha
export model("sd1_a.safetensors") to "merged/" as diffusers
```

Name a pipeline folder of the same architecture to take them from (its weights are not used):
`as diffusers(config="stable-diffusion-v1-5/")`, or write a single file (leave out `as diffusers`).""",

    "E0291": """\
`config=` of `as diffusers(...)` names the pipeline folder whose non-weight files (model_index.json,
configs, tokenizers, scheduler) the output copies. It must be a diffusers pipeline folder (with a
readable model_index.json) of the exported model's architecture: an SDXL pipeline's configs
describe another network than an SD1 model's weights.

```mecha
export model("sd1_a.safetensors") to "merged/" as diffusers(config="sd1_b.safetensors")
```

Give a folder such as the one `StableDiffusionPipeline.save_pretrained` writes (or that InvokeAI
keeps for a diffusers model).""",

    "E0292": """\
`as diffusers` needs to know where every key of the model goes in a pipeline folder, and that
layout is data for sd1, sdxl, sd3 and flux (stdlib/keymaps/*.toml `[diffusers]`). The model here is
of another architecture, which has none.

```mecha
export model("sd1_a.safetensors", arch="sd1-kohya") to "merged/" as diffusers
```

Write a single file instead (leave out `as diffusers`), or, if the model is one of those
architectures, say so with `arch=`.""",

    "W0290": """\
A diffusers folder holds what the pipeline's components load, and some keys of the model have
no place there: the noise schedule and EMA copies of an SD1 single file, SD3's `logit_scale` and
`model_sampling.sigmas`, or a component the config pipeline does not have. They are left out of
the folder, and this warning lists them.

```mecha
export model("sd1_a.safetensors") to "merged/" as diffusers(config="sd1_pipe/")
```

Nothing a diffusers pipeline uses is lost. A single-file export (no `as diffusers`) keeps every
key.""",

    "W0291": """\
The exported model lacks some components the config pipeline has (a merge of the UNet only, say
`weighted_sum(a.diffuser, b.diffuser)`), so the folder would not load without them. They are
copied unchanged from the config pipeline (the first diffusers input, or `config=`), and this
warning names them.

```mecha
export model("sd1_pipe/").diffuser to "unet_only/" as diffusers
```

Merge the whole models to merge those components too.""",

    # --------------------------------------------------------------------------------------------
    # E03xx: keys and hyperparameter maps

    "E0301": """\
With `--strict`, keys that some inputs of a merge lack are an error. Without it, such keys are
kept from the first input (or left out) and reported, which is what GUI mergers do silently;
typical cases are a checkpoint without VAE or text encoder, or a model with extra EMA keys. The
message groups the keys by prefix.

```sh
mecha run merge.mecha --strict
```

Merge inputs with the same keys, select the shared part (`a.diffuser`), or run without
`--strict` and read the report.""",

    "E0310": """\
A hyperparameter map gives no value for a key that needs one: no rule matches the key and the
map has no `default`. This happens for factors with no method default, such as a map scaling a
delta (`{...} * (b - a)`). It is reported once for each key without a value.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export a + {diffuser: 0.5} * (b - a) to "out.safetensors"
```

Add a `default` rule: `{default: 0, diffuser: 0.5}` applies the UNet half of the difference and
nothing else.""",

    "E0311": """\
A selector in a hyperparameter map names no component, block or class of the models'
architecture: usually a typo, or a block from another architecture (SDXL has IN00..IN08 and
OUT00..OUT08, SD1.5 has IN00..IN11 and OUT00..OUT11).

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha={default: 0.5, IN12: 1}) to "out.safetensors"
```

Use a name of that architecture: `mecha info sd1` lists its components, blocks and classes, and
the help line suggests the closest one.""",

    "E0312": """\
An end of a block range `A..B` is not a block of the architecture: it is a component or a class
(ranges go over blocks only, in order), or not a name of that architecture at all.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha={default: 0.5, IN06..IN12: 1}) to "out.safetensors"
```

Use block names at both ends (`IN06..IN11`); `mecha info sd1` lists the blocks in order. To
combine a range with a class, use `&`: `IN06..IN11 & attn2`.""",

    "E0313": """\
A block range is written backwards, so it would select nothing: its first block comes after its
last in the architecture's order (BASE, IN00.., M00, OUT00..).

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha={default: 0.5, OUT05..OUT01: 1}) to "out.safetensors"
```

Swap the ends: `OUT01..OUT05`.""",

    "E0314": """\
A quoted glob selector matches no block name of the architecture. Quoted globs match block names
(`"OUT*"`, `"IN0?"`); a glob meant for tensor keys matches none, and so does a block name from
another convention (`"MID*"`: the middle block is `M00`).

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha={default: 0.5, "MID*": 1}) to "out.safetensors"
```

Use the architecture's block names (`M00`; `mecha info sd1` lists them); to match tensor key
names, use `key("...")`; for a class or component, write its name without quotes.""",

    "E0315": """\
`default` is combined with `&` or `!` in a selector. `default` is not a set of keys: it applies to
the keys that no other rule matches, so it has no meaning inside a combination.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha={default: 0.5, default & attn2: 0.3}) to "out.safetensors"
```

Write `default` as a rule of its own and select the keys directly: `{default: 0.5, attn2: 0.3}`.""",

    "E0316": """\
A map rule selects no key of the models it is applied to. This is usually a `key("...")` glob
for keys the models do not have (LoRA key names such as `lora_up`, diffusers names in an LDM
checkpoint, or a glob missing a `*`), or a selector for a part the model lacks.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha={default: 0.5, key("*.lora_up.*"): 1}) to "out.safetensors"
```

`key()` globs match whole key names and `*` also matches dots; `mecha info sd1 -v` lists the
keys, and `mecha plan FILE` shows the keys of an output.""",

    "E0317": """\
`mbw(ARCH, "...")` is used with an architecture that has no block-weight string convention.
Block-weight strings (the comma-separated lists of supermerger and the A1111 MBW extension) are
defined for SD1.5 (26 values) and SDXL (20 values), in any of their key namings; Flux, SD3,
LLMs and the generic architecture have none.

```mecha
let layers = mbw(llama, "0,0.25,0.5,0.75,1")
```

Write a map with that architecture's block names instead; for llama,
`{default: 0.5, L0..L7: 0.25, HEAD: 1}`. `mecha info llama` lists the blocks.""",

    "E0318": """\
A block-weight string has the wrong number of values: SD1.5 strings have 26 (BASE, IN00..IN11,
M00, OUT00..OUT11), SDXL strings 20 (BASE, IN00..IN08, M00, OUT00..OUT08). A string copied from
a tool for the other architecture, or a decimal comma (`0,5` is two values), are the usual
causes.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=mbw(sd1, "0.5,0.5,0.5")) to "out.safetensors"
```

Give one value per block, in the order the help line shows, with `.` as decimal point.""",

    "E0319": """\
A value of a block-weight string is not a number, or is empty (two commas in a row). The message
gives its position and block.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
let w = mbw(sd1, "0,1,1,1,1,1,1,1,1,1,1,1,1,0.5o,1,1,1,1,1,1,1,1,1,1,1,1")
export weighted_sum(a, b, alpha=w) to "out.safetensors"
```

Write each value as a plain number (`0.5`), separated by commas. Preset names such as
`GRAD_V` are not accepted inside the string: import them from `std/presets` instead.""",

    "W0311": """\
A map rule never applies: on every key it matches, a later rule also matches and wins (in a map,
later rules override earlier ones). The rule is dead, which is rarely what was meant.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha={default: 0.5, attn2: 0.1, "OUT*": 0.2, attn2: 0.3}) to "out.safetensors"
```

Remove the rule, or reorder: put broad rules first and narrow ones (`"OUT*" & attn2`) after them.
Rules added to a preset with `with` or `|` are not reported, since overriding is their point.""",

    "W0312": """\
A `default` rule never applies: a later `default` replaces it, or the other rules together
already match every key.

```mecha
let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha={default: 0.5, diffuser: 0.3, !diffuser: 0.7}) to "out.safetensors"
```

Remove the unused `default`, or check that the other rules select what you meant.""",

    # --------------------------------------------------------------------------------------------
    # E04xx: names

    "E0401": """\
A name is used that no `let`, `param`, `def` or import defines and that is not a built-in (a
merge method, an architecture, `model`, `mbw`, `key`). Usually a typo in a model or method name;
the help line suggests the closest name.

```mecha
let ghost = model("sd1_a.safetensors")
let dream = model("sd1_b.safetensors")
export weighted_sum(ghots, dream) to "out.safetensors"
```

Fix the spelling or define the name. `mecha info --methods` lists the merge methods, including
those from plugins loaded with `--plugin`.""",

    "E0402": """\
A name is bound twice in one scope. Names in a recipe are bound once: a recipe describes values,
not steps, so `let a = ...` cannot be changed later as in a script.

```mecha
let a = model("sd1_a.safetensors")
let a = model("sd1_b.safetensors")
export a to "out.safetensors"
```

Give the second value its own name (`let b = ...`), and use that name below it.""",

    "E0403": """\
A name is used above the line that binds it. Recipes are read top to bottom, so a `let`, `param`
or import must come before its first use (`def`s may call each other in any order).

```mecha
export weighted_sum(a, b) to "out.safetensors"

let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
```

Move the `let` (or `param`, `import`) above the line that uses it.""",

    "E0404": """\
A template (`def`) has two parameters with the same name, so the second would hide the first.

```mecha
def blend(a, a) = weighted_sum(a, a)

let m = model("sd1_a.safetensors")
export blend(m, m) to "out.safetensors"
```

Rename one of them (`def blend(a, b) = weighted_sum(a, b)`).""",

    "E0405": """\
A template calls itself, directly or through other templates; the message shows the chain.
Templates are expanded where they are used, so a recursive one would never end; mechalang has
no loops or conditions to stop it.

```mecha
def f(x) = g(x)
def g(x) = f(x) + (x - x)

let a = model("sd1_a.safetensors")
export f(a) to "out.safetensors"
```

Write the repetition out as a chain of `let`s, or use a list with a method that takes many
models (`n_average(*models)`, `ties(*[m - base for m in models])`).""",

    # --------------------------------------------------------------------------------------------
    # E05xx: modules and params

    "E0406": """\
Templates call templates more than 10,000 levels deep. Recursion is refused outright (E0405), so
this happens only with a long generated chain of templates (`def f2(x) = f1(x)`, `def f3(x) =
f2(x)`, ...). Such a chain is better written with `let`s, which have no depth limit: a recipe of
10,000 chained `let` merges checks in seconds.

```sh
mecha check generated.mecha
```
""",
    "E0501": """\
An `import` or `from ... import` names a module that cannot be found. A path is looked up next to
the importing file, then in the bundled library for `std/...` paths, then in each folder on
`MECHA_PATH`; `.mecha` is added when the path has no suffix. The help line lists the places
tried.

```mecha
import "lib/blends.mecha" as blends

let a = model("sd1_a.safetensors")
export a to "out.safetensors"
```

Fix the path (it is relative to the importing file, not to the current folder), or add the
library's folder to `MECHA_PATH`.""",

    "E0502": """\
Modules import each other in a cycle: `a.mecha` imports `b.mecha`, which imports `a.mecha` again
(perhaps through other files). The message shows the chain and points at the import that closes
it. A cycle has no order in which the modules could be evaluated.

Move what both files need into a third module that imports neither of them, and import that one
from both.""",

    "E0503": """\
An import names something that starts with `_`. In a module, such names are private: helpers of
the module, not part of what it offers.

```mecha
from "std/presets" import _weights

let a = model("sd1_a.safetensors")
export a to "out.safetensors"
```

Import a public name. If you wrote the module and want to share the name, rename it without the
leading `_`.""",

    "E0504": """\
A `from "..." import NAME`, or `module.NAME` on an imported module, names something the module
does not define; usually a typo. The help line suggests the closest public name.

```mecha
from "std/presets" import SMOTHSTEP

let a = model("sd1_a.safetensors")
export a to "out.safetensors"
```

Use a name the module defines (`SMOOTHSTEP`); open the module file to see its names.""",

    "E0510": """\
A `param` has no default value and none was given on the command line, so the recipe cannot be
checked or run as it is. Params without defaults are the inputs a recipe expects from its
user.

```mecha
param strength: float

let a = model("sd1_a.safetensors")
let b = model("sd1_b.safetensors")
export weighted_sum(a, b, alpha=strength) to "out.safetensors"
```

Give it a value: `mecha run FILE --set strength=0.4`, or add a default to the recipe
(`param strength: float = 0.5`).""",

    "E0520": """\
`--set NAME=VALUE` names a param that the recipe does not declare, usually a typo or a param
of another recipe. The help line suggests the closest name or lists the recipe's params.

```sh
mecha run merge.mecha --set alhpa=0.3
```

Use a param the recipe declares with `param` (`--set alpha=0.3`).""",

    "E0521": """\
A `--set` value cannot be read as the param's declared type: text for a `float`, `int` or
`Hyper`, a fraction for an `int`, anything but `true`/`false` for a `bool`, an unknown
architecture for an `Arch`. The label shows the param's declaration.

```sh
mecha run merge.mecha --set alpha=abc
```

Give a value of the declared type (`--set alpha=0.3`). A `Model` param takes a path to a
`.safetensors` file, relative to the current folder, or to a recipe with one export.""",

    "E0522": """\
`--set NAME=FILE.mecha` names a recipe to use as the param's value (its one export is the
model), but no such file exists. The path is relative to the current folder.

```sh
mecha run final.mecha --set base=stage1.mecha
```

Check the path to the recipe file.""",

    "E0523": """\
A recipe given as a value (`--set base=stage1.mecha`) must have exactly one `export`, which
becomes the value; this one has none or several, so mechalang cannot tell which model is meant.

```sh
mecha run final.mecha --set base=two_outputs.mecha
```

Give a recipe with one export, or write the model it should produce to a file first
(`mecha run two_outputs.mecha`) and pass that file.""",

    "E0524": """\
A `--set` argument is not of the form `NAME=VALUE`: the `=` is missing, or the name is empty.
Spaces around `=` split it into separate shell arguments.

```sh
mecha run merge.mecha --set alpha 0.3
```

Write it as one argument: `--set alpha=0.3` (quote it if the value has spaces:
`--set "out=my merge.safetensors"`).""",

    "E0525": """\
`--set` gives the same param twice on one command line, so it is unclear which value is meant.
This happens easily when a command is built up in a script or shell history.

```sh
mecha run merge.mecha --set alpha=0.3 --set alpha=0.5
```

Keep one `--set` per param.""",

    # --------------------------------------------------------------------------------------------
    # E06xx: running a merge

    "E0601": """\
The merge failed while running, after the recipe was checked: reading an input, computing a key,
or writing the output. The message says what went wrong and, when known, the key and the recipe
line. Common causes are an input changed, moved or deleted since the check, a read error, a full
disk, running out of memory (or GPU memory with `--device cuda`), and `--check-finite` finding
NaN or infinite values in an output.

```sh
mecha run merge.mecha --device cuda
```

Nothing is written when a run fails: no partial output file is left. Fix the cause (free disk
space, use `--device cpu` or fewer `--threads` when memory runs out, restore the input) and run
again.""",

    "E0602": """\
The merge was interrupted before it finished: Ctrl-C on the command line, or a run cancelled
from the REPL or the Python API. Outputs are written to temporary files and moved into place
only when complete, so nothing was written and existing files with the output names are
unchanged.

Run the recipe again to produce the outputs.""",

    "E0603": """\
An output's folder does not exist and cannot be created: no permission to create it, a file
with that name is in the way, or the drive is read-only or missing (an unmounted or disconnected
disk).

```sh
mecha run merge.mecha -o /mnt/models/merged/ghost_dream.safetensors
```

Write somewhere you can create folders, create the folder yourself, or mount the drive.""",

    "E0604": """\
An output file already exists, and `mecha run` does not replace files unless asked to. This
protects earlier merges from being overwritten by a rerun.

```sh
mecha run merge.mecha
```

Pass `--overwrite` to replace the file (`mecha run merge.mecha --overwrite`), or change the
output path (`-o`, or the `to` of the export).""",

    # --------------------------------------------------------------------------------------------
    # E07xx: the command line and the Python API

    "E0701": """\
A command-line option (or the matching argument of the Python API) has a value it does not
accept. Examples: `--precision` takes `fp32` or `fp64` (the output dtype is set with
`export ... as fp16` instead), `--threads` must be at least 1, `--format` takes `text` or `json`,
and `mecha merge --dtype` takes `fp16`, `bf16` or `fp32`.

```sh
mecha run merge.mecha --precision fp16
```

Use one of the values `mecha COMMAND --help` lists for the option.""",

    "E0702": """\
A file given with `--plugin` raised an exception while it was imported, so its merge methods are
not available; the exception is shown. Usual causes are a syntax error, an import of a package
not installed in mechalang's environment, or a wrong path.

```sh
mecha run recipe.mecha --plugin my_methods.py
```

Fix the plugin; running `python my_methods.py` in the same environment shows the same error with
its traceback.""",

    "E0703": """\
`mecha merge --method` names a method that the quick merge does not offer. The quick merge
covers the methods of GUI checkpoint mergers: `weighted_sum`, `sigmoid`, `inv_sigmoid` and
`add_difference`.

```sh
mecha merge a.safetensors b.safetensors --method slerp
```

Use one of those four, or write a recipe for any other method
(`export slerp(a, b, alpha=0.5) to "out.safetensors"`); `mecha merge ... --print-recipe` prints
the recipe of a quick merge to start from.""",

    "E0704": """\
`mecha merge` is given the wrong number of models for its method: `add_difference` takes three
(A + (B - C)), the others take two.

```sh
mecha merge a.safetensors b.safetensors --method add_difference
```

Give the models the method needs, in order; to merge more models, write a recipe (for example
with `n_average(a, b, c)`).""",

    "E0705": """\
`mecha merge --name` contains characters other than letters, digits, `.`, `+` and `-`: spaces,
`_`, slashes or other punctuation; or it starts with `.` (a hidden file) or contains `..`. The
name becomes the output file name (`.safetensors` is added) in the current folder or
`--models-dir`, so it cannot contain a path. (The default name, made from the inputs' names,
the method and alpha, follows the same rule.)

```sh
mecha merge a.safetensors b.safetensors --name "ghost dream"
```

Use only the allowed characters (`--name ghost-dream-0.3`); to write elsewhere, pass
`-o FOLDER/` (with `--name`) or `-o FILE`.""",

    "E0706": """\
`mecha explain FILE KEY`, or `mecha plan FILE --key GLOB`, asks for a key that no output of the
recipe has. Keys are the tensor names of the output checkpoint, such as
`model.diffusion_model.input_blocks.1.1.proj_in.weight`; a glob must match a whole key name.

```sh
mecha explain merge.mecha "unet.down_blocks.0.*"
```

Use the key names of the output's architecture: `mecha plan FILE` lists the keys of each output,
`mecha info sd1 -v` the keys of an architecture.""",

    "E0710": """\
`mecha run --from MODEL` re-runs the recipe that `mecha run` and `mecha merge` store in the
metadata of every file they write (`mechalang.recipe`), and this file has none: it was made by
another tool, or its metadata was stripped (some converters and pruners drop it).

```sh
mecha run --from v1-5-pruned.safetensors
```

`mecha show MODEL` prints what the file does say about itself: its architecture, tensors and
dtypes, and any A1111 `sd_merge_recipe`/`sd_merge_models` or `modelspec.*` fields, which name the
models and the method another merger used; write that as a recipe to merge it again.""",

    "W0710": """\
`mecha run --from MODEL` re-runs a recipe that another version of mechalang stored. The recipe
runs as this version reads it; if a method changed between the versions (a bug fixed, a default
changed), the new output can differ from the file the recipe came from.

```sh
mecha run --from merged-by-an-older-mecha.safetensors -o again.safetensors
```

Compare the two files if it matters (same keys, tensors close), or run the version that
`mecha show MODEL` names.""",

    "E0708": """\
`mecha merge` was given a LoRA (recognised from its tensors) where it cannot use one. It takes
LoRAs in two ways: a model followed by one or more LoRAs bakes them into the model, at the
strength `--lora` gives (default 1); two LoRAs alone, with `--method weighted_sum`, merge into one
LoRA file (`(1 − alpha)·A + alpha·B`, concatenated exactly). Anything else is this error: a LoRA
given first, before the model; a LoRA as an input of another method (`sigmoid`,
`add_difference`); more than two LoRAs without a model; or `--lora` with no LoRA among the files.

```sh
mecha merge style.safetensors ghostmix.safetensors
```

Put the model first: `mecha merge ghostmix.safetensors style.safetensors --lora 0.8`. For more
LoRAs, other methods or per-block strengths, write a recipe (docs/adapters.md).""",

    "E0707": """\
`mecha explain-code` was given a code that does not exist. Codes are a letter and four digits,
`E` for errors and `W` for warnings (`E0401`, `W0311`), or the code's name
(`undefined-name`), as shown in brackets in each diagnostic.

```sh
mecha explain-code E401
```

Copy the code from the diagnostic (`error[E0401]: ...`). `mecha explain-code` without an
argument lists every code, as does docs/diagnostics.md.""",

    # --------------------------------------------------------------------------------------------
    # E09xx: sd-mecha recipes

    "E0901": """\
The file is not an sd-mecha recipe: it does not start with the `version 0.1.0` line that
sd-mecha writes at the top of its recipes, or it is empty. This is reported by `mecha convert`,
which reads only sd-mecha recipes. (`mecha check` and `mecha run` read a file without that line
as mechalang, so an sd-mecha recipe that lost its first line gives syntax errors there.)

```sh
mecha convert my_recipe.mecha
```

Add `version 0.1.0` as the first line if the file is an sd-mecha recipe whose header was lost;
a mechalang recipe needs no conversion.""",

    "E0902": """\
The `version` line of an sd-mecha recipe is malformed, or names a format version mechalang does
not read. mechalang reads sd-mecha's format 0.1.0.

```sdmecha
version 0.2.0
model "sd1_a.safetensors" model_config="sd1-ldm" merge_space="weight"
```

If the file was saved by a newer sd-mecha, save it in format 0.1.0 if sd-mecha can, or convert
it by hand; if the line is just mistyped, write `version 0.1.0`.""",

    "E0903": r"""A string in an sd-mecha recipe has no closing quote before the end of
the line. sd-mecha strings are in double quotes, and a quote inside one is written `\"`.

```sdmecha
version 0.1.0
model "sd1_a.safetensors
model "sd1_b.safetensors"
merge "weighted_sum" &0 &1 alpha=0.5
```

Add the missing quote (`model "sd1_a.safetensors"`). When another string follows on the same
line, the stray quote is reported as E0913 instead.""",

    "E0904": """\
A line of an sd-mecha recipe does not start with one of its instructions: `model`, `merge`,
`dict` or `literal`. Usually a typo, or text pasted into the recipe.

```sdmecha
version 0.1.0
modle "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &1 alpha=0.5
```

Fix the instruction name; comments start with `#`.""",

    "E0905": """\
An `&N` reference in an sd-mecha recipe names its own line or a later one. `&N` is the result of
instruction N, counted from 0 at the first line after `version`, and each instruction may only
use results computed before it. Lines deleted or moved by hand usually cause this.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &2 alpha=0.5
model "sd1_b.safetensors" model_config="sd1-ldm"
```

Move the referenced line above its first use and renumber the references, or fix the number.""",

    "E0906": """\
An `&N` reference names an instruction that does not exist: N is at least the number of
instructions. Instructions are counted from 0, starting at the first line after `version`.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &9 alpha=0.5
```

Use the number of the line you mean; the help line gives the number of instructions.""",

    "E0907": """\
An argument of an sd-mecha instruction cannot be read: a reference that is not `&` and a number,
`name=` without a value, `=value` without a name, or a bare word. Values are numbers, strings in
double quotes, `true`, `false`, `null`, or references `&N`.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &x alpha=0.5
```

Write the argument in one of those forms (`&1`).""",

    "E0908": """\
An sd-mecha line has the wrong arguments for its kind: a `model` path or `merge` method name not
in double quotes, a `dict` line with positional values, a `literal` line without exactly one
value, too many arguments for `model`, or a method or parameter name that is not a name.

```sdmecha
version 0.1.0
model sd1_a.safetensors
model "sd1_b.safetensors"
merge "weighted_sum" &0 &1 alpha=0.5
```

Follow the forms `model "PATH" model_config="..." merge_space="..."`,
`merge "METHOD" &0 &1 name=value`, `dict KEY=VALUE ...` and `literal VALUE`.""",

    "E0909": """\
A `model` or `literal` line has a keyword it does not take. Both take only `model_config=` and
`merge_space=`.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_type="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &1 alpha=0.5
```

Use `model_config=` (or remove the keyword: mechalang detects the architecture from the file).""",

    "E0910": """\
An sd-mecha instruction gives one argument twice: a keyword repeated, a hyperparameter given
both by position and by name, or two sd-mecha keywords that become the same mechalang keyword
(sd-mecha's `alpha` of `rotate` is mechalang's `beta`, say).

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &1 0.5 alpha=0.3
```

Give each argument once (`merge "weighted_sum" &0 &1 alpha=0.3`).""",

    "E0911": """\
The sd-mecha recipe has its `version` line but no instruction after it, so it describes no
model.

```sdmecha
version 0.1.0
```

Add the instructions (`model "a.safetensors"`, `model "b.safetensors"`,
`merge "weighted_sum" &0 &1`), or check that the right file was given.""",

    "E0912": """\
An sd-mecha recipe has a second `version` line. The header is written once, as the first line; a
second one usually means two recipes were pasted into one file.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &1 alpha=0.5
version 0.1.0
```

Remove the extra line; if two recipes were joined, split them into two files.""",

    "E0913": """\
A `"` appears in the middle of a word in an sd-mecha line, e.g. `model_config=sd1"-ldm"`. Strings
are written whole, in double quotes; a stray quote often means an earlier string on the line is
missing its closing quote.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config=sd1"-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &1 alpha=0.5
```

Quote the whole value: `model_config="sd1-ldm"`.""",

    "E0914": """\
`null` is used where a value is needed: as a `literal`, as a `dict` value, or as a positional
argument of a `merge`. mechalang has no null value. (A keyword of a `merge` set to `null`,
sd-mecha's "unset", is accepted and left out, so the mechalang default applies.)

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
literal null
merge "weighted_sum" &0 &1 alpha=&2
```

Give a value, or leave the argument out to use the method's default.""",

    "E0915": """\
The last line of an sd-mecha recipe is a `dict` or a `literal`. The last instruction is the
recipe's result, the model it produces, so it must be a `model` or a `merge`.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &1
dict IN00=0.5
```

Move the `dict` or `literal` above the `merge` that uses it, or remove it.""",

    "E0916": """\
A `merge` line passes more positional arguments than the sd-mecha method has (models and
hyperparameters together). The help line lists the method's positional parameters.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &1 0.5 0.3
```

Remove the extra arguments, or pass hyperparameters by name (`alpha=0.5`).""",

    "E0917": """\
`model_config=` or `merge_space=` of a `model` or `literal` line is given something other than a
string in double quotes (or `null`): a number, a reference, `true`/`false`.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config=1
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &1 alpha=0.5
```

Write the name in quotes, e.g. `model_config="sd1-ldm"`.""",

    "E0918": """\
A value of a `dict` line (a per-block hyperparameter) refers, with `&N`, to something that is not
a number, string or bool: a model or a merge. Dict values set a hyperparameter per block; they
cannot be models.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
dict sd1-ldm_unet_default=&0
merge "weighted_sum" &0 &1 alpha=&2
```

Give a number, or `&N` of a `literal` line holding a number.""",

    "W0920": """\
A `model` line's `model_config` names an sd-mecha model config that has no mechalang
architecture (a config from an sd-mecha extension, say). It is left out of the converted
recipe; mechalang detects the architecture from the file's header instead. (sd-mecha's LoRA
configs, such as `sd1-kohya_kohya_lora`, are known: such a line becomes `lora(...)`.)

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-custom_pruned" merge_space="weight"
model "sd1_b.safetensors" model_config="sd1-ldm" merge_space="weight"
merge "weighted_sum" &0 &1 alpha=0.5
```

Check with `mecha check` that the file is detected as the architecture you expect; a LoRA file is
not a full model and cannot be merged as one (convert the recipe with `mecha convert` and open the
LoRA with `lora(...)`: docs/adapters.md).""",

    "W0921": """\
An sd-mecha conversion of a model (a `merge "convert_..."` line, such as a LoRA or key-format
conversion) is left out: mechalang reads the model file as it is and finds its layout from the
header, without converting.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "convert_sd1_kohya_to_ldm" &1
merge "weighted_sum" &0 &2 alpha=0.5
```

Run `mecha check` to see what the file is detected as. If it is a LoRA, it cannot be merged as a
model (in a converted recipe, open it with `lora(...)` and add it: `base + lora("x.safetensors",
base=base)`); if it is a full checkpoint in another naming, mechalang reads that naming directly when it
knows it.""",

    "W0922": """\
A `merge` line passes a value positionally to a method whose sd-mecha signature mechalang does
not know, so it cannot tell which hyperparameter the value is. The value is kept as a positional
argument, which may not mean the same thing in mechalang's method.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
merge "sigmoid" &0 &1 0.5
```

Write the hyperparameter by name (`alpha=0.5`), checking the name with
`mecha info --methods`.""",

    "W0923": """\
A `model` line has a `merge_space` other than `weight` (`delta`, say). mechalang reads every
model file as weights; a difference of two models is written `a - b` in mechalang, not loaded
from a file.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm" merge_space="weight"
model "sd1_b.safetensors" model_config="sd1-ldm" merge_space="delta"
merge "weighted_sum" &0 &1 alpha=0.5
```

If the file really stores a difference (an extracted delta), mechalang cannot read it as one:
use the two models it was extracted from and write `tuned - base` in the converted recipe
(`mecha convert FILE`).""",

    "W0924": """\
An instruction's result is never used by a later line, and it is not the last line (the
recipe's result). It is kept in the converted recipe as a `let`, but has no effect on the output.
Often a leftover of an edit, or a reference number that is off by one.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
model "sd1_c.safetensors" model_config="sd1-ldm"
merge "weighted_sum" &0 &1 alpha=0.5
```

Remove the line, or check the `&N` references of the later lines.""",

    "W0925": """\
A `dict` key in sd-mecha's old block naming (`<config>_<component>_block_<name>`) has no
matching mechalang block, so it is kept as a tensor-key selector (`key("...")`). Such a selector
matches no tensor, so `mecha check` usually also reports E0316 for it.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
dict sd1-ldm_unet_default=0.5 sd1-ldm_unet_block_out=1
merge "weighted_sum" &0 &1 alpha=&2
```

Replace the key with a mechalang selector in the converted recipe (`mecha convert FILE`): a block
(`IN00`, `M00`), a component, or a `key("...")` glob over real key names.""",

    "W0926": """\
An argument of an sd-mecha method has a value with no mechalang counterpart: mechalang renames
the argument and maps its values, and this value is not one of them (sd-mecha's `vote_sgn` of
`ties_sum` becomes `consensus`, which takes only "sum" or "count"). The argument is kept as
written, so `mecha check` then reports it as unknown.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm"
model "sd1_b.safetensors" model_config="sd1-ldm"
model "sd1_c.safetensors" model_config="sd1-ldm"
merge "subtract" &1 &0
merge "subtract" &2 &0
merge "ties_sum" &3 &4 k=1.0 vote_sgn=0.5
merge "add_difference" &0 &5 alpha=1.0
```

Set the argument by hand in the converted recipe (`mecha convert FILE`), with a value the
label lists.""",

    "E0930": """\
An sd-mecha recipe uses a method (or a method with a setting) that mechalang has no exactly
equivalent method for. mechalang refuses the recipe rather than run it with a formula whose
results would differ from sd-mecha's; the help line says what to write instead, and the note why
the two differ where a method of the same name exists.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm" merge_space="weight"
model "sd1_b.safetensors" model_config="sd1-ldm" merge_space="weight"
dict key=0.5
literal &2 model_config="singleton-mecha" merge_space="param"
merge "convert_singleton" &3
merge "slerp" &0 &1 &4
```

The methods concerned (sd-mecha 1.1): `slerp` (sd-mecha interpolates directions and rescales
the norm; mechalang's `slerp` is mergekit's), `ties_sum` with `k` other than 1 (sd-mecha keeps
one more entry per tensor than the paper's top-k) or `vote_sgn=false` (ties of the sign count
are broken differently), `model_stock`, `dropout`,
`ties_sum_with_dropout`, `ties_sum_extended`, `truncate_rank`, `truncate_kronecker`,
`train_difference_mask`, `add_opposite_mask`, `add_strict_opposite_mask`, `multiply_quotient`,
`stack`, `cast`, `omit_non_finite`, `exchange_ema`, `rebasin`, `randperm`, `balance_attention`,
the `extract_*` LoRA extractions, and `pick_component`/`omit_component` other than as the first
argument of a `fallback`. Convert the recipe (`mecha convert FILE`), then replace the method by
hand with the mechalang method the help names, accepting the difference.""",

    "E0931": """\
sd-mecha 1.x writes a scalar hyperparameter as a one-key `dict key=VALUE`, wrapped in a `literal`
with `model_config="singleton-mecha"` and converted by `merge "convert_singleton"`. Here the
`dict` that such a `literal` wraps has other keys, or more than one.

```sdmecha
version 0.1.0
model "sd1_a.safetensors" model_config="sd1-ldm" merge_space="weight"
model "sd1_b.safetensors" model_config="sd1-ldm" merge_space="weight"
dict alpha=0.5
literal &2 model_config="singleton-mecha" merge_space="param"
merge "convert_singleton" &3
merge "weighted_sum" &0 &1 &4
```

Write the value as `dict key=0.5` (what sd-mecha writes), or pass it directly:
`merge "weighted_sum" &0 &1 alpha=0.5`.""",

    "E0932": """\
The file is an sd-mecha recipe (it starts with sd-mecha's `version` header), given to a command
that reads only mechalang: `mecha fmt` formats mechalang and would otherwise report the sd-mecha
lines as syntax errors. The file is not changed.

```sh
mecha fmt old_recipe.mecha
```

`mecha convert old_recipe.mecha > new_recipe.mecha` writes the equivalent mechalang, which `mecha
fmt` then formats and you can edit; `mecha check` and `mecha run` read the sd-mecha file as it is.""",

    # --------------------------------------------------------------------------------------------
    # a bug in mechalang

    "E0999": """\
Something went wrong inside mechalang: this is a bug, not a mistake in your recipe or your
files. The message names what failed.

```sh
MECHA_DEBUG=1 mecha check merge.mecha
```

Please report it with the recipe, the command line and, if possible, the traceback printed with
`MECHA_DEBUG=1`.""",
}
