"""First fit: each model, in the given order, onto the lowest-numbered GPU it still fits on.

Ignores request rates entirely, so it packs the first GPUs full; a GPU filled to exactly 80 GB has
no room left for KV cache and a pressure of 1,000,000. (The reference's naive starting program.)
"""

GPU_MEM_SIZE = 80


def compute_model_placement(gpu_num, models):
    placement = {gpu: [] for gpu in range(gpu_num)}
    used = [0] * gpu_num
    for model in models:
        for gpu in range(gpu_num):
            if used[gpu] + model.model_size <= GPU_MEM_SIZE:
                placement[gpu].append(model)
                used[gpu] += model.model_size
                break
    return placement
