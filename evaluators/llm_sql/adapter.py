"""Candidate side of llm_sql: runs inside the sandbox, next to the candidate program.

For each request of the trusted scorer it loads the table the scorer wrote (a pickled DataFrame),
calls `Evolved().reorder(table)`, prints every cell of the result as a string (missing values as
"") and writes the rows as JSON lines where the scorer asked. Nothing here is trusted: the scorer
times the whole exchange from outside, checks that the rows are a permutation of the input's and
counts the hits itself.

Programs written for the reference evaluator import `from solver import Algorithm` and sometimes
`from utils import ...`, and find `pd`, `pandas` and `Algorithm` already defined in their module;
`prepare` and `namespace` provide the same, with the helper methods the reference's `Algorithm`
offered, written anew here.
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pandas as pd

# -- printing cells, exactly as the scorer does ----------------------------------------------------


def cell_strings(table: pd.DataFrame) -> list[list[str]]:
    """Every cell as `astype(str)` prints it, missing values as "" (the scorer's rule, copied here)."""
    columns = []
    for _, column in table.items():
        texts = column.astype(str).tolist()
        for row in column.isna().to_numpy().nonzero()[0]:
            texts[row] = ""
        columns.append(texts)
    return [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in range(len(table))]


def _common_prefix_length(a: str, b: str) -> int:
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


def prefix_hits(rows: list[str]) -> list[int]:
    """Per string, its longest common prefix with any earlier string (see the scorer's version)."""
    count = len(rows)
    order = sorted(range(count), key=rows.__getitem__)
    rank = [0] * count
    for position, index in enumerate(order):
        rank[index] = position
    shared = [0] * count
    for position in range(1, count):
        shared[position] = _common_prefix_length(rows[order[position - 1]], rows[order[position]])
    before, after = list(range(-1, count - 1)), list(range(1, count + 1))
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


def _row_strings(df: pd.DataFrame) -> list[str]:
    return ["".join(row) for row in cell_strings(df)]


# -- what programs written for the reference import ------------------------------------------------


def calculate_length(value: Any) -> int:
    """Squared printed length of a value: booleans count 4 characters, unknown types 0."""
    if isinstance(value, bool):
        return 16
    if isinstance(value, int | float):
        return len(str(value)) ** 2
    if isinstance(value, str):
        return len(value) ** 2
    return 0


def evaluate_df_prefix_hit_cnt(df: pd.DataFrame) -> tuple[int, float]:
    """(hits, hit rate in percent) of a table, counted exactly as the scorer counts them."""
    rows = _row_strings(df)
    hits = sum(prefix_hits(rows))
    characters = sum(len(row) for row in rows)
    return hits, (hits / characters * 100 if characters else 0.0)


class TrieNode:
    def __init__(self) -> None:
        self.children: dict[str, TrieNode] = {}
        self.end_of_word = False


class Trie:
    """A character trie: `longest_common_prefix(word)` is the longest prefix shared with any inserted word."""

    def __init__(self) -> None:
        self.root = TrieNode()

    def insert(self, word: str) -> None:
        node = self.root
        for char in word:
            node = node.children.setdefault(char, TrieNode())
        node.end_of_word = True

    def longest_common_prefix(self, word: str) -> int:
        node, depth = self.root, 0
        for char in word:
            node = node.children.get(char)
            if node is None:
                break
            depth += 1
        return depth


def _width(column: pd.Series) -> float:
    """Mean printed length of a column as the reference measured it (booleans: 4, other types: 0)."""
    dtype = column.dtype
    if dtype == "bool":
        return 4
    if dtype in ("object", "int64", "float64") or isinstance(dtype, pd.StringDtype):
        return column.astype(str).str.len().mean()
    return 0


class Algorithm:
    """Base class of candidate programs: subclass it as `Evolved` and implement `reorder`."""

    def __init__(self, df: pd.DataFrame | None = None) -> None:
        self.df = df

    def reorder(self, df: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
        raise NotImplementedError("Evolved must implement reorder(df)")

    @staticmethod
    def calculate_length(value: Any) -> int:
        return calculate_length(value)

    @staticmethod
    def evaluate_df_prefix_hit_cnt(*args: Any) -> int:
        """Total hits of a table (the last argument), counted as the scorer counts them."""
        return evaluate_df_prefix_hit_cnt(args[-1])[0]

    @staticmethod
    def evaluate_cell_hit_cnt(df: pd.DataFrame) -> int:
        """Leading cells of each row whose run of cells equals an earlier complete row."""
        seen: set[tuple] = set()
        total = 0
        for row in df.itertuples(index=False, name=None):
            for length in range(1, len(row) + 1):
                if row[:length] not in seen:
                    break
                total += 1
            seen.add(tuple(row))
        return total

    @staticmethod
    def get_groups_values(df: pd.DataFrame) -> Any:
        """How often each value occurs in the table (a Series, most frequent first)."""
        if df.empty:
            return {}
        counts = df.stack().value_counts()
        return counts if not counts.empty else {}

    @staticmethod
    def drop_col(df: pd.DataFrame, col: Any) -> pd.DataFrame:
        return df.drop(columns=[col])

    @staticmethod
    def drop_rows(df: pd.DataFrame, rows: Any) -> pd.DataFrame:
        return df.drop(index=rows)

    @staticmethod
    def merging_columns(df: pd.DataFrame, col_names: list, delimiter: str = "_",
                        prepended: bool = False) -> pd.DataFrame:
        """Join `col_names` into one column (appended last), as the scorer merges dependent columns.

        The columns must have equally many distinct values (a functional dependency). With
        `prepended`, values look like "name: value" and the joined value keeps one name prefix.
        """
        if not all(name in df.columns for name in col_names):
            raise ValueError(f"columns {col_names} are not all in the table")
        if len(set(df[col_names].nunique())) != 1:
            raise ValueError(f"columns {col_names} do not have equally many distinct values")
        merged = delimiter.join(col_names)
        rows = df[col_names].itertuples(index=False, name=None)
        if prepended:
            df[merged] = [merged + ": " + delimiter.join(str(v).split(": ", 1)[1] for v in row) for row in rows]
        else:
            df[merged] = ["".join(f"{v}" for v in row) for row in rows]
        return df.drop(columns=col_names)

    @staticmethod
    def calculate_col_stats(df: pd.DataFrame, enable_index: bool = False) -> tuple[int, list[tuple]]:
        """(rows, [(column, distinct values, squared mean width, score)]) sorted by score, best first.

        score = squared mean width * (rows per distinct value - 1), 0 for a column of distinct
        values. A column named "original_index" is left out, or listed last with `enable_index`.
        """
        rows = len(df)
        stats = []
        for name in df.columns:
            if name == "original_index":
                continue
            distinct = df[name].nunique()
            width = _width(df[name]) ** 2
            score = 0 if distinct in (0, rows) else width * (rows / distinct - 1)
            stats.append((name, distinct, width, score))
        if enable_index and "original_index" in df.columns:
            stats.append(("original_index", rows, 0, 0))
        stats.sort(key=lambda item: item[3], reverse=True)
        return rows, stats


def _install_reference_modules() -> None:
    """Programs for the reference import its helper modules by name (`from solver import Algorithm`)."""
    members = {
        "solver": {"Algorithm": Algorithm, "pd": pd},
        "utils": {"Trie": Trie, "TrieNode": TrieNode, "calculate_length": calculate_length,
                  "evaluate_df_prefix_hit_cnt": evaluate_df_prefix_hit_cnt, "pd": pd},
    }
    for name, names in members.items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__dict__.update(names)
            sys.modules[name] = module


# -- the conversation with the scorer ----------------------------------------------------------------


def prepare(shared: Any) -> None:
    _install_reference_modules()


def namespace(context: Any) -> dict[str, Any]:
    return {"pd": pd, "pandas": pd, "Algorithm": Algorithm}


_held: dict[str, pd.DataFrame] = {}
"""The table between "load" and "reorder", and the result between "reorder" and "write"."""


def handle(evolved: Any, message: dict[str, Any], context: Any) -> Any:
    """Answer one request. The scorer times each from its side of the channel and charges the
    candidate for "reorder" (the call of the program alone) plus whatever "load" and "write" take
    beyond its own measurement of the same work:

    * "ready": the program is loaded (the scorer waits for it before timing anything);
    * "load": read the table from `message["table"]` and hold it;
    * "reorder": call `Evolved().reorder` on the held table and hold the result;
    * "write": print the result's cells and write them, one JSON array per row, to `message["output"]`.
    """
    kind = message.get("type")
    if kind == "ready":
        return "ready"
    if kind == "load":
        _held.clear()
        _held["table"] = pd.read_pickle(message["table"])
        return {"rows": len(_held["table"])}
    if kind == "reorder":
        result = evolved().reorder(_held.pop("table"))
        if isinstance(result, tuple):
            result = result[0] if result else None
        if not isinstance(result, pd.DataFrame):
            return {"invalid": f"reorder must return a pandas DataFrame (or a tuple whose first item is one), "
                               f"not {type(result).__name__}"}
        _held["result"] = result
        return {"rows": len(result)}
    if kind == "write":
        with open(message["output"], "w", encoding="utf-8") as out:
            for row in cell_strings(_held.pop("result")):
                out.write(json.dumps(row) + "\n")
        return {"output": message["output"]}
    raise ValueError(f"unknown request {kind!r}")
