"""Round robin: replicas take turns, one request each, whatever their state."""


class CustomGlobalScheduler(BaseGlobalScheduler):
    """Replica `k mod n` gets the k-th request."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._next = 0

    def schedule(self) -> List[Tuple[int, Request]]:
        self.sort_requests()
        assignments = []
        while self._request_queue:
            request = self._request_queue.pop(0)
            assignments.append((self._next % self._num_replicas, request))
            self._next += 1
        return assignments
