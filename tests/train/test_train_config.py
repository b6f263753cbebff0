"""Recipe configs: options left at None take the last preset's value, a config goes into a checkpoint as plain
values, and the peak learning rate follows --lr or the linear scaling rule."""

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.train.config import DatasetPreset, TrainConfig, config_dict, fill_from_preset


@dataclass
class Small:
    a: int | None = None
    b: str | None = None
    c: float | None = None
    d: int = 7  # an option with a value of its own: a preset never replaces it


NAMES = ("a", "b", "c", "d")
VALUES = {"a": st.integers(-5, 5), "b": st.text(max_size=3), "c": st.floats(allow_nan=False), "d": st.integers(0, 9)}


def option(name: str):
    return st.none() | VALUES[name]


presets = st.lists(st.fixed_dictionaries({}, optional={name: option(name) for name in NAMES}), min_size=0, max_size=4)


@settings(max_examples=100, deadline=None)
@given(given_values=st.fixed_dictionaries({name: option(name) for name in ("a", "b", "c")}), presets=presets)
def test_given_options_win_and_none_takes_the_last_preset_naming_it(given_values, presets) -> None:
    cfg = Small(**given_values)
    before = dataclasses.replace(cfg)
    filled = fill_from_preset(cfg, *presets)
    assert cfg == before and filled is not cfg  # a copy; the config passed in is left as it was
    for name in NAMES:
        mine = getattr(cfg, name)
        named = [preset[name] for preset in presets if name in preset]
        want = mine if mine is not None else (named[-1] if named else None)
        assert getattr(filled, name) == want, name


def test_presets_compose_as_plain_dicts() -> None:
    paper = {"a": 1, "b": "paper", "c": 0.5}
    sibling = dict(paper, a=800)  # another dataset's preset: the paper's with one value changed
    assert fill_from_preset(Small(), paper, {"c": 0.25}) == Small(a=1, b="paper", c=0.25)
    assert fill_from_preset(Small(b="mine"), sibling) == Small(a=800, b="mine", c=0.5)
    assert fill_from_preset(Small(a=0, c=0.0), paper) == Small(a=0, b="paper", c=0.0)  # 0 is given, not missing


def test_unknown_preset_options_are_named() -> None:
    with pytest.raises(ValueError, match="preset names options that Small does not have: epochz$"):
        fill_from_preset(Small(), {"a": 1}, {"epochz": 3, "b": "x"})
    with pytest.raises(ValueError, match="does not have: lr_base, patchsize"):
        fill_from_preset(Small(), {"patchsize": 8, "lr_base": 1.0})


@dataclass
class RecipeConfig(TrainConfig):
    data_root: Path | None = None
    num_frames: int | None = None
    mask_ratio: float = 0.9


def test_config_dict_loads_back_with_weights_only(tmp_path) -> None:
    cfg = fill_from_preset(
        RecipeConfig(output_dir=tmp_path / "run", data_root=tmp_path / "videos", seed=3),
        {"model": "tiny", "epochs": 2, "batch_size": 4, "base_lr": 1e-3, "num_frames": 16, "clip_grad": None},
    )
    plain = config_dict(cfg)
    assert plain["output_dir"] == str(tmp_path / "run") and plain["data_root"] == str(tmp_path / "videos")
    assert plain["model"] == "tiny" and plain["num_frames"] == 16 and plain["clip_grad"] is None
    buffer = io.BytesIO()
    torch.save({"config": plain}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["config"] == plain
    assert set(plain) == {f.name for f in dataclasses.fields(RecipeConfig)}
    paths = {"output_dir": Path(plain["output_dir"]), "data_root": Path(plain["data_root"])}
    assert RecipeConfig(**{**plain, **paths}) == cfg


def test_peak_lr_is_given_or_scaled_by_the_batch() -> None:
    assert TrainConfig(lr=3e-4, base_lr=1e-3).peak_lr(512) == (3e-4, "given by --lr")
    lr, note = TrainConfig(base_lr=1e-3).peak_lr(512)
    assert lr == pytest.approx(2e-3) and note == "= 0.001 x 512 / 256"
    assert TrainConfig(base_lr=1.5e-4).peak_lr(64)[0] == pytest.approx(1.5e-4 / 4)


def test_dataset_preset_is_a_frozen_description() -> None:
    def read(cfg, *, train):
        return [cfg, train]

    preset = DatasetPreset("toy", read, paper={"epochs": 800})
    assert (preset.synthetic, preset.sampling, preset.class_names) == ({}, "dense", None)
    assert preset.read("cfg", train=True) == ["cfg", True]
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.name = "other"
    assert fill_from_preset(TrainConfig(), preset.paper, preset.synthetic).epochs == 800
