"""Baseline: Uniform Progress, the policy of the Can't Be Late paper (NSDI '24).

Keep progress at or above the straight line from no work at the start to the whole job at the
deadline. Spot is taken whenever it is available. Below the line and without spot, run on
demand; once on demand, stay until progress is two restart overheads ahead of the line
(hysteresis). When the remaining work plus a restart no longer fits in the whole ticks left, run
on demand. Written after the reference's `referenced_up.py`.
"""

import math

from sky_spot.strategies.strategy import Strategy
from sky_spot.utils import ClusterType


class UniformProgress(Strategy):
    NAME = "uniform_progress"

    def _done(self) -> float:
        return sum(self.task_done_time)

    def _behind_line(self, at_seconds: float) -> float:
        """How far progress is behind the line at time `at_seconds` (positive = behind)."""
        return at_seconds * self.task_duration / self.deadline - self._done()

    def _step(self, last_cluster_type: ClusterType, has_spot: bool) -> ClusterType:
        env = self.env
        remaining = self.task_duration - self._done()
        if remaining <= 1e-3:
            return ClusterType.NONE

        choice = ClusterType.SPOT if has_spot else ClusterType.NONE
        if self._behind_line(env.elapsed_seconds) > 0:
            choice = ClusterType.SPOT if has_spot else ClusterType.ON_DEMAND
        if env.cluster_type == ClusterType.ON_DEMAND and \
                self._behind_line(env.elapsed_seconds + 2 * self.restart_overhead) >= 0:
            choice = ClusterType.ON_DEMAND

        ticks_needed = math.ceil((remaining + self.restart_overhead) / env.gap_seconds)
        ticks_left = math.floor((self.deadline - env.elapsed_seconds) / env.gap_seconds)
        if ticks_needed >= ticks_left:
            return ClusterType.ON_DEMAND
        return ClusterType.SPOT if has_spot else choice
