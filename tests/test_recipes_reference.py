"""docs/recipes.md is generated from the recipes' config dataclasses by docs/recipes_reference.py: the committed page
must be what the generator writes now, list every option of every recipe config in its recipe's section, and spell
each flag as tyro does."""

import dataclasses
import importlib.util
import io
import re
import sys
import typing
from contextlib import redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python docs/recipes_reference.py"


@pytest.fixture(scope="module")
def generated():
    """The generator module, the page it renders now, and each documented (section, path, config class)."""
    spec = importlib.util.spec_from_file_location("recipes_reference", ROOT / "docs" / "recipes_reference.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    page = generator.render()
    configs = [(title, path, getattr(sys.modules[Path(path).stem], name)) for title, path, name in generator.RECIPES]
    return generator, page, configs


def cli_flags(cls: type, prefix: str = "") -> list[str]:
    """Every flag of a config as tyro spells it, written out independently of the generator: underscores become
    hyphens, nested dataclasses a dotted prefix, booleans also a `--no-` form."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += cli_flags(kind, prefix + f.name + ".")
            continue
        out.append("--" + (prefix + f.name).replace("_", "-"))
        if kind is bool:
            out.append("--" + prefix.replace("_", "-") + "no-" + f.name.replace("_", "-"))
    return out


def sections(page: str) -> dict[str, str]:
    parts = re.split(r"^## ", page, flags=re.MULTILINE)[1:]
    return {part.splitlines()[0]: part for part in parts}


def test_committed_page_is_current(generated):
    _, page, _ = generated
    committed = (ROOT / "docs" / "recipes.md").read_text()
    assert committed == page, f"docs/recipes.md is out of date: run `{REGENERATE}` and commit docs/recipes.md"


def test_every_option_of_every_recipe_appears_in_its_section(generated):
    _, page, configs = generated
    by_title = sections(page)
    assert set(by_title) == {title for title, _, _ in configs}
    for title, path, cls in configs:
        missing = [flag for flag in cli_flags(cls) if f"`{flag}`" not in by_title[title]]
        assert not missing, f"{path} {cls.__name__}: {missing} not in section '{title}' of docs/recipes.md"
        assert f"`{path}` (`{cls.__name__}`)" in by_title[title]


def test_flags_are_spelled_as_tyro_spells_them(generated, monkeypatch):
    tyro = pytest.importorskip("tyro")
    _, _, configs = generated
    monkeypatch.setenv("COLUMNS", "300")  # one flag per line, none wrapped
    for _, path, cls in configs:
        help_text = io.StringIO()
        with redirect_stdout(help_text), pytest.raises(SystemExit):
            tyro.cli(cls, args=["--help"])
        missing = [
            f for f in cli_flags(cls) if not re.search(rf"(?<![\w.-]){re.escape(f)}(?![\w-])", help_text.getvalue())
        ]
        assert not missing, f"{path}: tyro's --help has no {missing}"


def test_preset_columns_are_the_recipes_own_values(generated):
    """Spot checks against REFERENCE.md through the page: the paper's UCF101 pretraining and fine-tuning presets."""
    _, page, _ = generated
    by_title = sections(page)
    epochs = next(line for line in by_title["Pretraining"].splitlines() if line.startswith("| `--epochs`"))
    assert [c.strip() for c in epochs.split(" | ")[4:8]] == ["`3200`", "`4800`", "`800`", "`800`"]
    layer_decay = next(line for line in by_title["Fine-tuning"].splitlines() if line.startswith("| `--layer-decay`"))
    assert layer_decay.split(" | ")[4].strip() == "`0.7`"
