"""Task names, suites and language instructions (no MuJoCo needed except for the name check)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.extras import require
from vlaforge.envs.instructions import (
    HELDOUT_REPHRASINGS,
    INSTRUCTIONS,
    heldout_instruction,
    instruction_for_seed,
    instructions_for,
)
from vlaforge.envs.tasks import MT10, MT50, canonical_task, resolve_tasks

REPO = Path(__file__).resolve().parents[2]


def test_task_lists_match_metaworld():
    env_dict = require("metaworld.env_dict", "sim")
    from metaworld.policies import ENV_POLICY_MAP

    assert list(MT50) == list(env_dict.ALL_V3_ENVIRONMENTS)
    assert list(MT10) == list(env_dict.MT10_V3)
    assert set(MT50) == set(ENV_POLICY_MAP)  # every task has a scripted expert


def test_resolve_suites_names_and_suffixes():
    assert resolve_tasks("mt10") == list(MT10)
    assert len(resolve_tasks("MT50")) == 50
    assert resolve_tasks("reach-v3,push") == ["reach-v3", "push-v3"]
    assert resolve_tasks("reach") == ["reach-v3"]
    assert resolve_tasks(["drawer_open", " pick-place-v3 "]) == ["drawer-open-v3", "pick-place-v3"]
    assert resolve_tasks("reach,reach-v3,mt10")[:2] == [
        "reach-v3",
        "push-v3",
    ]  # duplicates dropped, order kept
    assert canonical_task("window-close") == "window-close-v3"


@pytest.mark.parametrize("bad", ["reach-v2", "pick", "mt11", "reach,nope"])
def test_resolve_unknown_lists_valid_names(bad):
    with pytest.raises(ValueError, match="unknown Meta-World task") as err:
        resolve_tasks(bad)
    assert "drawer-open" in str(err.value) and "mt10" in str(err.value)


def test_resolve_empty():
    with pytest.raises(ValueError, match="no task given"):
        resolve_tasks(" , ")


def test_every_task_has_clean_instructions():
    assert set(INSTRUCTIONS) == set(MT50)
    for task in MT50:
        phrasings = instructions_for(task)
        assert len(phrasings) >= 2, task
        assert len(set(phrasings)) == len(phrasings), task
        for text in phrasings:
            assert text == text.strip() and text and text[0].islower() and not text.endswith("."), (
                task,
                text,
            )
    assert instructions_for("drawer-open") == instructions_for("drawer-open-v3")


def test_instruction_choice_is_deterministic_and_varied():
    picks = [instruction_for_seed("drawer-open", s) for s in range(60)]
    assert picks == [instruction_for_seed("drawer-open-v3", s) for s in range(60)]
    assert set(picks) == set(instructions_for("drawer-open"))  # every phrasing gets used
    # The phrasing is not a function of the configuration (seed % 50).
    assert any(picks[s] != picks[s + 50] for s in range(10))


def test_heldout_rephrasings_are_unseen():
    training = {text for phrasings in INSTRUCTIONS.values() for text in phrasings}
    assert set(HELDOUT_REPHRASINGS) == set(MT10)
    for task, text in HELDOUT_REPHRASINGS.items():
        assert text not in training, task
        assert text not in instructions_for(task)
    assert heldout_instruction("reach") == HELDOUT_REPHRASINGS["reach-v3"]
    with pytest.raises(KeyError, match="MT10 only"):
        heldout_instruction("soccer")


def test_benchmark_file_matches_heldout_set():
    path = REPO / "benchmarks" / "instructions_rephrased_mt10.json"
    assert json.loads(path.read_text()) == HELDOUT_REPHRASINGS
