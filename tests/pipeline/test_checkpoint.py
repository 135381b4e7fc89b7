"""Checkpoint versions: every checkpoint carries one, and older ones load through the migrations."""

from __future__ import annotations

import copy

import pytest
import torch

from seg25d.models import build
from seg25d.pipeline.checkpoint import FORMAT, MIGRATIONS, VERSION, load_checkpoint, load_model, save_checkpoint
from seg25d.pipeline.errors import InputError

TINY = {"directions": 2, "train_directions": 2, "unet": {"depth": 2, "base_channels": 4}, "head_channels": 4}
X = torch.randn(1, 1, 6, 8, 9, generator=torch.Generator().manual_seed(0))


def _version1(model: torch.nn.Module, **changes) -> dict:
    """A checkpoint as version 1 wrote it: no version key, and projection25d's options of then (mode, fine_lift,
    head_layers, filter_init and infer_directions were options)."""
    options = {k: v for k, v in model.config["options"].items()}
    options.update(mode="mip", filter_init="identity", head_layers=1, fine_lift=False, infer_directions=None)
    options.update(changes)
    config = {"model": {"name": "projection25d", "options": {"preset": "default", "infer_directions": 4}}}
    return {"format": FORMAT, "model_config": {**model.config, "options": options},
            "model_state": model.state_dict(), "config": config, "step": 3}


def _output(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


def test_every_checkpoint_carries_the_current_version(tmp_path):
    model = build("unet2d", 1, 1, depth=2, base_channels=4)
    save_checkpoint(tmp_path / "c.pt", {"model_config": model.config, "model_state": model.state_dict()})
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert (raw["format"], raw["version"]) == (FORMAT, VERSION)
    assert sorted(MIGRATIONS) == list(range(1, VERSION))  # one step from each older version


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_a_version1_checkpoint_loads_through_the_migration(tmp_path, preset):
    torch.manual_seed(0)
    trained = build("projection25d", 1, 1, preset=preset, **TINY)
    torch.save(_version1(trained, infer_directions=1), tmp_path / "old.pt")  # a subset of the views then
    payload = load_checkpoint(tmp_path / "old.pt")
    assert payload["version"] == VERSION
    options = payload["model_config"]["options"]
    assert not {"mode", "filter_init", "head_layers", "fine_lift", "infer_directions"} & set(options)
    assert payload["config"]["model"]["options"] == {"preset": "default"}  # what a resumed run compares with
    model = load_model(tmp_path / "old.pt")
    assert torch.equal(_output(model), _output(trained))  # the same network, now with every view
    assert torch.equal(model.inference_views(), model.all_views())


def test_options_added_later_take_the_values_they_had_then():
    """A version-1 config without ``slabs``, ``sum_input`` or a U-Net ``norm`` was trained on whole-ray MIPs
    without line sums and with batch norms, whatever today's preset says."""
    trained = build("projection25d", 1, 1, **{**TINY, "unet": {**TINY["unet"], "norm": "batch"}}, slabs=1, sum_input=False)
    trained.train()(X * 2 + 1)  # running statistics away from 0 and 1
    old = _version1(trained)
    for key in ("slabs", "sum_input"):
        del old["model_config"]["options"][key]
    del old["model_config"]["options"]["unet"]["norm"]
    model = load_model("old.pt", copy.deepcopy(old))
    kinds = {type(n).__name__ for n in model.unet.modules() if "Norm" in type(n).__name__}
    assert (model.slabs, model.sum_input, kinds) == (1, False, {"BatchNorm2d"})
    today = build("projection25d", 1, 1, **TINY)
    assert (today.slabs, today.sum_input) == (3, True)
    assert torch.equal(_output(model), _output(trained))
    assert "slabs" not in old["model_config"]["options"]  # the caller's payload is left as it was


@pytest.mark.parametrize("changes, match", [({"mode": "radon"}, "mode='radon'"), ({"fine_lift": True}, "fine_lift"),
                                            ({"head_layers": 2}, "head_layers")])
def test_a_checkpoint_of_a_removed_option_value_is_refused_in_one_line(tmp_path, changes, match):
    torch.save(_version1(build("projection25d", 1, 1, **TINY), **changes), tmp_path / "old.pt")
    with pytest.raises(InputError, match=match) as err:
        load_model(tmp_path / "old.pt")
    assert "old.pt" in str(err.value) and "\n" not in str(err.value)


def test_a_newer_checkpoint_is_refused(tmp_path):
    model = build("unet2d", 1, 1, depth=2, base_channels=4)
    torch.save({"format": FORMAT, "version": VERSION + 1, "model_config": model.config,
                "model_state": model.state_dict()}, tmp_path / "new.pt")
    with pytest.raises(InputError, match="newer seg25d"):
        load_checkpoint(tmp_path / "new.pt")


def test_other_models_pass_the_migration_unchanged(tmp_path):
    model = build("unet2d", 1, 1, depth=2, base_channels=4)
    torch.save({"format": FORMAT, "model_config": model.config, "model_state": model.state_dict()}, tmp_path / "u.pt")
    assert load_checkpoint(tmp_path / "u.pt")["model_config"] == model.config
    assert load_model(tmp_path / "u.pt").config == model.config
