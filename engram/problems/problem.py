"""Problems: a directory that says what to optimise and how a candidate is scored.

A problem directory holds `problem.yaml` (validated by `ProblemConfig`), the task prompt agents
read, an initial program, a trusted `evaluator.py` (a `Scorer` subclass that runs in Engram's
process), an `adapter.py` (runs next to the candidate inside the sandbox and turns its result into
plain data), optional `baselines/*.py`, and a data manifest. Built-in problems live in the
`evaluators` package; any directory on disk with the same layout works the same way.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import os
import stat
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from engram.config_files import load_model
from engram.errors import ConfigError, DataError, ProblemNotFoundError
from engram.problems import data as data_files

if TYPE_CHECKING:
    from engram.evaluation.scoring import Scorer

PROBLEM_FILE = "problem.yaml"
_FENCE_LANGUAGES = {".py": "python", ".cpp": "cpp", ".cc": "cpp"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ScoreSpec(_Strict):
    direction: Literal["maximize", "minimize"] = "maximize"
    unit: str = Field(description="What the score measures, e.g. '1 / (1 + total dollars)'")
    natural_unit: str | None = Field(default=None, description="Unit of the underlying quantity, e.g. dollars")
    natural_metric: str | None = Field(default=None, description="The evaluation total holding that quantity "
                                                                 "(e.g. total_cost); reports plot results in it")
    natural_label: str | None = Field(default=None, description="Axis label for it, e.g. 'total cost ($)'")
    natural_direction: Literal["maximize", "minimize"] = Field(default="maximize",
                                                               description="Which way the quantity is better")


class ReferenceScore(_Strict):
    """A known solution's result, drawn as a horizontal line in reports (`engram report`)."""

    name: str = Field(min_length=1)
    score: float
    natural: float | None = Field(default=None, description="The same result in the natural unit")
    scenarios: list[str] | None = Field(default=None, description="Scenario or scenario-set names it was measured "
                                                                  "on; default: the problem's default selection")
    source: str = Field(default="", description="Where it comes from, e.g. baselines/steiner_tree.py or a paper")


class ScenarioSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict, description="Read by the problem's evaluator")
    data: list[str] | None = Field(default=None, description="Data files (manifest paths) this scenario reads; "
                                                             "default: all. A run fetches only what it needs.")


MAX_MB = 2**30
"""1 PiB: above any machine, and small enough that the byte counts still fit an rlimit."""


class SandboxLimits(_Strict):
    memory_mb: PositiveInt = Field(default=4096, le=MAX_MB)
    max_processes: PositiveInt = Field(default=64, le=2**22)
    output_kb: PositiveInt = Field(default=64, le=MAX_MB)
    file_size_mb: PositiveInt = Field(default=256, le=MAX_MB)


class ProblemConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = Field(max_length=200, description="One line, shown by `engram problems`")
    score: ScoreSpec
    entry_point: str = Field(description="Function the candidate program must define")
    task: str = "task.md"
    initial_program: str = "initial_program.py"
    evaluator: str = "evaluator.py"
    adapter: str = "adapter.py"
    baselines_dir: str = "baselines"
    time_limit_s: PositiveFloat = 300
    limits: SandboxLimits = SandboxLimits()
    scenarios: list[ScenarioSpec] = Field(min_length=1)
    scenario_sets: dict[str, list[str]] = Field(default_factory=dict)
    default_scenarios: str | None = Field(default=None, description="Scenario set used when none is chosen")
    data: list[data_files.DataFile] = Field(default_factory=list)
    agent_files: list[str] = Field(default_factory=list,
                                   description="Manifest paths copied into each agent's workspace under /data/")
    sandbox_files: list[str] = Field(default_factory=list,
                                     description="Files of the problem directory the adapter imports, shown to "
                                                 "candidates next to it; nothing else of the directory is")
    hidden_data: list[str] = Field(default_factory=list,
                                   description="Manifest paths the score is computed against (ground truth, "
                                               "future inputs): never shown to agents or candidates")
    references: list[ReferenceScore] = Field(default_factory=list,
                                             description="Known solutions' scores, for reports to compare against")

    @model_validator(mode="after")
    def _names_are_consistent(self) -> ProblemConfig:
        names = [s.name for s in self.scenarios]
        if len(set(names)) != len(names):
            raise ValueError(f"scenario names must be unique, got {names}")
        for set_name, members in self.scenario_sets.items():
            if set_name in names:
                raise ValueError(f"scenario set {set_name!r} has the name of a scenario")
            unknown = [m for m in members if m not in names]
            if unknown:
                raise ValueError(f"scenario set {set_name!r} names unknown scenarios {unknown}")
        if self.default_scenarios and self.default_scenarios not in self.scenario_sets:
            raise ValueError(f"default_scenarios {self.default_scenarios!r} is not a scenario set")
        paths = [d.path for d in self.data]
        if len(set(paths)) != len(paths):
            raise ValueError("each data file may be listed once")
        unknown = [p for p in self.agent_files if p not in paths]
        if unknown:
            raise ValueError(f"agent_files lists {unknown}, which the data manifest does not list")
        unknown = [p for p in self.hidden_data if p not in paths]
        if unknown:
            raise ValueError(f"hidden_data lists {unknown}, which the data manifest does not list")
        shown = [p for p in self.hidden_data if p in self.agent_files]
        if shown:
            raise ValueError(f"{shown} cannot be both hidden_data and agent_files")
        bad = [f for f in self.sandbox_files if "/" in f or not f.endswith(".py") or f == self.evaluator]
        if bad:
            raise ValueError(f"sandbox_files must name Python files beside the adapter, not the evaluator: {bad}")
        for scenario in self.scenarios:
            unknown = [p for p in scenario.data or [] if p not in paths]
            if unknown:
                raise ValueError(f"scenario {scenario.name!r} reads {unknown}, which the data manifest does not list")
        for reference in self.references:
            unknown = [s for s in reference.scenarios or [] if s not in names and s not in self.scenario_sets
                       and s != "all"]
            if unknown:
                raise ValueError(f"reference {reference.name!r} names unknown scenarios {unknown}")
        return self


@dataclass(frozen=True)
class Problem:
    """A loaded problem directory."""

    root: Path
    config: ProblemConfig

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def description(self) -> str:
        return self.config.description

    def file(self, relative: str) -> Path:
        return self.root / relative

    @property
    def task_prompt(self) -> str:
        return self.file(self.config.task).read_text(encoding="utf-8")

    @property
    def initial_program(self) -> Path:
        return self.file(self.config.initial_program)

    @property
    def adapter_path(self) -> Path:
        return self.file(self.config.adapter)

    @property
    def language(self) -> str:
        """The candidates' language as a Markdown code-fence label (`python`; `cpp` for C++ problems)."""
        return _FENCE_LANGUAGES.get(self.initial_program.suffix, "python")

    def workspace_name(self, stem: str) -> str:
        """A program's file name in an agent's workspace: `initial_program.py`, or `.cpp` for C++ problems."""
        return f"{stem}{self.initial_program.suffix or '.py'}"

    def baselines(self) -> dict[str, Path]:
        """Known reference algorithms, by file stem, for agents to read and for comparisons."""
        directory = self.file(self.config.baselines_dir)
        if not directory.is_dir():
            return {}
        return {p.stem: p for p in sorted(directory.glob("*.py")) if not p.name.startswith("_")}

    def data_file(self, relative: str) -> Path:
        """Verified local path of a manifest entry, fetched on first use."""
        for entry in self.config.data:
            if entry.path == relative:
                return data_files.resolve(entry)
        raise DataError(f"problem {self.name}: {relative} is not in the data manifest of {self.root / PROBLEM_FILE}")

    def ensure_data(self, scenarios: list[ScenarioSpec] | None = None) -> list[Path]:
        """Fetch and verify the data files: all of them, or only those the given scenarios read."""
        wanted: set[str] | None = None
        if scenarios is not None and all(s.data is not None for s in scenarios):
            wanted = {path for s in scenarios for path in s.data or []}
        return [data_files.resolve(e) for e in self.config.data if wanted is None or e.path in wanted]

    def select_scenarios(self, selection: list[str] | None = None) -> list[ScenarioSpec]:
        """Scenarios by name or scenario-set name, in the problem's order; all when none given."""
        if not selection:
            if self.config.default_scenarios:
                selection = [self.config.default_scenarios]
            else:
                return list(self.config.scenarios)
        by_name = {s.name: s for s in self.config.scenarios}
        wanted: set[str] = set()
        for item in selection:
            if item in self.config.scenario_sets:
                wanted.update(self.config.scenario_sets[item])
            elif item in by_name or item == "all":
                wanted.update(by_name if item == "all" else [item])
            else:
                choices = sorted([*by_name, *self.config.scenario_sets, "all"])
                close = difflib.get_close_matches(str(item), choices, n=1, cutoff=0.75)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"problem {self.name} has no scenario or scenario set {item!r}{hint}; "
                                  f"choose from: {', '.join(choices)}")
        return [s for s in self.config.scenarios if s.name in wanted]

    def references_for(self, selection: list[str] | None) -> list[ReferenceScore]:
        """The declared references measured on the same scenarios as `selection`: scores of other
        scenario sets are not comparable."""
        wanted = [s.name for s in self.select_scenarios(selection)]
        return [r for r in self.config.references if [s.name for s in self.select_scenarios(r.scenarios)] == wanted]

    def candidate_files(self) -> list[Path]:
        """The problem's files a candidate's sandbox sees: the adapter and the modules it imports."""
        return [self.adapter_path, *(self.file(name) for name in self.config.sandbox_files)]

    def trusted_files(self) -> list[Path]:
        """Files whose content decides a score: any change to them invalidates comparisons."""
        files = [self.root / PROBLEM_FILE, self.file(self.config.evaluator), self.adapter_path]
        files += sorted(p for p in self.root.glob("*.py") if p not in files)
        return files

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.trusted_files():
            digest.update(path.name.encode() + b"\0" + _trusted_bytes(path) + b"\0")
        return digest.hexdigest()

    @cached_property
    def scorer_class(self) -> type[Scorer]:
        from engram.evaluation.scoring import Scorer

        path = self.file(self.config.evaluator)
        module_name = f"engram_problem_{self.name.replace('-', '_')}_evaluator"
        module = _import_file(module_name, path)
        found = [obj for obj in vars(module).values()
                 if inspect.isclass(obj) and issubclass(obj, Scorer) and obj is not Scorer
                 and obj.__module__ == module_name]
        if len(found) != 1:
            raise ConfigError(f"{path}: must define exactly one subclass of engram.evaluation.Scorer, "
                              f"found {len(found)}")
        return found[0]

    def make_scorer(self) -> Scorer:
        return self.scorer_class(self)


def _trusted_bytes(path: Path) -> bytes:
    """A trusted file's content; a FIFO, device or directory put in its place (possible only without
    isolation) counts as changed content instead of blocking the runner."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b"\0not a regular file\0"
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read()
    finally:
        os.close(fd)


def _import_file(module_name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def load_problem_module(anchor_file: str | Path, stem: str) -> ModuleType:
    """Import `stem.py` from the directory of `anchor_file` (pass `__file__`).

    Problem directories are not packages, so a trusted evaluator cannot import its helper modules
    (simulators, workloads, data readers) with a plain import; this gives each one a name of its own,
    `engram_problem_<directory>_<stem>`, so helpers of different problems never collide. Only for
    trusted code: the sandboxed side (adapter.py) runs without Engram installed.
    """
    path = Path(anchor_file).resolve().with_name(f"{stem}.py")
    if not path.is_file():
        raise ConfigError(f"{path}: no such module next to {Path(anchor_file).name}")
    directory = path.parent.name.replace("-", "_")
    return _import_file(f"engram_problem_{directory}_{stem}", path)


def builtin_problems_dir() -> Path:
    import evaluators

    return Path(evaluators.__file__).resolve().parent


def load_problem(name_or_path: str | Path) -> Problem:
    """Load a built-in problem by name, or a problem directory (or its problem.yaml) by path."""
    from engram.frontier_cs import family

    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.name == PROBLEM_FILE and candidate.is_file():
        candidate = candidate.parent
    if (candidate / PROBLEM_FILE).is_file():
        root = candidate.resolve()
    elif "/" not in text and (builtin_problems_dir() / text / PROBLEM_FILE).is_file():
        root = builtin_problems_dir() / text
    elif family.is_family_name(text):
        return family.load(text)
    elif family.is_problem_folder(candidate):
        return family.load_folder(candidate)
    else:
        known = ", ".join(p.name for p in list_problems()) or "none"
        raise ProblemNotFoundError(
            f"no problem {text!r}: not a built-in problem (built-in: {known}; Frontier-CS: frontier_cs/<id>) and "
            f"not a directory containing {PROBLEM_FILE}"
        )
    config = load_model(root / PROBLEM_FILE, ProblemConfig)
    problem = Problem(root=root, config=config)
    for relative in (config.task, config.initial_program, config.evaluator, config.adapter):
        if not problem.file(relative).is_file():
            raise ConfigError(f"{root / PROBLEM_FILE}: names {relative}, which does not exist in {root}")
    return problem


def list_problems() -> list[Problem]:
    problems = []
    for directory in sorted(builtin_problems_dir().iterdir()):
        if (directory / PROBLEM_FILE).is_file():
            problems.append(load_problem(directory))
    return problems
