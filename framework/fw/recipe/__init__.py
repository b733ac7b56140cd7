"""YAML recipes -> typed, validated configuration -> built components."""

from fw.recipe.build import build, check_component, load_recipe, recipe_from_dict
from fw.recipe.checker import RecipeChecker, factory_params
from fw.recipe.files import apply_overrides, parse_override, read_recipe_file
from fw.recipe.schema import (
    DEFAULT_STEPS,
    NO_EFFECT,
    LoggerConfig,
    Recipe,
    TrainerConfig,
    dump_yaml,
    result_settings,
    settings_digest,
)

__all__ = [
    "DEFAULT_STEPS",
    "NO_EFFECT",
    "LoggerConfig",
    "Recipe",
    "RecipeChecker",
    "TrainerConfig",
    "apply_overrides",
    "build",
    "check_component",
    "dump_yaml",
    "factory_params",
    "load_recipe",
    "parse_override",
    "read_recipe_file",
    "recipe_from_dict",
    "result_settings",
    "settings_digest",
]
