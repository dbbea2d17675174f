"""Meta-World evaluation protocols: ours (the default) and LeRobot's, the one the VLA papers report.

A protocol fixes what a score means: which camera the policy sees, how each episode's layout follows
from its seed, the language instruction, the episodes per task and the first seed. `vlaforge eval
--protocol lerobot` and `vlaforge record --protocol lerobot` read it from here, so a policy trained
on the recording sees, at evaluation, the same camera, state and instruction (docs/metaworld.md
compares it with LeRobot's code point by point).

- ``vlaforge``: layout `seed % 50` of a frozen train or eval list (disjoint, `configs.py`), cameras
  corner + gripper, 2-3 phrasings per task chosen from the seed, 20 episodes, seeds 0...
- ``lerobot``: as `lerobot-eval --env.type=metaworld` (src/lerobot/envs/metaworld.py): one env per task
  set to `MT1(task, seed=42).train_tasks[0]`, then unfrozen (`_freeze_rand_vec = False`,
  `seeded_rand_vec = True`), so `env.seed(s); env.reset()` draws the object and goal positions from
  seed s alone; one camera, `corner2` moved to (0.75, 0.075, 0.7) (our `corner2`), 480x480; the
  instruction is LeRobot's fixed task description; 10 episodes per task on seeds 1000, 1001, ...
  (`--eval.n_episodes=10`, `EvalPipelineConfig.seed = 1000`); 500 steps; success = success at any step.

This module imports neither MuJoCo nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlaforge.envs.tasks import MT50, canonical_task

# LeRobot's task descriptions (src/lerobot/envs/metaworld_config.json "TASK_DESCRIPTIONS"; they follow
# the Meta-World paper's task list): the instruction its policies receive, one per task.
LEROBOT_INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "Pick up a nut and place it onto a peg",
    "basketball-v3": "Dunk the basketball into the basket",
    "bin-picking-v3": "Grasp the puck from one bin and place it into another bin",
    "box-close-v3": "Grasp the cover and close the box with it",
    "button-press-topdown-v3": "Press a button from the top",
    "button-press-topdown-wall-v3": "Bypass a wall and press a button from the top",
    "button-press-v3": "Press a button",
    "button-press-wall-v3": "Bypass a wall and press a button",
    "coffee-button-v3": "Push a button on the coffee machine",
    "coffee-pull-v3": "Pull a mug from a coffee machine",
    "coffee-push-v3": "Push a mug under a coffee machine",
    "dial-turn-v3": "Rotate a dial 180 degrees",
    "disassemble-v3": "Pick a nut out of a peg",
    "door-close-v3": "Close a door with a revolving joint",
    "door-lock-v3": "Lock the door by rotating the lock clockwise",
    "door-open-v3": "Open a door with a revolving joint",
    "door-unlock-v3": "Unlock the door by rotating the lock counter-clockwise",
    "hand-insert-v3": "Insert the gripper into a hole",
    "drawer-close-v3": "Push and close a drawer",
    "drawer-open-v3": "Open a drawer",
    "faucet-open-v3": "Rotate the faucet counter-clockwise",
    "faucet-close-v3": "Rotate the faucet clockwise",
    "hammer-v3": "Hammer a screw on the wall",
    "handle-press-side-v3": "Press a handle down sideways",
    "handle-press-v3": "Press a handle down",
    "handle-pull-side-v3": "Pull a handle up sideways",
    "handle-pull-v3": "Pull a handle up",
    "lever-pull-v3": "Pull a lever down 90 degrees",
    "peg-insert-side-v3": "Insert a peg sideways",
    "pick-place-wall-v3": "Pick a puck, bypass a wall and place the puck",
    "pick-out-of-hole-v3": "Pick up a puck from a hole",
    "reach-v3": "Reach a goal position",
    "push-back-v3": "Push the puck to a goal",
    "push-v3": "Push the puck to a goal",
    "pick-place-v3": "Pick and place a puck to a goal",
    "plate-slide-v3": "Slide a plate into a cabinet",
    "plate-slide-side-v3": "Slide a plate into a cabinet sideways",
    "plate-slide-back-v3": "Get a plate from the cabinet",
    "plate-slide-back-side-v3": "Get a plate from the cabinet sideways",
    "peg-unplug-side-v3": "Unplug a peg sideways",
    "soccer-v3": "Kick a soccer into the goal",
    "stick-push-v3": "Grasp a stick and push a box using the stick",
    "stick-pull-v3": "Grasp a stick and pull a box with the stick",
    "push-wall-v3": "Bypass a wall and push a puck to a goal",
    "reach-wall-v3": "Bypass a wall and reach a goal",
    "shelf-place-v3": "Pick and place a puck onto a shelf",
    "sweep-into-v3": "Sweep a puck into a hole",
    "sweep-v3": "Sweep a puck off the table",
    "window-open-v3": "Push and open a window",
    "window-close-v3": "Push and close a window",
}
assert set(LEROBOT_INSTRUCTIONS) == set(MT50)

LEROBOT_MT1_SEED = 42  # metaworld.MT1(task, seed=42): the task whose non-layout settings the env keeps
LEROBOT_SEED0 = 1000  # lerobot EvalPipelineConfig.seed: episode k of every task resets with seed 1000 + k
LEROBOT_EVAL_SEEDS = range(LEROBOT_SEED0, LEROBOT_SEED0 + 50)  # EvalConfig.n_episodes default 50
LEROBOT_VALIDATION_SEED0 = 2000  # ours: in-training evaluation, clear of the test seeds and of recordings


@dataclass(frozen=True)
class Protocol:
    """How a Meta-World evaluation is run; `vlaforge eval` and `vlaforge record` take their defaults here.

    cameras: the cameras the env offers (a policy must read exactly these under a fixed-camera protocol;
    None = any of `render.CAMERAS`). image_size: the size the protocol's observations have (a policy
    may read them smaller: the env then renders at the policy's size). episodes / seed0: episodes
    per task and the first seed of an evaluation. validation_seed0: the first seed of in-training
    evaluations (`vlaforge train --eval-protocol`; LeRobot's: apart from its test seeds). fixed_cameras: refuse policies reading other cameras.
    splits: whether train / eval layout lists exist (ours) or the seed alone draws the layout (LeRobot).
    """

    name: str
    cameras: tuple[str, ...]
    image_size: tuple[int, int]
    episodes: int
    seed0: int
    validation_seed0: int
    fixed_cameras: bool
    splits: bool
    description: str

    def instruction(self, task: str) -> str | None:
        """The protocol's fixed instruction of `task`, or None when the env picks a phrasing per seed."""
        return LEROBOT_INSTRUCTIONS[canonical_task(task)] if self.name == "lerobot" else None

    def check_cameras(self, cameras: tuple[str, ...] | list[str]) -> None:
        """Raise ValueError, in one line, when a policy's cameras are not the ones this protocol offers."""
        if self.fixed_cameras and tuple(cameras) != self.cameras:
            raise ValueError(
                f"protocol '{self.name}' observes camera {', '.join(self.cameras)} only; the policy reads "
                f"{', '.join(cameras) or 'no camera'}: train on a recording made with "
                f"`vlaforge record --protocol {self.name}`"
            )


PROTOCOLS: dict[str, Protocol] = {
    "vlaforge": Protocol(
        name="vlaforge",
        cameras=("corner", "gripper"),
        image_size=(128, 128),
        episodes=20,
        seed0=0,
        validation_seed0=0,  # in-training evaluation on the eval split, as before protocols existed
        fixed_cameras=False,
        splits=True,
        description="vlaforge's own: disjoint train/eval layout lists, two cameras, 2-3 phrasings per task",
    ),
    "lerobot": Protocol(
        name="lerobot",
        cameras=("corner2",),
        image_size=(480, 480),
        episodes=10,
        seed0=LEROBOT_SEED0,
        validation_seed0=LEROBOT_VALIDATION_SEED0,
        fixed_cameras=True,
        splits=False,
        description="LeRobot's lerobot-eval --env.type=metaworld (the SmolVLA / pi0 / Evo-1 MT50 numbers)",
    ),
}
DEFAULT_PROTOCOL = "vlaforge"


def get_protocol(name: str | Protocol) -> Protocol:
    """The protocol called `name`; ValueError naming the choices for an unknown one."""
    if isinstance(name, Protocol):
        return name
    key = str(name).strip().lower()
    if key not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{name}'; choose one of: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[key]
