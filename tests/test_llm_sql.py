"""llm_sql: the reference's numbers reproduced exactly, a fast hit counter, and hostile candidates.

The expected hit rates were measured with the reference evaluator (mit-nms/Engram,
SystemBench/ADRS/llm_sql, under pandas 2.2): its starting program and its GGR program on beer.csv
and on the five 300-row samples.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import BACKENDS, REPO, evaluator_on

from engram.errors import DataError
from engram.evaluation import ErrorKind
from engram.evaluation.evaluator import CandidateEvaluator
from engram.evaluation.scoring import ScenarioScore
from engram.problems.problem import Problem, load_problem
from engram.sandbox import get_sandbox

SAMPLES = ["movies_sample", "beer_sample", "BIRD_sample", "PDMX_sample", "products_sample"]
INITIAL_ON_SAMPLES = {
    "movies_sample": 0.41746741093595685,
    "beer_sample": 0.1865756064859429,
    "BIRD_sample": 0.10747919511698267,
    "PDMX_sample": 0.23691498804390532,
    "products_sample": 0.44628140235381797,
}
INITIAL_ON_BEER = 0.5368032780750335
AS_GIVEN_ON_BEER = 0.14447551283761562
GGR_ON_BEER = 0.7073511457809135
GGR_ON_SAMPLES = {
    "movies_sample": 0.579416916302444,
    "beer_sample": 0.3972849541207525,
    "BIRD_sample": 0.1072422872922341,
    "products_sample": 0.5781852622426482,
    # The reference's GGR output on PDMX is not a permutation of the input (it scored 0.2529703367246348
    # only because the reference validated another call); ours is valid and scores this.
    "PDMX_sample": 0.25885308797066514,
}


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem("llm_sql")


@pytest.fixture(scope="module")
def rules(problem: Problem):
    """The scorer's module (its pure functions: reading, printing, counting, validating)."""
    return sys.modules[problem.scorer_class.__module__]


@pytest.fixture(scope="module")
def adapter(problem: Problem):
    """The sandbox-side adapter, imported here to compare it with the scorer and to run programs in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("llm_sql_adapter_under_test", problem.adapter_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=BACKENDS)
def samples(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    yield from evaluator_on(request, problem, scenarios=["samples"])


@pytest.fixture(scope="module", params=BACKENDS)
def small(request: pytest.FixtureRequest, problem: Problem) -> Iterator[CandidateEvaluator]:
    """One small scenario, for hostile candidates."""
    yield from evaluator_on(request, problem, scenarios=["beer_sample"], time_limit_s=60)


@pytest.fixture(scope="module")
def beer(problem: Problem, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CandidateEvaluator]:
    """beer.csv with a data mirror that lacks the other full datasets: they must not be needed."""
    root = mirror(problem, tmp_path_factory.mktemp("mirror"), ["beer", "samples"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENGRAM_DATA_DIR", str(root))
        with CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=["beer"]) as ev:
            yield ev


def mirror(problem: Problem, root: Path, scenarios: list[str]) -> Path:
    """A data mirror holding only the datasets of `scenarios` (links to the real files)."""
    for scenario in problem.select_scenarios(scenarios):
        relative = (scenario.data or [""])[0]
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).symlink_to(problem.data_file(relative))
    return root


def rates(result) -> dict[str, float]:
    assert result.ok, result.error
    return {name: scenario.metrics["hit_rate"] for name, scenario in result.scenarios.items()}


def table_of(problem: Problem, rules, scenario: str) -> pd.DataFrame:
    spec = next(s for s in problem.config.scenarios if s.name == scenario)
    return rules.read_table(str(problem.data_file((spec.data or [""])[0])), spec.params.get("merges", []))


# -- the hit counter ---------------------------------------------------------------------------------


def trie_hits(rows: list[str]) -> list[int]:
    """The reference's rule, written plainly: walk a character trie of all earlier rows."""
    root: dict = {}
    hits = []
    for row in rows:
        node, depth = root, 0
        for char in row:
            if char not in node:
                break
            node, depth = node[char], depth + 1
        hits.append(depth)
        node = root
        for char in row:
            node = node.setdefault(char, {})
    return hits


def brute_force_hits(rows: list[str]) -> list[int]:
    def common(a: str, b: str) -> int:
        length = 0
        while length < min(len(a), len(b)) and a[length] == b[length]:
            length += 1
        return length

    return [max((common(row, earlier) for earlier in rows[:i]), default=0) for i, row in enumerate(rows)]


@pytest.mark.parametrize("seed", range(40))
def test_prefix_hits_equal_a_trie_on_random_rows(rules, seed: int):
    rng = random.Random(seed)
    alphabet = rng.choice(["ab", "abc", "abcdefgh", "aé\u4e2d\U0001f600"])
    stems = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(1, 6))]
    rows = []
    for _ in range(rng.randint(0, 120)):
        stem = rng.choice(stems)
        rows.append(stem[: rng.randint(0, len(stem))] + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))))
    if rows and rng.random() < 0.5:
        rows += rng.sample(rows, k=min(len(rows), 10))  # exact repeats
    expected = trie_hits(rows)
    assert rules.prefix_hits(rows) == expected
    assert expected == brute_force_hits(rows)


def test_prefix_hits_equal_a_trie_on_every_sample_and_on_beer(problem: Problem, rules, adapter):
    for scenario in [*SAMPLES, "beer"]:
        rows = ["".join(row) for row in rules.cell_strings(table_of(problem, rules, scenario))]
        for order in (rows, sorted(rows), sorted(rows, key=lambda r: r[::-1])):
            expected = trie_hits(order)
            assert rules.prefix_hits(order) == expected, scenario
            assert adapter.prefix_hits(order) == expected, scenario  # the copy candidates can call


def test_hit_rate_of_beer_as_given(problem: Problem, rules):
    rows = ["".join(row) for row in rules.cell_strings(table_of(problem, rules, "beer"))]
    assert rules.hit_rate(sum(rules.prefix_hits(rows)), sum(map(len, rows))) == AS_GIVEN_ON_BEER


# -- the tables ----------------------------------------------------------------------------------------


def test_merging_beer_reproduces_the_published_sample(problem: Problem, rules):
    # The reference drew each sample with df.sample(n=300, random_state=42) after merging.
    merged = table_of(problem, rules, "beer")
    assert list(merged.columns)[-1] == "beer/name_beer/beerId"
    sample = problem.data_file("llm_sql/sample_data/beer_sample.csv").read_text(encoding="utf-8")
    assert merged.sample(n=300, random_state=42).to_csv(index=False) == sample


def test_merge_groups_are_the_ones_recorded_in_the_samples(problem: Problem, rules):
    for scenario in problem.select_scenarios(["full"]):
        groups = scenario.params["merges"]
        header = pd.read_csv(problem.data_file(f"llm_sql/sample_data/{scenario.name}_sample.csv"), nrows=0).columns
        assert list(header[-len(groups):]) == ["_".join(group) for group in groups], scenario.name
        assert not {name for group in groups for name in group} & set(header), scenario.name


def test_text_columns_hold_python_strings(problem: Problem, rules):
    table = table_of(problem, rules, "movies_sample")
    assert {str(dtype) for dtype in table.dtypes} == {"object", "bool"}
    assert isinstance(table["reviewcontent"].iloc[0], str)


def test_adapter_prints_cells_exactly_as_the_scorer(problem: Problem, rules, adapter):
    odd = pd.DataFrame({"a": [1.0, float("nan"), 1e16, 0.1 + 0.2], "b": [True, False, None, "x"],
                        "c": [7, 8, 9, 10], "d": ["é", "", "nan", None]})
    for table in [odd, *(table_of(problem, rules, name) for name in SAMPLES)]:
        assert adapter.cell_strings(table) == rules.cell_strings(table)
        assert rules.cell_strings(table) == table.astype(object).where(table.notna(), "").astype(str).values.tolist()


def test_scoring_reads_only_the_selected_data_files(problem: Problem, tmp_path: Path, monkeypatch):
    beer = problem.ensure_data(problem.select_scenarios(["beer"]))
    assert [p.name for p in beer] == ["beer.csv"]
    assert len(problem.ensure_data(problem.select_scenarios(["samples"]))) == 5
    monkeypatch.setenv("ENGRAM_DATA_DIR", str(tmp_path))  # an empty mirror
    scorer = problem.make_scorer()  # reads nothing yet
    movies = problem.select_scenarios(["movies"])[0]
    with pytest.raises(DataError) as caught:
        scorer.dataset(movies)
    message = str(caught.value)
    assert "llm_sql/datasets/movies.csv" in message and "raw.githubusercontent.com" in message


def test_combined_score_is_the_reference_formula(problem: Problem):
    scorer = problem.make_scorer()
    results = {"a": ScenarioScore({"hit_rate": 0.5, "runtime_s": 6.0}),
               "b": ScenarioScore({"hit_rate": 0.7, "runtime_s": 30.0})}
    score, totals = scorer.combine(results)
    assert totals == {"mean_hit_rate": 0.6, "mean_runtime_s": 18.0}
    assert score == 0.95 * 0.6  # the runtime term is capped at 12 s
    score, _ = scorer.combine({"a": ScenarioScore({"hit_rate": 0.5, "runtime_s": 3.0})})
    assert score == 0.95 * 0.5 + 0.05 * (12 - 3.0) / 12


def test_reference_algorithms_are_listed(problem: Problem):
    assert {"ggr", "as_given"} <= set(problem.baselines())


# -- the reference's numbers, in the sandbox --------------------------------------------------------


def test_initial_program_reproduces_the_reference_on_the_samples(samples: CandidateEvaluator, problem: Problem):
    result = samples.evaluate(problem.initial_program)
    assert rates(result) == INITIAL_ON_SAMPLES
    mean = sum(INITIAL_ON_SAMPLES.values()) / 5
    assert result.metrics["mean_hit_rate"] == mean
    runtime = result.metrics["mean_runtime_s"]
    assert 0 < runtime < 5
    assert result.score == 0.95 * mean + 0.05 * (12 - min(12, runtime)) / 12


def test_ggr_reproduces_the_reference_on_the_samples(samples: CandidateEvaluator, problem: Problem):
    assert rates(samples.evaluate(problem.baselines()["ggr"])) == GGR_ON_SAMPLES


def test_beer_alone_reproduces_the_reference(beer: CandidateEvaluator, problem: Problem):
    assert rates(beer.evaluate(problem.initial_program)) == {"beer": INITIAL_ON_BEER}
    assert rates(beer.evaluate(problem.baselines()["as_given"])) == {"beer": AS_GIVEN_ON_BEER}


def test_ggr_reproduces_the_reference_on_beer(beer: CandidateEvaluator, problem: Problem):
    result = beer.evaluate(problem.baselines()["ggr"])
    assert rates(result) == {"beer": GGR_ON_BEER}
    assert result.scenarios["beer"].metrics["rows"] == 28479


def test_a_missing_dataset_is_named_with_the_fix(problem: Problem, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ENGRAM_DATA_DIR", str(mirror(problem, tmp_path, ["samples"])))
    with CandidateEvaluator(problem, get_sandbox("process", quiet=True), scenarios=["beer"]) as ev, \
            pytest.raises(DataError) as caught:
        ev.evaluate(problem.initial_program)
    assert "llm_sql/datasets/beer.csv" in str(caught.value) and "ENGRAM_DATA_DIR" in str(caught.value)


REFERENCE_STYLE = '''
from solver import Algorithm
from utils import evaluate_df_prefix_hit_cnt


class Evolved(Algorithm):
    """Written for the reference: injected `pd`, helper methods, a tuple as the result."""

    def reorder(self, df, early_stop=100000, **kwargs):
        _, stats = self.calculate_col_stats(df)
        columns = sorted(df.columns, key=lambda c: df[c].nunique())
        ordered = df[columns].sort_values(by=columns, kind="mergesort")
        assert isinstance(ordered, pd.DataFrame) and len(stats) == len(df.columns)
        assert evaluate_df_prefix_hit_cnt(ordered)[0] == self.evaluate_df_prefix_hit_cnt(ordered) > 0
        return ordered, columns
'''


def test_programs_written_for_the_reference_run_unchanged(samples: CandidateEvaluator):
    assert rates(samples.evaluate(REFERENCE_STYLE)) == INITIAL_ON_SAMPLES


def test_the_cli_evaluates_a_scenario_set_and_names_a_missing_file(problem: Problem, tmp_path: Path):
    env = {**os.environ, "ENGRAM_DATA_DIR": str(mirror(problem, tmp_path, ["samples"]))}
    engram = [sys.executable, "-m", "engram.cli", "evaluate", "llm_sql", str(problem.initial_program)]
    done = subprocess.run([*engram, "--scenarios", "samples", "--sandbox", "process", "--json"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {name: s["metrics"]["hit_rate"] for name, s in result["scenarios"].items()} == INITIAL_ON_SAMPLES
    done = subprocess.run([*engram, "--scenarios", "beer", "--sandbox", "process"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 2 and "llm_sql/datasets/beer.csv" in done.stderr


# -- hostile candidates ------------------------------------------------------------------------------


def program(body: str, prelude: str = "") -> str:
    """A candidate whose reorder sorts like the initial program, then runs `body` on `out`."""
    indented = "\n".join("        " + line for line in body.strip().splitlines())
    return (f"import pandas as pd\nfrom solver import Algorithm\n{prelude}\n\n"
            "class Evolved(Algorithm):\n    def reorder(self, df, **kwargs):\n"
            "        columns = sorted(df.columns, key=lambda c: df[c].nunique())\n"
            "        out = df[columns].sort_values(by=columns, kind='mergesort').reset_index(drop=True)\n"
            f"{indented}\n        return out\n")


HONEST = program("pass")


@pytest.fixture(scope="module")
def honest(small: CandidateEvaluator):
    result = small.evaluate(HONEST)
    assert result.ok, result.error
    return result


@pytest.mark.parametrize("body, message", [
    ("out.iloc[0, 0] = str(out.iloc[0, 0]) + 'x'", "not a permutation"),
    ("out = pd.concat([out, out.iloc[:1]])", "301 rows"),
    ("out = out.iloc[1:]", "299 rows"),
    ("out = pd.concat([out.iloc[:1]] * len(out))", "not a permutation"),
    ("out.iloc[0, -1], out.iloc[-1, -1] = out.iloc[-1, -1], out.iloc[0, -1]", "not a permutation"),
    ("out['review/time'] = out['review/time'].astype(float)", "7.0"),
    ("out = out.iloc[:, 1:]", "has 7 values"),
    ("out['extra'] = 'x'", "has 9 values"),
    ("out = out.values.tolist()", "must return a pandas DataFrame"),
])
def test_forged_tables_are_rejected(small: CandidateEvaluator, body: str, message: str):
    result = small.evaluate(program(body))
    assert not result.ok and result.error_kind == ErrorKind.INVALID_OUTPUT, result.error
    assert message in result.error


def test_a_faked_clock_does_not_shorten_the_runtime(small: CandidateEvaluator, honest):
    prelude = ("import time\n_sleep = time.sleep\n"
               "for _name in ('time', 'perf_counter', 'monotonic', 'process_time'):\n"
               "    setattr(time, _name, lambda: 0.0)\n")
    result = small.evaluate(program("_sleep(1.0)", prelude))
    assert result.ok, result.error
    assert result.scenarios["beer_sample"].metrics["runtime_s"] >= 1.0
    assert result.metrics["mean_hit_rate"] == honest.metrics["mean_hit_rate"]
    assert result.score < honest.score


@pytest.mark.parametrize("prelude", [
    # Work done while the table is read (say, reordering it there): charged as runtime.
    "import time\n_read = pd.read_pickle\n"
    "pd.read_pickle = lambda *a, **k: (time.sleep(1.5), _read(*a, **k))[1]\n",
    # Work done while the answer is written: charged too.
    "import json, time\n_dumps = json.dumps\n_slept = []\n"
    "def _slow(*a, **k):\n    if isinstance(a[0], list) and not _slept:  # a row of the answer\n"
    "        _slept.append(time.sleep(1.5))\n    return _dumps(*a, **k)\n"
    "json.dumps = _slow\n",
], ids=["while-loading", "while-writing"])
def test_work_moved_out_of_the_call_is_still_charged(small: CandidateEvaluator, honest, prelude: str):
    """The runtime is the call of `reorder` as timed from the scorer's side, plus whatever reading
    the table and writing the answer took beyond the scorer's own measurement of that work."""
    result = small.evaluate(program("pass", prelude))
    assert result.ok, result.error
    metrics = result.scenarios["beer_sample"].metrics
    assert metrics["runtime_s"] >= 1.0
    assert result.score < honest.score


def test_the_runtime_is_the_call_plus_any_excess(honest):
    for scenario in honest.scenarios.values():
        assert scenario.metrics["runtime_s"] >= scenario.metrics["reorder_s"] > 0


PATCH_ADAPTER = '''
import json, sys
_adapter = sys.modules["engram_problem_adapter"]
_honest = _adapter.handle

def handle(evolved, message, context):
    reply = _honest(evolved, message, context)
    if message.get("type") == "write":
        rows = [json.loads(line) for line in open(message["output"])]
        with open(message["output"], "w") as out:   # every row the same: all hits
            for _ in rows:
                out.write(json.dumps(rows[0]) + "\\n")
        reply = {**reply, "runtime_s": 0.0, "hit_rate": 1.0}
    return reply

_adapter.handle = handle
_adapter.prefix_hits = lambda rows: [len(r) for r in rows]
'''


def test_patching_the_adapter_in_the_candidates_process_gains_nothing(small: CandidateEvaluator):
    result = small.evaluate(program("pass", PATCH_ADAPTER))
    assert not result.ok and result.error_kind == ErrorKind.INVALID_OUTPUT
    assert "not a permutation" in result.error


PATCH_SCORER = '''
import sys
sys.path.insert(0, "{repo}")  # visible only without isolation (the process backend)
try:
    import evaluators.llm_sql.evaluator as _scorer
    _scorer.prefix_hits = lambda rows: [len(r) for r in rows]
    _scorer.check_permutation = lambda output, dataset: None
    _scorer.combined_score = lambda *args: 1.0
except Exception:
    pass
'''


def test_patching_the_scorer_in_the_candidates_process_gains_nothing(small: CandidateEvaluator, honest):
    result = small.evaluate(program("pass", PATCH_SCORER.format(repo=REPO)))
    assert result.ok, result.error
    assert result.metrics["mean_hit_rate"] == honest.metrics["mean_hit_rate"]
    assert result.score <= honest.score + 0.001  # the same answer; only the measured runtime may differ


def test_an_answer_file_written_elsewhere_is_not_read(small: CandidateEvaluator):
    prelude = ('import sys\n_adapter = sys.modules["engram_problem_adapter"]\n_seen = {}\n'
               "def _handle(evolved, message, context):\n"
               "    if message.get('type') == 'load':\n        _seen['table'] = message['table']\n"
               "    if message.get('type') != 'write':\n        return 'ready'\n"
               "    return {'output': _seen['table']}\n"
               "_adapter.handle = _handle\n")
    result = small.evaluate(program("pass", prelude))
    assert not result.ok and result.error_kind == ErrorKind.INVALID_OUTPUT, result.error


def test_an_oversized_answer_is_refused_unread(small: CandidateEvaluator):
    prelude = ('import sys\n_adapter = sys.modules["engram_problem_adapter"]\n'
               "def _handle(evolved, message, context):\n"
               "    if message.get('type') != 'write':\n        return 'ready'\n"
               "    with open(message['output'], 'w') as out:\n"
               "        out.write('[' + '\"x\", ' * 1_000_000 + '\"x\"]\\n')\n"
               "    return {'output': message['output']}\n"
               "_adapter.handle = _handle\n")
    result = small.evaluate(program("pass", prelude))
    assert not result.ok and result.error_kind == ErrorKind.INVALID_OUTPUT
    assert "larger than the" in result.error


def test_a_crash_in_reorder_is_a_runtime_error_with_its_traceback(small: CandidateEvaluator):
    result = small.evaluate(program("raise KeyError('no such column')"))
    assert result.error_kind == ErrorKind.RUNTIME and "no such column" in result.error
