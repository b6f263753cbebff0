"""Write docs/recipes.md, every option of every recipe, from the recipes' own config dataclasses.

    python docs/recipes_reference.py            # rewrites docs/recipes.md
    python docs/recipes_reference.py --check    # exit status 1 if docs/recipes.md is out of date

Nothing on the page is typed by hand: the flags are tyro's spelling of the dataclass fields (`--data-root`,
`--data.pool-factor`, `--compile` / `--no-compile`), the types and defaults are the fields', the help is the field's
attribute docstring read with `docstring_parser` (the reader tyro uses for `--help`, searching the class and its bases
in the same order), and the preset columns are what the recipe itself fills in: its `main` runs with its `train`
replaced by a function that returns the resolved config, so a preset cannot be documented with another value than the
recipe uses. `tests/test_recipes_reference.py` regenerates the page and fails when the committed one differs.
"""

import dataclasses
import importlib.util
import re
import sys
import types
import typing
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "recipes.md"
DATA = Path("/data")  # a stand-in --data-root: the presets depend on whether it is given, not on its value

# (page section, recipe script, config class), in page order: every config the page documents. The first script of a
# section is the recipe its siblings build on: the section's table lists its options, with a column per sibling.
# A config that moves (e.g. into a tubemask module) changes its line here and nothing else.
RECIPES = [
    ("Pretraining", "recipes/pretrain_ucf101.py", "PretrainConfig"),
    ("Pretraining", "recipes/pretrain_hmdb51.py", "HMDB51Config"),
    ("Pretraining", "recipes/pretrain_ssv2.py", "SSv2Config"),
    ("Pretraining", "recipes/pretrain_k400.py", "K400Config"),
    ("Fine-tuning", "recipes/finetune_ucf101.py", "FinetuneConfig"),
    ("Fine-tuning", "recipes/finetune_hmdb51.py", "HMDB51Config"),
    ("Fine-tuning", "recipes/finetune_ssv2.py", "SSv2Config"),
    ("Fine-tuning", "recipes/finetune_k400.py", "K400Config"),
    ("Action detection (AVA)", "recipes/detect_ava.py", "DetectConfig"),
    ("Data-efficiency study", "recipes/data_efficiency.py", "ExperimentConfig"),
]


@dataclasses.dataclass
class Recipe:
    path: str
    module: types.ModuleType
    config: type

    @property
    def label(self) -> str:
        """The dataset's name from the recipe's `DatasetPreset`, else the script's name."""
        from tubemask.train.config import DatasetPreset

        presets = [v for v in vars(self.module).values() if isinstance(v, DatasetPreset)]
        return presets[0].name if len(presets) == 1 else Path(self.path).name


@dataclasses.dataclass
class Column:
    """A preset column: the values `resolve(recipe.config(**given))` gives."""

    title: str
    recipe: Recipe
    given: dict[str, Any]
    resolve: Callable[[Any], Any]


def load(path: str) -> types.ModuleType:
    """Load a script by path as the module named after its file (so a sibling's `from pretrain_ucf101 import ...`
    finds the base recipe loaded just before it), with its folder on `sys.path` as when it runs."""
    file = REPO / path
    for folder in (str(file.parent), str(REPO)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[file.stem] = module  # dataclasses and docstring_parser look classes up by module
    spec.loader.exec_module(module)
    return module


@contextmanager
def train_returns_config(modules: list[types.ModuleType]):
    """Within: every recipe's `train(cfg, ...)` returns the config its `main` resolved, instead of training; a `main`
    that starts a run some other way stops at `Run.start` with an error instead of training."""
    from tubemask.train.run import Run

    def refuse(*args, **kwargs):
        raise RuntimeError(
            "docs/recipes_reference.py: a recipe's main started a run; it must resolve its config and "
            "hand it to `train(cfg, ...)`, which the generator replaces"
        )

    saved = {m: m.train for m in modules if hasattr(m, "train")}
    start = Run.__dict__["start"]
    for module in saved:
        module.train = lambda cfg, *args, **kwargs: cfg
    Run.start = classmethod(refuse)
    try:
        yield
    finally:
        Run.start = start
        for module, train in saved.items():
            module.train = train


def columns(recipes: list[Recipe]) -> list[Column]:
    """The preset columns of a section: each recipe with --data-root, the base recipe without it (and with
    --linear-probe where it has one); a study with `apply_quick` its `--quick` values."""
    base = recipes[0]
    if hasattr(base.module, "apply_quick"):
        return [Column("`--quick`", base, {}, base.module.apply_quick)]
    titles = [f"{r.label} (`--data-root`)" if len(recipes) > 1 else "with `--data-root`" for r in recipes]
    cols = [Column(t, r, {"data_root": DATA}, r.module.main) for t, r in zip(titles, recipes, strict=True)]
    cols.append(Column("synthetic (no `--data-root`)", base, {}, base.module.main))
    if "linear_probe" in field_names(base.config):
        cols.append(
            Column(f"{base.label} `--linear-probe`", base, {"data_root": DATA, "linear_probe": True}, cols[0].resolve)
        )
    return cols


def resolved(column: Column, modules: list[types.ModuleType]) -> Any:
    with train_returns_config(modules):
        return column.resolve(column.recipe.config(**column.given))


# ---- fields: flags, types, defaults, help --------------------------------------------------------------------------


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def options(cls: type, prefix: str = "") -> list[tuple[str, type, dataclasses.Field, type]]:
    """Every option of `cls` as (dotted name, annotation, field, owner class), nested dataclasses flattened as tyro
    does (`data.pool_factor`)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += options(kind, prefix + f.name + ".")
        else:
            out.append((prefix + f.name, kind, f, cls))
    return out


def flag(name: str, kind: type) -> str:
    """tyro's spelling: `--data-root`, `--data.pool-factor`; booleans `--compile` / `--no-compile`."""
    *groups, last = name.split(".")
    head = "".join(g.replace("_", "-") + "." for g in groups)
    text = f"`--{head}{last.replace('_', '-')}`"
    return text + f" / `--{head}no-{last.replace('_', '-')}`" if kind is bool else text


def type_text(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is type(None):
        return "None"
    if origin is Literal:
        return "{" + ", ".join(str(a) for a in args) + "}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in args)
    if origin is tuple:
        return " ".join(type_text(a) for a in args if a is not Ellipsis) + (" ..." if Ellipsis in args else "")
    return "path" if kind is Path else getattr(kind, "__name__", str(kind))


def default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def value_text(value: Any) -> str:
    """A value as it is typed on the command line: `3e-4`, `256 320`, `outputs/run`."""
    if isinstance(value, tuple):
        return " ".join(value_text(v) for v in value) if value else "(none)"
    if isinstance(value, float) and 0 < abs(value) < 1e-2:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return str(value)


def help_text(owner: type, name: str) -> str:
    """The field's attribute docstring, searched through the class and its bases as tyro does; one line, markdown-safe
    (`<`, `>`, `*`, `|` escaped outside code spans)."""
    import docstring_parser

    for cls in owner.__mro__:
        if cls.__module__ == "builtins":
            continue
        docs = {p.arg_name: p.description for p in docstring_parser.parse_from_object(cls).params if p.description}
        if name.split(".")[-1] in docs:
            text = " ".join(docs[name.split(".")[-1]].split())
            parts = text.split("`")
            for i in range(0, len(parts), 2):  # even parts are outside code spans
                parts[i] = re.sub(r"([*|])", r"\\\1", parts[i]).replace("<", "&lt;").replace(">", "&gt;")
            return "`".join(parts).replace("|", "\\|")
    return ""


def get(cfg: Any, name: str) -> Any:
    for part in name.split("."):
        cfg = getattr(cfg, part)
    return cfg


# ---- the page ------------------------------------------------------------------------------------------------------


def row(cells: list[str]) -> str:
    """A table row; a `|` inside a cell is escaped so that it cannot split the cell."""
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def code(value: Any) -> str:
    return f"`{value_text(value)}`"


def section(title: str, recipes: list[Recipe], modules: list[types.ModuleType]) -> list[str]:
    base = recipes[0]
    cols = columns(recipes)
    values = [resolved(c, modules) for c in cols]
    scripts = ", ".join(f"`{r.path}` (`{r.config.__name__}`)" for r in recipes)
    lines = [f"## {title}", "", f"{scripts}.", ""]
    lines += [row(["option", "help", "type", "default", *(c.title for c in cols)])]
    lines += [row(["---"] * (4 + len(cols)))]
    for name, kind, f, owner in options(base.config):
        cells = [flag(name, kind), help_text(owner, name), f"`{type_text(kind)}`", code(default(f))]
        for column, value in zip(cols, values, strict=True):
            v = get(value, name)
            cells.append("*given*" if name in column.given else "" if v == default(f) else code(v))
        lines.append(row(cells))
    lines.append("")

    own = [(r, o) for r in recipes[1:] for o in options(r.config) if o[0] not in field_names(base.config)]
    if own:
        lines += [f"Options that only the siblings of `{base.path}` have (the dataset's files):", ""]
        lines += [row(["option", "help", "recipe", "type", "default"]), row(["---"] * 5)]
        for r, (name, kind, f, owner) in own:
            cells = [flag(name, kind), help_text(owner, name), f"`{Path(r.path).name}`", f"`{type_text(kind)}`"]
            lines.append(row([*cells, code(default(f))]))
        lines.append("")

    synthetic = [c for c in cols if c.title.startswith("synthetic")]
    if synthetic and len(recipes) > 1:
        ref = values[cols.index(synthetic[0])]
        notes = []
        for r in recipes[1:]:
            mine = resolved(Column("", r, {}, r.module.main), modules)
            diff = [
                f"{flag(n, k)} {code(get(mine, n))}"
                for n, k, _, _ in options(base.config)
                if get(mine, n) != get(ref, n)
            ]
            notes.append(f"`{Path(r.path).name}`: " + (", ".join(diff) if diff else "none"))
        lines += [
            "Without `--data-root` the siblings take the synthetic column's values except: " + "; ".join(notes) + ".",
            "",
        ]
    return lines


def render() -> str:
    """The whole page, from the recipes as they are now."""
    recipes, modules = [], []
    for title, path, config in RECIPES:
        module = load(path)
        modules.append(module)
        recipes.append((title, Recipe(path, module, getattr(module, config))))
    lines = [
        "# Recipe options",
        "",
        "<!-- Generated by docs/recipes_reference.py from the recipes' config dataclasses; do not edit by hand. -->",
        "",
        "Every option of every recipe, generated from the recipes' config dataclasses by `docs/recipes_reference.py`",
        "(`python docs/recipes_reference.py` rewrites this page; `tests/test_recipes_reference.py` fails when it is out",
        "of date). `python recipes/<recipe>.py --help` prints the same options.",
        "",
        "- **option**: the flag as tyro spells it; a boolean has a `--no-` form, a nested option a dotted one.",
        '- **default**: the dataclass default. `None` means "the preset\'s value": the recipe fills it from its paper',
        "  preset when `--data-root` is given and from its CPU-sized synthetic preset when it is not; an option you pass",
        "  always wins.",
        "- **preset columns**: the value the option takes when it is not passed, as the recipe's own `main` resolves it",
        "  (with `--data-root`, per dataset; without it; with `--linear-probe`). A blank cell is the default; `None`",
        "  left after the preset is decided at run time (the help says how, e.g. `--precision`).",
        "",
        "What the paper's settings are and where they come from: [Pretraining](pretraining.md#presets),",
        "[Fine-tuning](finetuning.md#presets), [Action detection](detection.md), [Reproducing the paper](reproducing.md).",
        "",
    ]
    titles = list(dict.fromkeys(t for t, _ in recipes))
    for title in titles:
        lines += section(title, [r for t, r in recipes if t == title], modules)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    page = render()
    if "--check" in sys.argv[1:]:
        current = PAGE.read_text() if PAGE.exists() else ""
        sys.exit(0 if current == page else f"{PAGE} is out of date: run `python docs/recipes_reference.py`")
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(REPO)}")
