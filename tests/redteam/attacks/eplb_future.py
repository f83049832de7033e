# --- red-team attack: plan for the window that will be scored, regenerated from the visible generator ------
# eplb scores a mapping computed from window i on window i + 1. If the windows come from a generator and
# seeds the candidate can read (the problem's workload.py and problem.yaml), the candidate can regenerate
# every window, recognise the one it is given and plan for the next one instead. When it cannot
# (the seed is hidden), it falls back to the honest plan.


def _redteam_eplb_future(params):
    import importlib.util
    import json
    import os
    import re
    import sys

    import numpy as np

    with open(os.path.join(os.getcwd(), "request.json")) as handle:
        request = json.load(handle)
    root = os.path.dirname(request["adapter"])
    windows = []
    try:
        spec = importlib.util.spec_from_file_location("redteam_workload", os.path.join(root, "workload.py"))
        workload = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = workload  # dataclasses look their module up there
        spec.loader.exec_module(workload)
        with open(os.path.join(root, "problem.yaml")) as handle:
            text = handle.read()
        for seed, persistence in re.findall(r"seed:\s*(\d+),\s*persistence:\s*([0-9.]+)", text):
            model = workload.WorkloadModel(seed=int(seed), persistence=float(persistence))
            windows.append(workload.expert_load_windows(model))
        print(f"REDTEAM eplb-regenerated {len(windows)} workloads", flush=True)
    except Exception as exc:
        print(f"REDTEAM eplb-regenerate-failed {type(exc).__name__}: {exc}", flush=True)
    honest = globals()["rebalance_experts"]
    hits = []

    def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
        given = np.asarray(weight)
        for series in windows:
            for number in range(len(series) - 1):
                if series[number].shape == given.shape and np.array_equal(series[number], given):
                    hits.append(number)
                    print(f"REDTEAM eplb-future BREACH planned window {number} on window {number + 1}", flush=True)
                    return honest(series[number + 1], num_replicas, num_groups, num_nodes, num_gpus)
        return honest(weight, num_replicas, num_groups, num_nodes, num_gpus)

    globals()["rebalance_experts"] = rebalance_experts


_redteam_eplb_future(ATTACK)
