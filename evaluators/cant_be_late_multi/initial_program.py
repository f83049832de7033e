"""Starting point for cant_be_late_multi: keep to a linear schedule, hop regions when ahead.

Compare the work done with a straight line from nothing at the start to the whole job at the
deadline. When behind it, run where you are: spot if the current region has it, on demand if
not. When ahead of it, use spot where it is available; where it is not, wait and move to the next
region, to try its spot at the next tick. The base class still forces on demand when the deadline
gets close.
"""

import logging
import typing

from sky_spot.strategies.multi_strategy import MultiRegionStrategy
from sky_spot.utils import ClusterType

logger = logging.getLogger(__name__)


class LinearScheduleStrategy(MultiRegionStrategy):
    NAME = "linear_schedule_region_hopping"

    def __init__(self, args):
        super().__init__(args)
        self.ready = False
        self.last_seen: typing.Dict[int, typing.Dict[str, typing.Any]] = {}

    def reset(self, env, task):
        super().reset(env, task)
        self.last_seen = {region: {"has_spot": None, "at": -1} for region in range(env.get_num_regions())}
        self.ready = True

    def _behind_schedule(self) -> bool:
        elapsed = self.env.elapsed_seconds
        if self.deadline <= elapsed:
            return True
        if elapsed == 0:
            return False
        done = self.task_duration - (self.task_duration - sum(self.task_done_time))
        return done < elapsed * (self.task_duration / self.deadline)

    def _step(self, last_cluster_type: ClusterType, has_spot: bool) -> ClusterType:
        if not self.ready or self.task_done:
            return ClusterType.NONE
        region = self.env.get_current_region()
        self.last_seen[region] = {"has_spot": has_spot, "at": self.env.elapsed_seconds}
        if has_spot:
            return ClusterType.SPOT
        if self._behind_schedule():
            return ClusterType.ON_DEMAND
        self.env.switch_region((region + 1) % self.env.get_num_regions())
        return ClusterType.NONE
