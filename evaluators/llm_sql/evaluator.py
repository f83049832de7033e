"""Trusted scoring for llm_sql: hand the candidate a table, check its reordering, count cache hits.

The rules are the reference evaluator's (mit-nms/Engram, SystemBench/ADRS/llm_sql): each dataset is
read with pandas, its functionally dependent columns are merged, the candidate's `reorder` returns
the table with rows reordered and each row's values permuted, every output row becomes the
concatenation of its values printed as strings (missing values as empty strings), a row's hits are
the length of its longest common prefix with *any* earlier row (a prefix cache that keeps
everything), and a dataset's hit rate is hits / characters. The combined score is
0.95 * mean hit rate + 0.05 * (12 - min(12, mean runtime in seconds)) / 12.

Where the reference trusted the candidate, this side does not:

* it checks the output it scores (the reference checked the output of a *second* call to
  `reorder`, on a differently typed copy of the table): every output row must be a permutation of
  the printed values of a distinct input row;
* the runtime is measured here, from this side of the channel, not reported by the candidate (the
  reference timed the call inside the candidate's process): reading the table, calling `reorder`
  and writing the answer are three requests, each timed here; the runtime is the call's time plus
  whatever reading and writing took beyond this process's own timing of the same work, so work a
  program moves out of the call is still charged;
* the hit rate is computed here from the strings the candidate returned.

Counting hits with a character trie, as the reference does, costs about two seconds per dataset in
pure Python; `prefix_hits` gets the same counts from one sort of the rows (see its docstring).
"""

from __future__ import annotations

import json
import math
import pickle
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd

from engram.evaluation import InvalidAnswer, ScenarioScore, Scorer

if TYPE_CHECKING:
    from engram.evaluation.channel import CandidateChannel
    from engram.problems.problem import Problem, ScenarioSpec

HIT_RATE_WEIGHT = 0.95
RUNTIME_WEIGHT = 0.05
RUNTIME_CAP_S = 12.0
OUTPUT_SLACK_BYTES = 1 << 20
"""An honest answer file is exactly as long as the input's rows written the same way; anything
more than twice that plus this much is refused unread."""
MAX_VALUES_SHOWN = 6


# -- the table as the candidate sees it ----------------------------------------------------------


def read_table(path: str, merges: Sequence[Sequence[str]] = ()) -> pd.DataFrame:
    """Read a dataset as the reference did (`pd.read_csv(path, low_memory=False)`) and merge columns.

    Text columns are given as `object` columns of Python strings, as pandas 2 read them, whatever
    the pandas version: programs written for the reference rely on it (pandas 3 reads text as its
    new `str` dtype, into which such programs cannot write numbers back).
    """
    table = pd.read_csv(path, low_memory=False)
    table = table.astype({name: object for name, dtype in table.dtypes.items() if isinstance(dtype, pd.StringDtype)})
    for group in merges:
        table = merge_columns(table, list(group))
    return table


def merge_columns(table: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """Replace the columns of `group` by one column, named by joining their names with "_", whose
    values join their printed values, appended after the remaining columns.

    The reference merges functionally dependent columns (a movie's title, link and synopsis; a
    beer's name and id) before the candidate sees the table, because the joined value is worth
    more as a prefix than its parts. The order inside a group is the reference's: it ranked the
    columns by its column score on the full dataset; the 300-row samples it published record the
    outcome in their column names, and `problem.yaml` lists the groups in that order.
    """
    missing = [name for name in group if name not in table.columns]
    if missing:
        raise ValueError(f"cannot merge columns {group}: {missing} not in the table")
    joined = table[group[0]].map(str)
    for name in group[1:]:
        joined = joined + table[name].map(str)
    merged = table.drop(columns=group)
    merged["_".join(group)] = joined.astype(object)
    return merged


def cell_strings(table: pd.DataFrame) -> list[list[str]]:
    """Every cell printed as the reference's `fillna("").astype(str)` prints it, row by row."""
    columns = []
    for _, column in table.items():
        texts = column.astype(str).tolist()
        for row in column.isna().to_numpy().nonzero()[0]:
            texts[row] = ""
        columns.append(texts)
    return [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in range(len(table))]


def answer_line(row: Sequence[str]) -> str:
    """One row of an answer file: a JSON array of the row's strings (the adapter writes the same)."""
    return json.dumps(list(row))


# -- hit counting -------------------------------------------------------------------------------------


def common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix, by bisection on slices (each comparison runs in C)."""
    if a == b:
        return len(a)
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def prefix_hits(rows: Sequence[str]) -> list[int]:
    """For each string, the longest common prefix with any earlier string (0 for the first).

    This is what a trie of all earlier rows gives, computed without one: the earlier string
    sharing the longest prefix with s is one of s's two neighbours in the sorted order of the
    earlier strings, and the common prefix of two strings in a sorted list is the minimum of the
    common prefixes of the adjacent pairs between them. So sort all rows once, take the common
    prefixes of sorted neighbours, and remove the rows from a linked list in reverse order of
    arrival: when row i is removed, its list neighbours are its nearest earlier strings above and
    below. O(n log n) comparisons plus one slice bisection per adjacent pair.
    """
    count = len(rows)
    order = sorted(range(count), key=rows.__getitem__)
    rank = [0] * count
    for position, index in enumerate(order):
        rank[index] = position
    # shared[p]: common prefix of sorted position p with its current predecessor in the list.
    shared = [0] * count
    for position in range(1, count):
        shared[position] = common_prefix_length(rows[order[position - 1]], rows[order[position]])
    before = list(range(-1, count - 1))
    after = list(range(1, count + 1))
    hits = [0] * count
    for index in range(count - 1, -1, -1):
        position = rank[index]
        previous, following = before[position], after[position]
        best = shared[position] if previous >= 0 else 0
        if following < count:
            best = max(best, shared[following])
            shared[following] = min(shared[position], shared[following]) if previous >= 0 else 0
            before[following] = previous
        if previous >= 0:
            after[previous] = following
        hits[index] = best
    return hits


def hit_rate(hits: int, characters: int) -> float:
    """hits / characters, rounded as the reference rounds it: it went through a percentage, which
    changes the last bit now and then (GGR on beer: 0.7073511457809135, not ...136)."""
    return hits / characters * 100 / 100.0 if characters else 0.0


# -- scoring ------------------------------------------------------------------------------------------


def table_file(scenario: ScenarioSpec) -> str:
    """The manifest path of a scenario's table (each llm_sql scenario reads exactly one file)."""
    return (scenario.data or [""])[0]


@dataclass
class Dataset:
    """One scenario's table, prepared once per session and reused for every candidate."""

    table: pd.DataFrame

    @cached_property
    def rows(self) -> list[list[str]]:
        return cell_strings(self.table)

    @cached_property
    def pickled(self) -> bytes:
        return pickle.dumps(self.table, protocol=pickle.HIGHEST_PROTOCOL)

    @cached_property
    def signatures(self) -> Counter:
        return Counter(tuple(sorted(row)) for row in self.rows)

    @cached_property
    def answer_bytes(self) -> int:
        return sum(len(answer_line(row)) + 1 for row in self.rows)

    @cached_property
    def load_s(self) -> float:
        """What reading the table takes here: the allowance for the candidate's "load" step."""
        return _fastest(lambda: pickle.loads(self.pickled))

    @cached_property
    def write_s(self) -> float:
        """What printing and writing this table's cells takes here (a reordered table has the same
        cells): the allowance for the candidate's "write" step."""

        def write() -> None:
            with tempfile.TemporaryFile("w", encoding="utf-8") as out:
                for row in cell_strings(self.table):
                    out.write(answer_line(row) + "\n")

        return _fastest(write)


def _fastest(work: Callable[[], object], repeats: int = 3) -> float:
    """The least of a few timings: the cost of the work itself, with as little of the machine's other
    load in it as a short measurement allows."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def timed(channel: CandidateChannel, message: dict[str, Any]) -> tuple[float, Any]:
    """Send one request; its time as the channel measured it (send to complete reply), and the reply."""
    before = channel.candidate_seconds
    reply = channel.request(message)
    return channel.candidate_seconds - before, reply


class LlmSqlScorer(Scorer):
    """Sends each dataset to the candidate, times its steps from outside, validates and scores it."""

    interactive = True

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self._datasets: dict[str, Dataset] = {}

    def dataset(self, scenario: ScenarioSpec) -> Dataset:
        """The scenario's table, read on first use: a run of some scenarios needs only their files."""
        if scenario.name not in self._datasets:
            path = self.problem.data_file(table_file(scenario))
            self._datasets[scenario.name] = Dataset(read_table(str(path), scenario.params.get("merges", [])))
        return self._datasets[scenario.name]

    # -- Scorer interface -----------------------------------------------------------------------

    def scenario_input(self, scenario: ScenarioSpec) -> dict[str, Any]:
        return {"name": scenario.name}

    def run_scenario(self, scenario: ScenarioSpec, channel: CandidateChannel) -> ScenarioScore:
        dataset = self.dataset(scenario)
        rows, columns = len(dataset.rows), len(dataset.table.columns)
        # Wait until the candidate listens, so that its start-up is not counted as its runtime.
        channel.request({"type": "ready"})
        table_path = channel.write_file(f"{scenario.name}.pkl", dataset.pickled)
        output_path = channel.output_path(f"{scenario.name}.jsonl")
        load_s, _ = timed(channel, {"type": "load", "table": table_path})
        reorder_s, reply = timed(channel, {"type": "reorder", "scenario": scenario.name, "rows": rows,
                                           "columns": columns})
        if isinstance(reply, dict) and reply.get("invalid"):
            raise InvalidAnswer(str(reply["invalid"])[:2000])
        write_s, reply = timed(channel, {"type": "write", "output": output_path})
        # The call alone, plus any time loading or writing took beyond this process's own
        # measurement of the same work (so work moved out of the call is still charged).
        framing_s = max(0.0, load_s - dataset.load_s) + max(0.0, write_s - dataset.write_s)
        runtime = reorder_s + framing_s
        limit = 2 * dataset.answer_bytes + OUTPUT_SLACK_BYTES
        data = channel.read_file(output_path, max_bytes=limit)  # a larger file is refused unread
        output = parse_answer(data, rows, columns)
        check_permutation(output, dataset)
        strings = ["".join(row) for row in output]
        hits = sum(prefix_hits(strings))
        characters = sum(len(s) for s in strings)
        metrics = {
            "hit_rate": hit_rate(hits, characters),
            "runtime_s": runtime,
            "reorder_s": reorder_s,
            "hits": hits,
            "characters": characters,
            "rows": rows,
            "columns": columns,
        }
        return ScenarioScore(metrics=metrics)

    def combine(self, results: dict[str, ScenarioScore]) -> tuple[float, dict[str, Any]]:
        rates = [result.metrics["hit_rate"] for result in results.values()]
        runtimes = [result.metrics["runtime_s"] for result in results.values()]
        mean_rate = sum(rates) / len(rates)
        mean_runtime = sum(runtimes) / len(runtimes)
        score = combined_score(mean_rate, mean_runtime)
        return score, {"mean_hit_rate": mean_rate, "mean_runtime_s": mean_runtime}


def combined_score(mean_hit_rate: float, mean_runtime_s: float) -> float:
    runtime_score = (RUNTIME_CAP_S - min(RUNTIME_CAP_S, mean_runtime_s)) / RUNTIME_CAP_S
    return HIT_RATE_WEIGHT * mean_hit_rate + RUNTIME_WEIGHT * runtime_score


# -- validation ---------------------------------------------------------------------------------------


def parse_answer(data: bytes, rows: int, columns: int) -> list[list[str]]:
    """The answer file: one JSON array of `columns` strings per line, `rows` lines."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidAnswer(f"the reordered table is not UTF-8 text: {error}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != rows:
        raise InvalidAnswer(f"the reordered table has {len(lines)} rows; the input has {rows}")
    output = []
    for number, line in enumerate(lines):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise InvalidAnswer(f"row {number} of the reordered table is not a JSON array") from None
        if not isinstance(row, list) or not all(isinstance(value, str) for value in row):
            raise InvalidAnswer(f"row {number} of the reordered table is not a list of strings")
        if len(row) != columns:
            raise InvalidAnswer(f"row {number} of the reordered table has {len(row)} values; the input has {columns}")
        output.append(row)
    return output


def check_permutation(output: list[list[str]], dataset: Dataset) -> None:
    """Each output row must hold exactly the printed values of one input row, each input row used once."""
    available = Counter(dataset.signatures)
    for number, row in enumerate(output):
        signature = tuple(sorted(row))
        if available[signature] > 0:
            available[signature] -= 1
            continue
        shown = ", ".join(repr(value[:40]) for value in row[:MAX_VALUES_SHOWN])
        more = ", ..." if len(row) > MAX_VALUES_SHOWN else ""
        raise InvalidAnswer(
            f"row {number} of the reordered table ({shown}{more}) is not a permutation of any input row "
            f"left unused: rows may only be reordered and each row's values permuted. A value must keep its "
            f"printed form (an integer column that becomes float prints 7 as 7.0), and no row may be "
            f"duplicated, dropped or invented"
        )
