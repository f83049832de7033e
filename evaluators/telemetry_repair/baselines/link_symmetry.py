"""Baseline: repair each counter from the other end of its link, trusting the healthier router.

Every link direction is measured twice: as `tx_rate` of `A_to_B` and as `rx_rate` of `B_to_A`.
When the two agree (within the 2 % noise, with some margin) both are kept with high confidence.
When they disagree, one of them is corrupt: a zero loses to a non-zero value; otherwise the value
reported by the router whose other counters agree more often with their peers wins (a router-wide
bug makes all of a router's counters disagree). Confidence is lower for repaired values.
"""

from typing import Any, Dict, List, Tuple

AGREE = 0.05
SURE, REPAIRED, GUESSED = 0.9, 0.8, 0.6


def _agree(a: float, b: float) -> bool:
    return abs(a - b) <= AGREE * max(abs(a), abs(b), 1e-9)


def _health(telemetry: Dict[str, Dict[str, Any]], topology: Dict[str, List[str]]) -> Dict[str, float]:
    """Share of a router's counters that agree with the counter at the other end of their link."""
    health = {}
    for router, interfaces in topology.items():
        checks = []
        for interface_id in interfaces:
            record = telemetry[interface_id]
            peer = telemetry.get(record.get("connected_to"))
            if peer is not None:
                checks.append(_agree(record["tx_rate"], peer["rx_rate"]))
                checks.append(_agree(record["rx_rate"], peer["tx_rate"]))
        health[router] = sum(checks) / len(checks) if checks else 0.5
    return health


def _pick(mine: float, theirs: float, my_health: float, their_health: float) -> Tuple[float, float]:
    if _agree(mine, theirs):
        return mine, SURE
    if mine == 0 and theirs != 0:
        return theirs, REPAIRED
    if theirs == 0 and mine != 0:
        return mine, REPAIRED
    return (mine, GUESSED) if my_health >= their_health else (theirs, GUESSED)


def repair_network_telemetry(telemetry: Dict[str, Dict[str, Any]],
                             topology: Dict[str, List[str]]) -> Dict[str, Dict[str, Tuple]]:
    health = _health(telemetry, topology)
    repaired = {}
    for interface_id, record in telemetry.items():
        peer = telemetry.get(record.get("connected_to"))
        status = record.get("interface_status", "up")
        fields = {"interface_status": (status, status, 1.0)}
        for mine, theirs in (("tx_rate", "rx_rate"), ("rx_rate", "tx_rate")):
            if peer is None:
                fields[mine] = (record[mine], record[mine], GUESSED)
                continue
            value, confidence = _pick(record[mine], peer[theirs], health.get(record["local_router"], 0.5),
                                      health.get(record.get("remote_router"), 0.5))
            fields[mine] = (record[mine], value, confidence)
        repaired[interface_id] = fields
    return repaired
