"""Look-ahead greedy plus local search (the best program the reference published, 25.72).

1. Models sorted by (req_rate / slo, size), largest first. Each goes to the GPU that makes the
   largest pressure over *all* GPUs smallest after placing it; near-ties (1e-9) go to the GPU that
   keeps more free memory.
2. Then, until nothing helps: move one model to another GPU, trying the most pressured GPUs' models
   first; failing that, swap two models between GPUs. The first change that lowers the largest
   pressure is kept.
"""

GPU_MEM_SIZE = 80
TIE = 1e-9


def _pressure(demand, free):
    return demand / free if free > 0 else float("inf")


def _worst(demand, free):
    return max(_pressure(d, f) for d, f in zip(demand, free))


def _greedy(gpu_num, models):
    placement = {gpu: [] for gpu in range(gpu_num)}
    free = [GPU_MEM_SIZE] * gpu_num
    demand = [0.0] * gpu_num
    for model in sorted(models, key=lambda m: (m.req_rate / m.slo, m.model_size), reverse=True):
        share = model.req_rate / model.slo
        choice, choice_worst, choice_free = None, float("inf"), -1.0
        for gpu in range(gpu_num):
            if model.model_size > free[gpu]:
                continue
            trial_demand, trial_free = list(demand), list(free)
            trial_demand[gpu] = demand[gpu] + share
            trial_free[gpu] = free[gpu] - model.model_size
            worst = _worst(trial_demand, trial_free)
            better = worst < choice_worst - TIE
            tie_with_more_room = abs(worst - choice_worst) <= TIE and trial_free[gpu] > choice_free
            if better or tie_with_more_room:
                choice, choice_worst, choice_free = gpu, worst, trial_free[gpu]
        if choice is None:
            raise ValueError(f"{model.model_name} ({model.model_size} GB) fits on no GPU")
        placement[choice].append(model)
        demand[choice] += share
        free[choice] -= model.model_size
    return placement, demand, free


def _improving_move(placement, demand, free, current):
    """The first single-model move that lowers the worst pressure, applied; False if there is none."""
    gpus = sorted(range(len(free)), key=lambda g: _pressure(demand[g], free[g]), reverse=True)
    for source in gpus:
        for model in list(placement[source]):
            share = model.req_rate / model.slo
            for target in range(len(free)):
                if target == source or model.model_size > free[target]:
                    continue
                new_demand, new_free = list(demand), list(free)
                new_demand[source] -= share
                new_free[source] += model.model_size
                new_demand[target] += share
                new_free[target] -= model.model_size
                if _worst(new_demand, new_free) < current:
                    placement[source].remove(model)
                    placement[target].append(model)
                    return new_demand, new_free
    return None


def _improving_swap(placement, demand, free, current):
    """The first swap of two models on different GPUs that lowers the worst pressure, applied."""
    count = len(free)
    for first in range(count):
        for second in range(first + 1, count):
            for a in placement[first]:
                share_a = a.req_rate / a.slo
                for b in placement[second]:
                    share_b = b.req_rate / b.slo
                    free_first = free[first] + a.model_size - b.model_size
                    free_second = free[second] + b.model_size - a.model_size
                    if free_first < 0 or free_second < 0:
                        continue
                    new_demand, new_free = list(demand), list(free)
                    new_demand[first] = new_demand[first] - share_a + share_b
                    new_demand[second] = new_demand[second] - share_b + share_a
                    new_free[first], new_free[second] = free_first, free_second
                    if _worst(new_demand, new_free) < current:
                        placement[first].remove(a)
                        placement[second].remove(b)
                        placement[first].append(b)
                        placement[second].append(a)
                        return new_demand, new_free
    return None


def compute_model_placement(gpu_num, models):
    placement, demand, free = _greedy(gpu_num, models)
    while True:
        current = _worst(demand, free)
        changed = _improving_move(placement, demand, free, current)
        if changed is None:
            changed = _improving_swap(placement, demand, free, current)
        if changed is None:
            return placement
        demand, free = changed
