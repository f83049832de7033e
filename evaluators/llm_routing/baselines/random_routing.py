"""Random routing: each request goes to a replica drawn uniformly at random.

The draws come from a generator with a fixed seed, so an evaluation is repeatable.
"""

import random


class CustomGlobalScheduler(BaseGlobalScheduler):
    """Uniformly random replica per request (seeded)."""

    SEED = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rng = random.Random(self.SEED)

    def schedule(self) -> List[Tuple[int, Request]]:
        self.sort_requests()
        assignments = []
        while self._request_queue:
            request = self._request_queue.pop(0)
            assignments.append((self._rng.randrange(self._num_replicas), request))
        return assignments
