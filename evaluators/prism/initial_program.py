"""Greedy placement: hottest models first, each onto the GPU whose KV-cache pressure is lowest now.

`models` is a list of `Model` objects (fields `model_name`, `model_size` in GB, `req_rate`, `slo`,
`cur_gpu_id`); return a dict mapping every GPU id in `range(gpu_num)` to the list of models it holds.
"""

GPU_MEM_SIZE = 80  # GB per GPU


def compute_model_placement(gpu_num, models):
    placement = {gpu: [] for gpu in range(gpu_num)}
    free_memory = [GPU_MEM_SIZE] * gpu_num  # GB not taken by model weights
    demand = [0.0] * gpu_num  # sum of req_rate / slo of the models on the GPU

    # Models with the highest request rate per unit of SLO are the hardest to place: go first.
    for model in sorted(models, key=lambda m: m.req_rate / m.slo, reverse=True):
        target = None
        lowest_pressure = float("inf")
        for gpu in range(gpu_num):
            if free_memory[gpu] <= 0 or model.model_size > free_memory[gpu]:
                continue
            pressure = demand[gpu] / free_memory[gpu]
            if pressure < lowest_pressure:
                lowest_pressure, target = pressure, gpu
        if target is None:
            raise ValueError(f"{model.model_name} ({model.model_size} GB) fits on no GPU; free memory: {free_memory}")
        placement[target].append(model)
        free_memory[target] -= model.model_size
        demand[target] += model.req_rate / model.slo
    return placement
