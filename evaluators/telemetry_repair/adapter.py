"""Candidate side of telemetry_repair: runs in the sandbox, calls the candidate, returns plain data.

`repair_network_telemetry(telemetry, topology)` is called once per case with the perturbed
telemetry and the router -> interfaces map, as the reference called it. Of the answer only the
three repaired fields of each interface travel back (`rx_rate`, `tx_rate`, `interface_status`),
tuples as lists and numpy numbers as Python numbers; the trusted scorer checks them.
"""

from __future__ import annotations

import typing

FIELDS = ("rx_rate", "tx_rate", "interface_status")


def namespace(context: typing.Any) -> dict:
    return {"Dict": typing.Dict, "Any": typing.Any, "Tuple": typing.Tuple, "List": typing.List}  # noqa: UP006


def run(entry: typing.Callable, scenario_input: dict, context: typing.Any) -> typing.Any:
    return entry(scenario_input["telemetry"], scenario_input["topology"])


def serialize(raw: typing.Any, scenario_input: dict) -> typing.Any:
    if not isinstance(raw, dict):
        return repr(raw)[:200]
    answer = {}
    for interface_id, fields in raw.items():
        if isinstance(fields, dict):
            answer[str(interface_id)] = {name: _plain(fields.get(name)) for name in FIELDS if name in fields}
    return answer


def _plain(value: typing.Any) -> typing.Any:
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return repr(value)
