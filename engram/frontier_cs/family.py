"""The Frontier-CS problem family: `frontier_cs/<id>` is one of the 156 published problems.

Each is an Engram `Problem` made from the upstream files instead of a `problem.yaml`: the statement is
the task prompt, each test case is a scenario (named by its number), the score is 100 times the
mean ratio over the cases (`frontier_cs/<id>/unbounded`: the unbounded ratios), and the trusted
side is the judge (`engram.frontier_cs.scorer`). The family's own files -- the starting programs
and the note that precedes every statement -- are in `evaluators/frontier_cs/`. A folder laid out
like an upstream problem loads the same way from its path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from engram.errors import ConfigError, DataError, ProblemNotFoundError
from engram.frontier_cs.config import JudgeConfig, parse_config
from engram.frontier_cs.manifest import TESTLIB, upstream_manifest
from engram.frontier_cs.sources import FolderSource, ProblemSource, UpstreamSource
from engram.problems.problem import Problem, ProblemConfig, ScenarioSpec, ScoreSpec, builtin_problems_dir

if TYPE_CHECKING:
    from engram.evaluation.scoring import Scorer

FAMILY = "frontier_cs"
UNBOUNDED = "unbounded"
JUDGEABLE = "judgeable"
_NAME = re.compile(rf"^{FAMILY}/(\d+)(?:/({UNBOUNDED}))?$")


def family_dir() -> Path:
    return builtin_problems_dir() / FAMILY


def is_family_name(name: str) -> bool:
    return bool(_NAME.match(name.strip()))


def is_problem_folder(path: Path) -> bool:
    """A folder laid out like an upstream Frontier-CS problem."""
    return (path / "config.yaml").is_file() and (path / "statement.txt").is_file() and (path / "testdata").is_dir()


@dataclass(frozen=True)
class FrontierProblem(Problem):
    """One Frontier-CS problem; see the module docstring."""

    source: ProblemSource
    key: str
    unbounded: bool = False

    @property
    def name(self) -> str:
        return f"{FAMILY}/{self.key}" + (f"/{UNBOUNDED}" if self.unbounded else "")

    @cached_property
    def judge_config(self) -> JudgeConfig:
        return _judge_config(self.source)

    @property
    def task_prompt(self) -> str:
        note = (family_dir() / "task_note.md").read_text(encoding="utf-8")
        config = self.judge_config
        kind = ("interactive: your program talks to the judge's interactor through stdin and stdout "
                "(flush after every line you write)" if config.interactive
                else "read the whole input from stdin, write the answer to stdout")
        note = note.format(kind=kind, time=f"{config.time_s:g}", memory=config.memory_bytes >> 20,
                           cases=len(config.cases), source_name=config.source_name)
        statement = self.source.path("statement.txt").read_text(encoding="utf-8", errors="replace")
        return f"{statement.strip()}\n\n{note.strip()}\n"

    @property
    def initial_program(self) -> Path:
        own = family_dir() / "starters" / f"{self.key}.cpp"
        if own.is_file():
            return own
        return family_dir() / ("interactive.cpp" if self.judge_config.interactive else "default.cpp")

    def baselines(self) -> dict[str, Path]:
        return {}

    def candidate_files(self) -> list[Path]:
        return []  # the candidate is a whole program: no adapter or helper module runs beside it

    def data_file(self, relative: str) -> Path:
        prefix = f"frontier-cs/algorithmic/problems/{self.key}/"
        return self.source.path(relative.removeprefix(prefix))

    def case_files(self, number: int) -> tuple[Path, Path]:
        return self.source.path(f"testdata/{number}.in"), self.source.path(f"testdata/{number}.ans")

    def missing_cases(self) -> list[int]:
        """Cases whose input or answer is not among the problem's files: they cannot be judged."""
        return [c.number for c in self.judge_config.cases
                if not (self.source.has(c.input_name) and self.source.has(c.answer_name))]

    def judge_files(self) -> tuple[Path, Path | None]:
        """The checker's (or interactor's) source and `testlib.h`, or one line saying how to get them."""
        checker = self.judge_config.checker
        role = "interactor" if self.judge_config.interactive else "checker"
        try:
            source = self.source.path(checker)
        except DataError:
            raise DataError(f"{self.name}: its {role} {checker} is missing ({self.source.where(checker)}); "
                            f"{self.source.how_to_get(checker, self.name)}") from None
        try:
            return source, self.source.testlib()
        except DataError:
            raise DataError(f"{self.name}: testlib.h, which its {role} needs, is missing "
                            f"({self.source.where(TESTLIB)}); {self.source.how_to_get(TESTLIB, self.name)}") from None

    def ensure_data(self, scenarios: list[ScenarioSpec] | None = None) -> list[Path]:
        """The files judging `scenarios` needs; without a selection, every file of the problem that exists
        (`engram data`), also for a problem none of whose cases can be judged."""
        if scenarios is None:
            missing = set(self.missing_cases())
            scenarios = [s for s in self.config.scenarios if int(s.name) not in missing]
        paths = [self.source.path("statement.txt"), self.source.path("config.yaml")]
        paths += [p for p in self.judge_files() if p is not None]
        for scenario in scenarios:
            paths += list(self.case_files(int(scenario.name)))
        return paths

    def select_scenarios(self, selection: list[str] | None = None) -> list[ScenarioSpec]:
        missing = set(self.missing_cases())
        asked = list(selection or [JUDGEABLE])
        if "all" in asked:
            asked = [JUDGEABLE if item == "all" else item for item in asked]
        chosen = super().select_scenarios(asked)
        unusable = [s.name for s in chosen if int(s.name) in missing]
        if unusable or not chosen:
            raise DataError(f"{self.name}: nothing to judge; {self.missing_note()}")
        return chosen

    def missing_note(self) -> str:
        """Which cases cannot be judged and why, or "" when all can."""
        missing = self.missing_cases()
        if not missing:
            return ""
        files = ", ".join(f"testdata/{n}.in" for n in missing)
        return (f"case(s) {', '.join(map(str, missing))} cannot be judged: their inputs ({files}) are not in "
                f"the published data (inputs over ~4 MB were left out)")

    def trusted_files(self) -> list[Path]:
        """The judge's code (the problem's own files are in the fingerprint by checksum); the family's
        starting programs and prompt note only reach agents, so changing them keeps runs comparable."""
        package = Path(__file__).parent
        return [*sorted(package.glob("*.py")), package / "launch.cc"]

    def fingerprint(self) -> str:
        digest = hashlib.sha256(("unbounded" if self.unbounded else "bounded").encode())
        for path in self.trusted_files():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        for line in self.source.checksums():
            digest.update(line.encode() + b"\n")
        return digest.hexdigest()

    @cached_property
    def scorer_class(self) -> type[Scorer]:
        from engram.frontier_cs.scorer import FrontierScorer

        return FrontierScorer


def _judge_config(source: ProblemSource) -> JudgeConfig:
    path = source.path("config.yaml")
    return parse_config(path.read_text(encoding="utf-8", errors="replace"), str(path))


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


_NOT_A_TITLE = re.compile(
    r"^(```\w*|problem|problem statement|problem description|statement|story|title|description"
    r"|problem type:.*|language:.*|this is an interactive (problem|question)\.?|.*\b(time|memory|space) limit.*)\s*:?$",
    re.IGNORECASE)
"""Statement lines that open many problems but name none (headings, limits, a notice, a code fence)."""
TITLE_WIDTH = 90


def statement_title(text: str) -> str:
    """What `engram problems` shows for a statement: its first line that names the problem, markdown
    marks dropped, cut to one listing line (the first line is often "Time limit: 1 second" or "Story")."""
    for raw in text.splitlines():
        line = raw.strip().lstrip("#").strip()
        if not line or _NOT_A_TITLE.match(line) or not re.search(r"[^\W_]", line):  # a rule of ----
            continue
        line = re.sub(r"^(problem|title|problem name)\s*:\s*", "", line, flags=re.IGNORECASE)
        return line if len(line) <= TITLE_WIDTH else line[: TITLE_WIDTH - 1].rstrip() + "…"
    return first_line(text)


def load(name: str) -> FrontierProblem:
    """`frontier_cs/<id>` or `frontier_cs/<id>/unbounded`."""
    match = _NAME.match(name.strip())
    if match is None:
        raise ProblemNotFoundError(f"no problem {name!r}: Frontier-CS problems are named {FAMILY}/<id>")
    problem_id = int(match.group(1))
    if problem_id not in upstream_manifest().problem_ids():
        raise ProblemNotFoundError(f"no problem {name!r}: Frontier-CS has no problem {problem_id} "
                                   f"(`engram problems` lists them)")
    return _build(UpstreamSource(problem_id), str(problem_id), unbounded=match.group(2) == UNBOUNDED)


def load_folder(path: Path, *, unbounded: bool = False) -> FrontierProblem:
    return _build(FolderSource(path.resolve()), path.resolve().name, unbounded=unbounded)


def _build(source: ProblemSource, key: str, *, unbounded: bool) -> FrontierProblem:
    judge_config = _judge_config(source)
    statement = source.cached_text("statement.txt") or ""
    title = first_line(statement)[:200] or f"Frontier-CS problem {key}"
    cases = judge_config.cases
    entries = {e.path: e for e in source.data_entries()}
    prefix = next((p.rsplit("/", 1)[0] for p in entries if p.endswith(f"problems/{key}/config.yaml")), "")

    def manifest_path(relative: str) -> str | None:
        path = f"{prefix}/{relative}"
        return path if path in entries else None

    scenarios = []
    for case in cases:
        paths = [p for p in (manifest_path(case.input_name), manifest_path(case.answer_name)) if p]
        scenarios.append(ScenarioSpec(name=str(case.number), description=f"test case {case.number}",
                                      data=paths if entries else None))
    judgeable = [str(c.number) for c in cases if source.has(c.input_name) and source.has(c.answer_name)]
    example = manifest_path("testdata/1.in") if "1" in judgeable else None
    per_case = (8 if judge_config.interactive else 2) * judge_config.time_s + 20 + 30
    kind = "unbounded" if unbounded else "bounded"
    try:
        config = ProblemConfig(
            name=f"{FAMILY}_{key}".lower(),
            description=title,
            score=ScoreSpec(unit=f"100 x the mean over the test cases of the checker's {kind} ratio"),
            entry_point="main",
            task="statement.txt",
            initial_program="default.cpp",
            time_limit_s=60 + per_case * max(1, len(cases)),
            scenarios=scenarios or [ScenarioSpec(name="1")],
            scenario_sets={JUDGEABLE: judgeable},
            default_scenarios=JUDGEABLE,
            data=list(entries.values()),
            agent_files=[example] if example else [],
            hidden_data=[p for c in cases if (p := manifest_path(c.answer_name))],
        )
    except ValueError as exc:
        raise ConfigError(f"{source.label}: {exc}") from None
    return FrontierProblem(root=family_dir(), config=config, source=source, key=key, unbounded=unbounded)


@dataclass(frozen=True)
class Listed:
    name: str
    kind: str
    title: str
    note: str


def list_family() -> list[Listed]:
    """Every published problem with its type and the first line of its statement, from local files only
    (nothing is fetched: a problem not yet downloaded says so)."""
    manifest = upstream_manifest()
    listed = []
    for problem_id in manifest.problem_ids():
        source = UpstreamSource(problem_id)
        files = source.entries
        kind = "interactive" if any(n.startswith("interactor.") for n in files) else "default"
        config_text = source.cached_text("config.yaml")
        missing = ""
        if config_text is not None:
            try:
                judge_config = parse_config(config_text, f"problem {problem_id}")
                kind = judge_config.kind
                absent = [c.number for c in judge_config.cases
                          if c.input_name not in files or c.answer_name not in files]
                if absent:
                    missing = f" [{len(judge_config.cases) - len(absent)} of {len(judge_config.cases)} cases judgeable]"
            except ConfigError:
                pass
        statement = source.cached_text("statement.txt")
        title = statement_title(statement) if statement else f"(not downloaded yet: engram data {FAMILY}/{problem_id})"
        listed.append(Listed(f"{FAMILY}/{problem_id}", kind, title, missing))
    return listed
