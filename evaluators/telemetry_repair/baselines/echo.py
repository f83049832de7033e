"""Baseline: pass every counter through unchanged, with confidence 0.5.

This is what the reference's own repair program (mit-nms/Engram, `SystemBench/ADRS/
telemetry_repair/initial_program_reference_selfcontained.py`, "Hodor" with democratic trust
propagation) returns in effect: it computes consensus values per link, but writes them back only
to columns whose names contain `_egress_to_`, which its interface names (`A_to_B`) never do, so
every counter comes back as it came in, with its default confidence of 0.5. It scores 0.7994
here; the reference's 0.822 for that program came from cases that changed because the program
reseeded Python's global random generator (see the problem README).
"""

from typing import Any, Dict, List, Tuple

UNSURE = 0.5


def repair_network_telemetry(telemetry: Dict[str, Dict[str, Any]],
                             topology: Dict[str, List[str]]) -> Dict[str, Dict[str, Tuple]]:
    repaired = {}
    for interface_id, record in telemetry.items():
        status = record.get("interface_status", "up")
        repaired[interface_id] = {
            "rx_rate": (record["rx_rate"], record["rx_rate"], UNSURE),
            "tx_rate": (record["tx_rate"], record["tx_rate"], UNSURE),
            "interface_status": (status, status, 1.0),
        }
    return repaired
