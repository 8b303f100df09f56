"""Old A1111 infotexts name the hypernetwork in fields; reading one gives today's prompt tag."""

from __future__ import annotations

from pipeline.limits import Limits
from pipeline.recipe import read_recipe

OLD = (
    "a castle\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 81761151, "
    "Hypernet: anime, Hypernet hash: 0a1b2c3d, Hypernet strength: 0.7"
)


def test_an_old_hypernet_field_becomes_the_tag_a1111s_paste_makes() -> None:
    recipe = read_recipe(OLD, Limits())
    assert (recipe.prompt, recipe.negative) == ("a castle<hypernet:anime:0.7>", "blurry")
    assert not any("Hypernet" in note for note in recipe.notes)


def test_a_missing_strength_is_one_and_a_tag_already_there_is_not_doubled() -> None:
    recipe = read_recipe(OLD.replace(", Hypernet strength: 0.7", ""), Limits())
    assert recipe.prompt == "a castle<hypernet:anime:1>"
    tagged = OLD.replace("a castle", "a castle <hypernet:anime:0.7>")
    assert read_recipe(tagged, Limits()).prompt == "a castle <hypernet:anime:0.7>"
