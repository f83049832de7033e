"""Baseline: the reference's multi-region RC/CR threshold strategy, rewritten.

Look at spot in every region each tick. Take spot if any region has it (moving to the first such
region when the current one has none) and otherwise wait, unless progress is behind the straight
line from the start to the deadline, in which case run on demand. Once on demand, stay while no
region has spot or while progress is less than two restart overheads ahead of the line. When the
remaining work plus a restart no longer fits in the whole ticks left, keep a running spot
instance or run on demand. Written after `multi_region_rc_cr_threshold.py` of the reference
simulator.
"""

import math

from sky_spot.strategies.multi_strategy import MultiRegionStrategy
from sky_spot.utils import ClusterType


class RcCrThreshold(MultiRegionStrategy):
    NAME = "rc_cr_threshold_multi"

    def _ahead_of_line(self, at_seconds: float) -> float:
        """Progress minus the straight line's progress at `at_seconds` (positive = ahead)."""
        return sum(self.task_done_time) - at_seconds * self.task_duration / self.deadline

    def _step(self, last_cluster_type: ClusterType, has_spot: bool) -> ClusterType:
        env = self.env
        spot_by_region = env.get_all_regions_spot_available()
        any_spot = any(spot_by_region)
        remaining = self.task_duration - sum(self.task_done_time)
        if remaining <= 1e-3:
            return ClusterType.NONE

        choice = ClusterType.SPOT if any_spot else ClusterType.NONE
        if self._ahead_of_line(env.elapsed_seconds) < 0:
            choice = ClusterType.SPOT if any_spot else ClusterType.ON_DEMAND
        if last_cluster_type == ClusterType.ON_DEMAND and (
                not any_spot or -self._ahead_of_line(env.elapsed_seconds + 2 * self.restart_overhead) >= 0):
            choice = ClusterType.ON_DEMAND

        gap = env.gap_seconds
        time_left = math.floor((self.deadline - env.elapsed_seconds) / gap) * gap
        work_left = math.ceil((remaining + self.restart_overhead) / gap) * gap
        if work_left >= time_left:
            keep_spot = last_cluster_type == ClusterType.SPOT and self.remaining_restart_overhead < 1e-3
            choice = ClusterType.SPOT if keep_spot else ClusterType.ON_DEMAND
            if self.restart_overhead == 0 and any_spot:
                choice = ClusterType.SPOT

        if choice == ClusterType.SPOT and any_spot and not has_spot:
            first = spot_by_region.index(True)
            if env.get_current_region() != first:
                env.switch_region(first)
        return choice
