"""Least outstanding requests (LOR): the replica with the fewest requests still waiting to start.

Only the pending queue counts -- requests that are already running are ignored -- so while no
replica has a backlog, every request ties and goes to the lowest replica id. Vidur ships this
policy as its `lor` global scheduler.
"""


class CustomGlobalScheduler(BaseGlobalScheduler):
    """Fewest pending (not yet started) requests wins; ties go to the lowest replica id."""

    def schedule(self) -> List[Tuple[int, Request]]:
        self.sort_requests()
        outstanding = {
            replica_id: replica.num_pending_requests for replica_id, replica in self._replica_schedulers.items()
        }
        assignments = []
        while self._request_queue:
            request = self._request_queue.pop(0)
            replica_id = min(outstanding, key=outstanding.get)
            outstanding[replica_id] += 1
            assignments.append((replica_id, request))
        return assignments
