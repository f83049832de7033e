"""Baseline: run on demand from the first tick to the end; never late, never cheap (an upper bound)."""

from sky_spot.strategies.strategy import Strategy
from sky_spot.utils import ClusterType


class OnDemandOnly(Strategy):
    NAME = "on_demand_only"

    def _step(self, last_cluster_type: ClusterType, has_spot: bool) -> ClusterType:
        if self.task_duration - sum(self.task_done_time) <= 1e-9:
            return ClusterType.NONE
        return ClusterType.ON_DEMAND
