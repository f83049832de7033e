"""Starting point for cant_be_late: greedy spot with tick-aligned safety lines.

Use spot whenever it is available and otherwise wait, until waiting would risk the deadline:

* once the remaining work plus one restart no longer fits in the whole ticks left, run on demand;
* once it no longer fits with two restarts, keep a spot instance that is running and productive,
  and otherwise run on demand.

Counts are in whole ticks (`env.gap_seconds`): a tick that only partly fits does not count, and
equality is treated as unsafe.
"""

import math

from sky_spot.strategies.strategy import Strategy
from sky_spot.utils import ClusterType


class GreedySafetyStrategy(Strategy):
    NAME = "greedy_safety"

    def _step(self, last_cluster_type: ClusterType, has_spot: bool) -> ClusterType:
        gap = self.env.gap_seconds
        work_left = self.task_duration - sum(self.task_done_time)
        if work_left <= 1e-9:
            return ClusterType.NONE

        ticks_left = max(0, math.floor((self.deadline - self.env.elapsed_seconds) / gap))
        ticks_with_one_restart = math.ceil((work_left + self.restart_overhead) / gap)
        ticks_with_two_restarts = math.ceil((work_left + 2 * self.restart_overhead) / gap)

        if ticks_with_one_restart >= ticks_left:
            return ClusterType.ON_DEMAND
        if ticks_with_two_restarts >= ticks_left:
            if self.env.cluster_type == ClusterType.SPOT and has_spot:
                return ClusterType.SPOT
            return ClusterType.ON_DEMAND
        return ClusterType.SPOT if has_spot else ClusterType.NONE

    @classmethod
    def _from_args(cls, parser):
        args, _ = parser.parse_known_args()
        return cls(args)
