"""Run configuration: presets, TOML files, ``--set`` overrides and the errors for unknown keys."""

from __future__ import annotations

import copy

import pytest

from seg25d.pipeline.config import DEFAULTS, PRESET_DIR, apply_override, list_presets, load_config, parse_override
from seg25d.pipeline.errors import InputError


def test_presets_listed_and_load():
    assert {"vessels", "gi"} <= set(list_presets())
    vessels = load_config("vessels")
    assert vessels["model"]["name"] == "projection25d"
    assert vessels["model"]["options"] == {"preset": "default", "scale": "auto"}
    assert vessels["train"]["max_steps"] == 1100 and vessels["train"]["path2_fraction"] == 0.15
    assert vessels["augment"]["flip_axes"] == [0, 1, 2]
    gi = load_config("gi")
    assert gi["model"]["name"] == "slicestack25d"
    assert gi["model"]["options"]["slices"] == 3 and gi["model"]["options"]["stride"] == 2
    assert gi["data"]["spacing"] == [3.0, 2.0, 2.0]
    assert gi["loss"]["ce_weight"] == 0.25
    # keys a preset does not set keep their defaults
    assert gi["train"]["seed"] == DEFAULTS["train"]["seed"]
    assert gi["data"]["folds"] == 0


def test_defaults_untouched_by_loading():
    before = copy.deepcopy(DEFAULTS)
    load_config("gi", ["train.max_steps=3", "model.options.backbone_options.depth=2"])
    assert DEFAULTS == before


def test_no_config_gives_defaults():
    assert load_config() == DEFAULTS


@pytest.mark.parametrize("text, keys, value", [
    ("train.max_steps=200", ["train", "max_steps"], 200),
    ("train.lr=2e-3", ["train", "lr"], 0.002),
    ("train.lr=0.5", ["train", "lr"], 0.5),
    ("train.progress=false", ["train", "progress"], False),
    ("augment.enabled=true", ["augment", "enabled"], True),
    ("data.patch_size=[8, 16, 16]", ["data", "patch_size"], [8, 16, 16]),
    ("data.exclude=['a', 'b']", ["data", "exclude"], ["a", "b"]),
    ("loss.kind=ce_dice", ["loss", "kind"], "ce_dice"),            # bare word: a string
    ("loss.kind='dice'", ["loss", "kind"], "dice"),                # quoted TOML string
    ("data.manifest=/tmp/a b/m.csv", ["data", "manifest"], "/tmp/a b/m.csv"),
    ("model.options.unet.depth=2", ["model", "options", "unet", "depth"], 2),
    ("model.options={preset='paper', directions=4}", ["model", "options"], {"preset": "paper", "directions": 4}),
    (" train.seed =7", ["train", "seed"], 7),
])
def test_parse_override(text, keys, value):
    got_keys, got = parse_override(text)
    assert got_keys == keys
    assert got == value and type(got) is type(value)


def test_parse_override_needs_equals():
    with pytest.raises(InputError, match="key=value"):
        parse_override("train.max_steps")


def test_overrides_applied():
    config = load_config("vessels", ["train.max_steps=3", "train.lr=1e-4", "train.progress=false",
                                     "data.patch_size=[4, 8, 8]", "model.options.unet.depth=2",
                                     "model.options.unet.base_channels=4", "model.options.directions=2"])
    assert config["train"]["max_steps"] == 3
    assert config["train"]["lr"] == pytest.approx(1e-4)
    assert config["train"]["progress"] is False
    assert config["data"]["patch_size"] == [4, 8, 8]
    # nested model options are created below model.options and keep the preset's other options
    assert config["model"]["options"] == {"preset": "default", "scale": "auto", "directions": 2,
                                          "unet": {"depth": 2, "base_channels": 4}}
    # later overrides win
    assert load_config("vessels", ["train.seed=1", "train.seed=5"])["train"]["seed"] == 5


def test_model_options_replaced_as_a_whole():
    config = load_config("gi", ["model.options={slices=5}"])
    assert config["model"]["options"] == {"slices": 5}


@pytest.mark.parametrize("override, bad, hint", [
    ("trian.max_steps=3", "'trian'", "did you mean train"),
    ("train.max_step=3", "'train.max_step'", "did you mean train.max_steps"),
    ("data.patchsize=[4, 4, 4]", "'data.patchsize'", "did you mean data.patch_size"),
    ("model.nmae=unet2d", "'model.nmae'", "did you mean model.name"),
])
def test_unknown_override_key(override, bad, hint):
    with pytest.raises(InputError) as info:
        load_config("vessels", [override])
    message = str(info.value)
    assert message.startswith("--set: ")
    assert bad in message and hint in message
    assert "valid:" in message


def test_section_must_be_a_table():
    with pytest.raises(InputError, match="train must be a table"):
        apply_override(copy.deepcopy(DEFAULTS), "train=3")


def test_toml_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nname = "unet3d"\noptions = { depth = 2, base_channels = 4 }\n\n'
                    '[train]\nmax_steps = 7\nlr = 0.01\nprogress = false\n\n[data]\npatch_size = [8, 8, 8]\n')
    config = load_config(path, ["train.max_steps=9"])
    assert config["model"] == {"name": "unet3d", "options": {"depth": 2, "base_channels": 4}}
    assert config["train"]["max_steps"] == 9 and config["train"]["lr"] == 0.01 and config["train"]["progress"] is False
    assert config["data"]["patch_size"] == [8, 8, 8]
    assert config["loss"] == DEFAULTS["loss"]
    # a string path works too
    assert load_config(str(path))["train"]["max_steps"] == 7


def test_toml_file_unknown_key_names_file(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[train]\nmax_step = 7\n")
    with pytest.raises(InputError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "did you mean train.max_steps" in message


def test_toml_file_unknown_section(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[augmnet]\nenabled = false\n")
    with pytest.raises(InputError, match="did you mean augment"):
        load_config(path)


def test_toml_file_broken_or_missing(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nmax_steps = \n")
    with pytest.raises(InputError, match="cannot read TOML"):
        load_config(broken)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_unknown_preset_lists_presets():
    with pytest.raises(InputError) as info:
        load_config("vesels")
    message = str(info.value)
    assert "unknown config 'vesels'" in message
    for name in list_presets():
        assert name in message


def test_every_preset_file_is_valid():
    for path in PRESET_DIR.glob("*.toml"):
        config = load_config(path.stem)
        assert set(config) == set(DEFAULTS)


def test_relative_manifest_in_a_toml_file_is_relative_to_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "run.toml").write_text('[data]\nmanifest = "../data/manifest.csv"\n')
    monkeypatch.chdir(tmp_path / "configs")
    expected = str((tmp_path / "data" / "manifest.csv").resolve())
    assert load_config(folder / "run.toml")["data"]["manifest"] == expected
    monkeypatch.chdir(tmp_path)
    assert load_config(folder / "run.toml")["data"]["manifest"] == expected


def test_a_new_model_name_drops_the_presets_model_options():
    config = load_config("gi", ["model.name=projection25d"])
    assert config["model"] == {"name": "projection25d", "options": {}}
    config = load_config("gi", ["model.options.scale=2", "model.name=projection25d"])  # options apply on top
    assert config["model"]["options"] == {"scale": 2}
    config = load_config("gi", ["model.options.stride=1"])  # same model: the preset's options stay
    assert config["model"]["options"]["stride"] == 1 and config["model"]["options"]["slices"] == 3


@pytest.mark.parametrize("override, message", [
    ("train.val_every=0", "must be a positive integer, got 0"),
    ("train.max_steps=-1", "must be a positive integer, got -1"),
    ("train.checkpoint_every=2.5", "expected an integer, got 2.5"),
    ("train.slices_per_step=true", "expected an integer, got True"),
])
def test_step_counts_must_be_positive_integers(override, message):
    with pytest.raises(InputError, match=f"^{override.split('=')[0]}: {message}$"):
        load_config("vessels", [override])


@pytest.mark.parametrize("override, message", [
    ("train.lr=abc", "train.lr: expected a number, got 'abc'"),
    ("train.max_minutes='ten'", "train.max_minutes: expected a number, got 'ten'"),
    ("train.weight_decay=[0.1]", "train.weight_decay: expected a number, got [0.1]"),
    ("data.spacing=1.5", 'data.spacing: expected "auto" or a list of numbers, got 1.5'),
    ("data.spacing=[1, 'a', 1]", 'data.spacing: expected "auto" or a list of numbers, got [1, \'a\', 1]'),
    ("data.patch_size=[32.5, 32, 32]", 'data.patch_size: expected a list of integers or "auto", got [32.5, 32, 32]'),
    ("data.exclude=[7]", "data.exclude: expected a list of strings, got [7]"),
    ("augment.enabled=1", "augment.enabled: expected true or false, got 1"),
    ("data.normalize=3", "data.normalize: expected a string or a list of strings, got 3"),
    ("data.resample_labels='yes'", "data.resample_labels: expected true or false, got 'yes'"),
])
def test_every_value_must_have_its_defaults_type(override, message):
    """Types are checked when the configuration resolves, before any data is read."""
    with pytest.raises(InputError) as err:
        load_config("vessels", [override])
    assert str(err.value) == message


@pytest.mark.parametrize("override, key, value", [
    ("train.lr=1", "lr", 1), ("train.max_minutes=2", "max_minutes", 2), ("train.weight_decay=0", "weight_decay", 0),
])
def test_integers_are_numbers(override, key, value):
    assert load_config("vessels", [override])["train"][key] == value


def test_presets_and_toml_files_are_type_checked(tmp_path):
    for name in ("vessels", "gi"):
        load_config(name)
    path = tmp_path / "c.toml"
    path.write_text("[data]\nspacing = \"2mm\"\n")
    with pytest.raises(InputError, match='^data.spacing: expected "auto" or a list of numbers, got \'2mm\'$'):
        load_config(path)
