"""What /lora train takes from users before any picture is read: the upload's name and size,
the options typed, and the server's training rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.guild import Actor, GuildSettings, policy_changes
from bot.training import Trainee, TrainingAsk, check_training_upload, may_train
from pipeline.errors import UserError

MIB = 1024**2


@given(st.text(max_size=300), st.integers(min_value=0, max_value=2**40))
def test_any_upload_is_taken_or_refused_in_one_line(filename: str, size: int) -> None:
    try:
        check_training_upload(filename, size, 200 * MIB)
    except UserError as error:
        assert "\n" not in str(error) and "\r" not in str(error)
    else:
        assert filename.lower().endswith(".zip") and size <= 200 * MIB


def test_an_upload_that_is_not_a_zip_or_too_large_is_refused() -> None:
    with pytest.raises(UserError, match=r"pics\.rar is not a \.zip"):
        check_training_upload("pics.rar", 10, 200 * MIB)
    with pytest.raises(UserError, match=r"the zip is 201\.0 MiB, more than the 200\.0 MiB"):
        check_training_upload("pics.ZIP", 201 * MIB, 200 * MIB)
    check_training_upload("pics.ZIP", 200 * MIB, 200 * MIB)


@given(
    name=st.text(max_size=80),
    trigger=st.none() | st.text(max_size=120),
    preset=st.sampled_from(["character", "style", "concept", "portrait"]),
    steps=st.none() | st.integers(-5, 60_000),
    rank=st.none() | st.integers(-5, 300),
    resolution=st.none() | st.integers(0, 2048),
)
def test_any_options_become_checked_options_or_a_user_error(
    name: str, trigger: str | None, preset: str, steps, rank, resolution
) -> None:
    ask = TrainingAsk(name, trigger, preset, steps, rank, resolution)
    try:
        options = ask.options(checkpoint_every=100)
    except UserError:
        return
    assert options.name == name and options.checkpoint_every == 100
    if rank is not None:
        assert (options.rank, options.alpha) == (rank, rank / 2)


def test_admins_and_allowed_roles_may_train() -> None:
    policy = GuildSettings(training_roles=(77,))
    actor = Actor(1, 2)
    assert may_train(policy, Trainee(actor, is_admin=True))
    assert may_train(policy, Trainee(actor, is_admin=False, role_ids=(5, 77)))
    assert not may_train(policy, Trainee(actor, is_admin=False, role_ids=(5,)))
    assert not may_train(GuildSettings(), Trainee(actor, is_admin=False, role_ids=(77,)))


def test_policy_sets_the_switch_roles_and_step_cap_and_they_round_trip() -> None:
    current = GuildSettings(training_roles=(1,))
    changes = policy_changes(
        current,
        training="paused",
        add_training_role=2,
        remove_training_role=1,
        training_max_steps=500,
        max_pixels_limit=1024 * 1024,
        training_steps_limit=3000,
    )
    assert changes == {"training": "paused", "training_roles": (2,), "training_max_steps": 500}
    updated = GuildSettings(**changes)
    stored = {name: updated.stored(name) for name in changes}
    assert GuildSettings.from_stored(stored) == updated
    on = policy_changes(updated, training="on", max_pixels_limit=1024 * 1024)
    assert on == {"training": None}  # on is the default: nothing stored


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"training": "off"}, "choose on or paused"),
        ({"training_max_steps": 3001}, "use 1 to 3000"),
    ],
)
def test_policy_refuses_a_bad_training_rule(options, message: str) -> None:
    with pytest.raises(UserError, match=message):
        policy_changes(
            GuildSettings(), max_pixels_limit=1024 * 1024, training_steps_limit=3000, **options
        )
