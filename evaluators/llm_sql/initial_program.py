"""Starting point for llm_sql: one column order for every row, rows sorted.

`Evolved().reorder(df)` receives a dataset as a pandas DataFrame (text columns hold Python strings,
numbers and booleans keep their types, missing values are NaN) and returns a DataFrame of the same
shape: the rows in any order, and each row's values in any order of its own. Every output row is
then printed as the concatenation of its values, and a row scores the length of its longest
common prefix with any earlier row: the part of an LLM prompt a prefix cache would already hold.

This program gives every row the same column order, columns with the fewest distinct values
first (they are the ones consecutive rows can share), and sorts the rows so that equal leading
values sit together. It is the reference's starting program: hit rate 0.5368 on beer.
"""

import pandas as pd
from solver import Algorithm  # provided by the evaluator (also injected as `Algorithm`)


class Evolved(Algorithm):
    def reorder(self, df: pd.DataFrame, **kwargs) -> pd.DataFrame:
        if df.empty:
            return df
        by_cardinality = sorted(df.columns, key=lambda name: df[name].nunique())
        # A stable sort on every column, most shared column first.
        return df[by_cardinality].sort_values(by=by_cardinality, kind="mergesort")
