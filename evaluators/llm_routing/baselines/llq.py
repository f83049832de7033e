"""Least loaded queue (LLQ), the same as the initial program.

Every waiting request goes to the replica with the fewest requests on it, counting both those
still waiting there (pending) and those running (active). Requests routed in the same call count
towards their replica, so a burst is spread out. Ties go to the lowest replica id.
"""


class CustomGlobalScheduler(BaseGlobalScheduler):
    """Least loaded queue: fewest pending + active requests wins."""

    def schedule(self) -> List[Tuple[int, Request]]:
        self.sort_requests()
        load = {
            replica_id: replica.num_pending_requests + replica.num_active_requests
            for replica_id, replica in self._replica_schedulers.items()
        }
        assignments = []
        while self._request_queue:
            request = self._request_queue.pop(0)
            replica_id = min(load, key=load.get)
            load[replica_id] += 1
            assignments.append((replica_id, request))
        return assignments
