"""The fixed evaluation cases of telemetry_repair, rebuilt exactly as the reference draws them.

The reference evaluator (mit-nms/Engram, `SystemBench/ADRS/telemetry_repair`, its CSV path) seeds
Python's `random` with 42, samples 30 rows of `evaluation_data.csv`, turns each row into one
record per router interface, and then perturbs every row again: 2 % noise on every counter plus
one bug type per row (dropped or scaled counters, independently per interface or for whole
routers). We draw the same numbers in the same order from a private `random.Random(42)`, so the
cases do not depend on what a candidate does with the global random generator -- in the
reference a candidate that reseeded `random` changed the cases of every later row.

Each case holds the perturbed telemetry the candidate sees, the ground truth it is scored
against, and the router -> interfaces map. The reference also left the ground truth inside the
records of interfaces hit by a router-wide bug (`_ground_truth_rx`/`_tx`); ours never sends it.
"""

from __future__ import annotations

import ast
import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 42
SAMPLED_ROWS = 30
BUG_TYPES = ["dropped", "scaled", "correlated_dropped", "correlated_scaled"]
COUNTER_PREFIX = "low_"


@dataclass(frozen=True)
class Case:
    row_label: str
    bug_type: str
    telemetry: dict[str, dict[str, Any]]
    topology: dict[str, list[str]]
    ground_truth: dict[str, dict[str, Any]]


def load_cases(csv_path: Path) -> list[Case]:
    """The 30 cases, in the reference's order."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(SEED)
    sampled = rng.sample(rows, min(SAMPLED_ROWS, len(rows)))
    cases = []
    for row in sampled:
        interfaces = _interfaces_of(row)
        if not interfaces:
            continue
        topology: dict[str, list[str]] = {}
        for interface_id, record in interfaces.items():
            topology.setdefault(record["local_router"], []).append(interface_id)
        telemetry, truth, bug_type = _perturb(interfaces, topology, rng)
        cases.append(Case(row_label=row.get("", ""), bug_type=bug_type, telemetry=telemetry,
                          topology=topology, ground_truth=truth))
    return cases


def _interfaces_of(row: dict[str, str]) -> dict[str, dict[str, Any]]:
    """One record per interface `A_to_B`: tx from A's egress-to-B counter, rx from A's ingress-from-B
    counter (the reference's reading of the columns), each with its ground truth kept aside."""
    interfaces: dict[str, dict[str, Any]] = {}
    for column, text in row.items():
        if not column or not column.startswith(COUNTER_PREFIX):
            continue
        for marker, rate in (("_egress_to_", "tx"), ("_ingress_from_", "rx")):
            if marker not in column:
                continue
            parts = column[len(COUNTER_PREFIX):].split(marker)
            if len(parts) != 2:
                continue
            try:
                counter = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                continue
            if not isinstance(counter, dict) or "ground_truth" not in counter:
                continue
            local, remote = parts
            record = interfaces.setdefault(f"{local}_to_{remote}", {
                "interface_status": "up", "rx_rate": 0.0, "tx_rate": 0.0,
                "connected_to": f"{remote}_to_{local}", "local_router": local, "remote_router": remote,
            })
            value = counter["perturbed"] if counter.get("perturbed") is not None else counter["ground_truth"]
            record[f"{rate}_rate"] = float(value) if value is not None else 0.0
            record[f"_truth_{rate}"] = float(counter["ground_truth"])
    return interfaces


def _perturb(interfaces: dict[str, dict[str, Any]], topology: dict[str, list[str]],
             rng: random.Random) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], str]:
    """The reference's test perturbations, drawing from `rng` in its order."""
    bug_type = rng.choice(BUG_TYPES)
    perturbed: dict[str, dict[str, Any]] = {}
    truth: dict[str, dict[str, Any]] = {}
    for interface_id, record in interfaces.items():
        truth[interface_id] = {
            "rx_rate": record.get("_truth_rx", record["rx_rate"]),
            "tx_rate": record.get("_truth_tx", record["tx_rate"]),
            "interface_status": record["interface_status"],
        }
        noisy = _visible(record)
        noisy["rx_rate"] *= rng.uniform(0.98, 1.02)
        noisy["tx_rate"] *= rng.uniform(0.98, 1.02)
        if bug_type == "dropped" and rng.random() < 0.20:
            noisy["rx_rate"] = 0
            noisy["tx_rate"] = 0
        elif bug_type == "scaled" and rng.random() < 0.20:
            noisy["rx_rate"] *= _scale(rng)
            noisy["tx_rate"] *= _scale(rng)
        perturbed[interface_id] = noisy
    for interface_ids in topology.values():
        if rng.random() < 0.80:  # a router-wide bug hits one router in five
            continue
        for interface_id in interface_ids:
            if bug_type == "correlated_dropped":
                record = _visible(interfaces[interface_id])
                record["rx_rate"] = 0
                record["tx_rate"] = 0
                perturbed[interface_id] = record
            elif bug_type == "correlated_scaled":
                record = _visible(interfaces[interface_id])
                record["rx_rate"] *= _scale(rng)
                record["tx_rate"] *= _scale(rng)
                perturbed[interface_id] = record
    return perturbed, truth, bug_type


def _scale(rng: random.Random) -> float:
    """A factor of 0.5-0.8 or 1.2-1.5; both are drawn before one is chosen, as in the reference."""
    return rng.choice([rng.uniform(0.5, 0.8), rng.uniform(1.2, 1.5)])


def _visible(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if not key.startswith("_truth_")}
