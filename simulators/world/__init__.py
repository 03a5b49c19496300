"""A simulated grid with ground truth: see docs/world.md."""

from simulators.world.spec import STEP, Fault, WorldSpec
from simulators.world.world import World, build_world

__all__ = ["STEP", "Fault", "World", "WorldSpec", "build_world"]
