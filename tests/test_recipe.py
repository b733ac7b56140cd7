"""Recipe loading: validation messages, extends, overrides, defaults, building."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw.errors import RecipeError
from fw.recipe import apply_overrides, build, load_recipe, result_settings, settings_digest


def _load(path: Path, registry, *overrides: str):
    return load_recipe(path, overrides, registry)


def test_defaults_are_filled_in(toy_recipe, registry):
    recipe = _load(toy_recipe, registry)
    assert recipe.raw["learner"]["q"] == {"name": "toy_gaussian", "sigma": 1.0}
    assert recipe.raw["trainer"]["accelerator"] == "cpu"
    assert recipe.trainer.max_steps == 20


def test_resolved_recipe_round_trips(toy_recipe, registry, tmp_path):
    recipe = _load(toy_recipe, registry)
    again = tmp_path / "again.yaml"
    again.write_text(recipe.to_yaml())
    assert _load(again, registry).raw == recipe.raw


def test_unknown_name_points_at_key_and_line(toy_recipe, registry):
    with pytest.raises(RecipeError) as info:
        _load(toy_recipe, registry, "learner.q.name=toy_gausian")
    msg = str(info.value)
    assert "learner.q.name" in msg and "Did you mean 'toy_gaussian'" in msg
    assert f"{toy_recipe}:6" in msg


def test_unknown_parameter_lists_allowed(toy_recipe, registry):
    with pytest.raises(RecipeError, match=r"learner.q.temperature: unknown parameter .*sigma"):
        _load(toy_recipe, registry, "learner.q.temperature=0.5")


def test_wrong_type_is_reported(toy_recipe, registry):
    with pytest.raises(RecipeError, match=r"learner.p.sigma: expected float, got 'wide' \(str\)"):
        _load(toy_recipe, registry, "learner.p.sigma=wide")
    with pytest.raises(RecipeError, match="trainer.max_steps: expected int"):
        _load(toy_recipe, registry, "trainer.max_steps=1.5")


def test_unknown_top_level_key(toy_recipe, registry):
    with pytest.raises(RecipeError, match="unknown top-level key. Did you mean 'trainer'"):
        _load(toy_recipe, registry, "trainr.max_steps=3")


def test_missing_required_value(tmp_path, registry):
    path = tmp_path / "r.yaml"
    path.write_text("data: {name: digits}\nlearner: {name: icon, q: toy_gaussian}\n")
    with pytest.raises(RecipeError, match="learner.p: learner 'icon' .* needs a value for 'p'"):
        _load(path, registry)


def test_missing_file_and_bad_yaml(tmp_path, registry):
    with pytest.raises(RecipeError, match="not found"):
        _load(tmp_path / "nope.yaml", registry)
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        _load(bad, registry)


def test_extends_merges_and_renamed_components_start_clean(toy_recipe, registry, tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(
        f"extends: {toy_recipe.name}\ntrainer: {{max_steps: 7}}\n"
        "learner: {mapper: {name: linear, dim: 3}}\n"
    )
    recipe = _load(child, registry)
    assert recipe.trainer.max_steps == 7
    assert recipe.trainer.log_every == 5  # kept from the parent
    assert recipe.raw["learner"]["mapper"] == {
        "name": "linear",
        "dim": 3,
        "in_dim": None,
        "bias": True,
    }


def test_extends_cycle_is_reported(tmp_path, registry):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        _load(tmp_path / "a.yaml", registry)


def test_override_syntax_errors():
    with pytest.raises(RecipeError, match="key.path=value"):
        apply_overrides({}, ["trainer.max_steps"])
    with pytest.raises(RecipeError, match="is a value, not a mapping"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_build_makes_nested_components(toy_recipe, registry):
    recipe = _load(toy_recipe, registry)
    learner = build("learner", recipe.raw["learner"], registry)
    assert type(learner.p).__name__ == "ToyGaussian"
    assert learner._fw_spec["name"] == "icon"


def test_result_settings_keep_only_what_can_change_results(toy_recipe, registry):
    raw = load_recipe(toy_recipe, registry=registry).raw
    kept = result_settings(raw)
    assert "description" not in kept
    assert {"progress", "threads", "log_every", "reuse_memory"}.isdisjoint(kept["trainer"])
    assert kept["trainer"]["max_steps"] == raw["trainer"]["max_steps"]

    def leaves(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, f"{path}.{k}" if path else k)
        else:
            yield path, node

    kept_leaves = dict(leaves(kept))
    assert None not in kept_leaves.values()
    for path, value in leaves(raw["learner"], "learner"):  # every non-null setting stays
        assert kept_leaves.get(path) == value if value is not None else path not in kept_leaves
    assert "data" not in result_settings(raw, also_ignore=["data"])


def test_settings_digest_ignores_no_effect_settings_and_new_null_parameters(toy_recipe, registry):
    base = load_recipe(toy_recipe, registry=registry).raw
    digest = settings_digest(base)
    quiet = load_recipe(
        toy_recipe,
        ["trainer.progress=false", "trainer.threads=1", "trainer.log_every=3", "description=x"],
        registry,
    ).raw
    assert settings_digest(quiet) == digest
    added = {**base, "learner": {**base["learner"], "a_new_parameter": None}}
    assert settings_digest(added) == digest
    changed = load_recipe(toy_recipe, ["seed=12345"], registry).raw
    assert settings_digest(changed) != digest
    longer = load_recipe(
        toy_recipe, [f"trainer.max_steps={base['trainer']['max_steps'] + 1}"], registry
    )
    assert settings_digest(longer.raw) != digest


def test_resolved_recipe_keeps_non_ascii_text(toy_recipe, registry):
    recipe = load_recipe(toy_recipe, ["description=N × 2 ≈ 2N"], registry)
    text = recipe.to_yaml()
    assert "N × 2 ≈ 2N" in text and "\\x" not in text
