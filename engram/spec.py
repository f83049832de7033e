"""Experiment specs: one YAML file declares a whole experiment.

A spec names the problem, the method and its settings, the model, the budget, how many seeds to
run, the sandbox, tracking and output. It is validated strictly (unknown keys are errors naming
the file and the field) so that a typo can never silently change an experiment, and
`--set a.b=value` overrides go through the same validation and are recorded in the resolved
spec written into the run directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from engram.config_files import format_validation_error, read_yaml_mapping
from engram.errors import ConfigError, EngramError

SCRIPTED_MODEL = "scripted"


MAX_RUNS = 10_000
"""Seeds of one spec: far beyond any sweep, small enough that the list of seeds is cheap."""


class _Strict(BaseModel):
    # inf and nan are not limits or targets: `.inf` minutes would never stop, a `.nan` target never hits.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ProblemSettings(_Strict):
    name: str = Field(description="A built-in problem name, or a path to a problem directory (relative to the spec)")
    scenarios: list[str] | None = Field(default=None, description="Scenario or scenario-set names; default: all")
    time_limit_s: PositiveFloat | None = Field(default=None, description="Per-evaluation limit; default: the problem's")
    members: list[str | int] | str | None = Field(
        default=None, description="With a problem family as name (frontier_cs): one run per member, a list of ids "
                                  "or a tag (all, default, interactive)")


class _MethodBase(_Strict):
    """Settings every method has, so that all methods can be compared on equal terms."""

    reference_solutions: bool = Field(default=False, description="Show the agents the problem's known solutions "
                                      "(its baselines/, e.g. cloudcast's MILP) under /baselines/; the reference "
                                      "never does (it has separate, named variants for that)")


class _AgentMethod(_MethodBase):
    """Settings of the methods whose agents score programs with the `run_simulation` tool."""

    simulation_output: Literal["head", "tail"] = Field(
        default="head", description="Which part of a long program output run_simulation shows the agent (2,000 "
        "characters of stdout, 1,000 of stderr): its start, as in the reference, or its end (tracebacks and "
        "final totals are there)")
    simulation_details: bool = Field(
        default=False, description="run_simulation also reports the kind of error, the best score so far, each "
        "scenario's status and metrics, and the totals (the reference: the score or the error alone; all of it is "
        "in the experiment's evaluation.json)")
    simulation_reply: Literal["report", "result_file"] = Field(
        default="report", description="What run_simulation answers: a report (score or error, where the "
        "experiment is stored, the program's output), as the reference's Engram and single agent; or, as its tree "
        "search, only the path of a per-scenario results table copied into the workspace (or the error)")


class EngramMethod(_AgentMethod):
    """The Engram method: a chain of agents handing on a Research Digest and an Archive. Defaults: the
    reference's (mit-nms/Engram): first message = the task, the digest a file the agent opens,
    summaries appended raw."""

    name: Literal["engram"] = "engram"
    digest: bool = Field(default=True, description="Ask each agent for a summary and keep the Research Digest "
                                                   "of them (ablation: false -- no summaries at all)")
    archive: bool = Field(default=True, description="Keep earlier agents' workspaces readable (ablation: false -- "
                                                    "each agent sees only its own experiments, no best program)")
    handover_in_first_message: bool = Field(default=False, description="Engram's richer handover: put the digest "
                                            "and the best program's code in the first message and the best program "
                                            "at /best_program.py (the reference's first message is the task alone)")
    digest_max_tokens: PositiveInt | None = Field(default=None, description="Distil the digest by one model call "
                                                  "once it grows past this; default: never (the reference appends "
                                                  "summaries raw)")
    max_steps_per_agent: PositiveInt = Field(default=1000, description="Model/tool steps of one stream of an agent "
                                                                       "before it is cut (the reference's 1000)")
    max_stream_errors: PositiveInt = Field(default=5, description="Consecutive failed streams (a model error that "
                                           "retries did not cure, a step limit) that stop an agent; after each "
                                           "earlier one the agent is rebuilt and continues its conversation")


class SingleAgentMethod(_AgentMethod):
    """One agent alone (the paper's "Glia"): Engram's tools and sandbox, no digest, no other agents'
    archive; continued with "keep going" messages. budget.max_agents and minutes_per_agent do not apply."""

    name: Literal["single_agent"] = "single_agent"
    max_minutes: PositiveFloat = Field(default=60, description="Wall-clock time of the agent's whole session "
                                                               "(all continuations), across resumes")
    patience: PositiveInt = Field(default=10, description="Stop after this many consecutive continuations "
                                                          "that bring no new best score")
    max_continuations: PositiveInt | None = Field(default=None, description="Stop after this many continuations "
                                                                            "in all; default: no limit")
    max_steps_per_turn: PositiveInt = Field(default=1000, description="Model/tool steps of one stream before it is "
                                            "cut (the reference's 1000); a cut stream rebuilds the agent")


class TreeSearchMethod(_AgentMethod):
    """A tree of programs: each round expands the best node with a short agent (budget.minutes_per_agent)
    whose prompt carries its ancestors' summaries; the agent's best program becomes a child.
    budget.max_agents does not apply (rounds does)."""

    name: Literal["tree_search"] = "tree_search"
    rounds: PositiveInt = Field(default=10, description="Expansion rounds, one agent each")
    ancestor_summaries: NonNegativeInt = Field(default=3, description="Summaries of the expanded node and its "
                                                                      "nearest ancestors given to the agent")
    epsilon: float = Field(default=0.0, ge=0, le=1, description="Probability of expanding a uniformly random node "
                                                                "instead of the best one (0: always the best)")
    simulation_reply: Literal["report", "result_file"] = Field(
        default="result_file", description="What run_simulation answers: as the reference's tree search, only the "
        "path of a per-scenario results table copied into the workspace (or the error); report: Engram's report "
        "(score or error, where the experiment is stored, the program's output)")
    parent_in_first_message: bool = Field(default=False, description="Engram's richer first message: the task "
                                          "first, then the summaries, then the expanded node's code (the "
                                          "reference's: the summaries, then the task; the code only as a file)")
    max_steps_per_agent: PositiveInt = Field(default=1000, description="Model/tool steps of one turn of an agent "
                                                                       "before the turn is cut")
    max_turns: PositiveInt = Field(default=40, description="Turns of a round's agent: after a turn that ends without "
                                   "its summary it is told to continue (the reference's 40 iterations)")
    patience: PositiveInt = Field(default=10, description="End a round's agent after a turn once this many of its "
                                  "simulations in a row brought no new best of its own (the reference's 10)")
    max_minutes: PositiveFloat | None = Field(default=None, description="Wall-clock budget of a seed (all rounds), "
                                                                        "across resumes; default: none")


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _LLMCallMethod(_MethodBase):
    """Settings shared by the methods that ask a model for whole programs (one-shot, best-shot, evolution)."""

    max_dollars: PositiveFloat | None = Field(default=30, description="The method's own dollar cap for a seed (the "
                                              "reference's $30); budget.max_dollars, if lower, still applies")
    workers: PositiveInt = Field(default_factory=available_cores,
                                 description="Proposals (a model call and its evaluation) in flight at once; "
                                             "default: the number of cores")
    answer_retries: NonNegativeInt = Field(default=2, description="Times an unusable answer is sent back to the "
                                                                  "model before the proposal counts as failed")
    max_minutes: PositiveFloat | None = Field(default=None, description="Wall-clock budget of a seed, across "
                                                                        "resumes; default: none")


class OneShotMethod(_LLMCallMethod):
    """Independent programs from the task prompt; the best of them is the result."""

    name: Literal["one_shot"] = "one_shot"
    samples: PositiveInt = Field(default=100, description="Programs to ask for")


class BestShotMethod(_LLMCallMethod):
    """The paper's "FunSearch": each step shows a few of the best programs so far, in ascending score
    order, and asks for a better one."""

    name: Literal["best_shot"] = "best_shot"
    initial_samples: PositiveInt = Field(default=3, description="Programs from the task prompt alone, first")
    iterations: NonNegativeInt = Field(default=100, description="Improvement steps after the initial samples")
    database_size: PositiveInt = Field(default=20, description="Best programs kept to draw from")
    shown_programs: PositiveInt = Field(default=3, description="Programs drawn and shown in each step's prompt")


class EvolutionMethod(_LLMCallMethod):
    """Evolution of Heuristics: a population with elitism, mutation and crossover operators."""

    name: Literal["evolution"] = "evolution"
    population_size: int = Field(default=20, ge=2, description="N: programs of generation 0; each generation "
                                                               "makes N - elitism children")
    elitism: PositiveInt = Field(default=2, description="M: parents kept, the best of parents and children")
    mutation_rate: float = Field(default=0.1, ge=0, le=1, description="Probability that a child mutates one "
                                                                      "parent instead of crossing two")
    generations: NonNegativeInt = Field(default=100, description="Generations after generation 0")
    tournament_size: PositiveInt = Field(default=3, description="Parents drawn per tournament; the best wins")

    @model_validator(mode="after")
    def _elitism_below_population(self) -> EvolutionMethod:
        if self.elitism >= self.population_size:
            raise ValueError(f"elitism ({self.elitism}) must be smaller than population_size "
                             f"({self.population_size}): each generation makes population_size - elitism children")
        return self


class OpenEvolveMethod(_MethodBase):
    """OpenEvolve, the `openevolve` package (pip install 'engram[openevolve]'): islands of programs in
    MAP-Elites grids, evolved by model-written diffs. Defaults: the reference's cloudcast configuration."""

    name: Literal["openevolve"] = "openevolve"
    iterations: PositiveInt = Field(default=100, description="Iterations (one model call, at most one evaluation "
                                                             "each), across resumes")
    islands: PositiveInt = Field(default=3, description="Separately evolving populations")
    population_size: PositiveInt = Field(default=50, description="Programs kept in OpenEvolve's database")
    archive_size: PositiveInt = Field(default=20, description="Elite programs kept for exploitation")
    elite_selection_ratio: float = Field(default=0.2, ge=0, le=1, description="Share of elites among inspirations")
    exploration_ratio: float = Field(default=0.2, ge=0, le=1, description="Chance a parent is drawn at random "
                                                                          "from its island")
    exploitation_ratio: float = Field(default=0.7, ge=0, le=1, description="Chance a parent is drawn from the "
                                                                           "elite archive (else fitness-weighted)")
    migration_interval: PositiveInt = Field(default=50, description="Generations between migrations of islands")
    migration_rate: float = Field(default=0.1, ge=0, le=1, description="Share of an island that migrates")
    diff_based: bool = Field(default=True, description="Ask for SEARCH/REPLACE diffs (false: whole programs)")
    num_top_programs: NonNegativeInt = Field(default=3, description="Best programs shown in each prompt")
    num_diverse_programs: NonNegativeInt = Field(default=2, description="Diverse programs shown as inspirations")
    max_code_length: PositiveInt = Field(default=10000, description="Longer children are discarded unevaluated")
    checkpoint_interval: PositiveInt = Field(default=10, description="Iterations between OpenEvolve checkpoints "
                                                                     "(its own record; resume uses the archive)")
    workers: PositiveInt = Field(default=4, description="Iterations in flight at once (OpenEvolve's worker "
                                 "processes and parallel evaluations; the reference's 4)")
    evaluation_timeout_s: PositiveFloat | None = Field(default=60, description="Wall-clock limit of one evaluation "
                                                       "(the reference's 60 s), enforced by the sandbox; the "
                                                       "problem's own limit if lower; null: the problem's limit")
    max_minutes: PositiveFloat | None = Field(default=None, description="Wall-clock budget of a seed, across "
                                                                        "resumes; default: none")

    @model_validator(mode="after")
    def _ratios_fit(self) -> OpenEvolveMethod:
        if self.exploration_ratio + self.exploitation_ratio > 1:
            raise ValueError(f"exploration_ratio + exploitation_ratio must be at most 1, got "
                             f"{self.exploration_ratio} + {self.exploitation_ratio}")
        return self


MethodSettings = Annotated[
    EngramMethod | SingleAgentMethod | TreeSearchMethod | OneShotMethod | BestShotMethod | EvolutionMethod
    | OpenEvolveMethod,
    Field(discriminator="name"),
]


class ModelSettings(_Strict):
    id: str = Field(description="A litellm model id such as openai/o3, anthropic/claude-sonnet-4-5, ollama/llama3, "
                                "or 'scripted' for a model that plays back a file of turns")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Provider parameters: temperature, reasoning_effort, ...")
    api_base: str | None = Field(default=None, description="Base URL of an OpenAI-compatible or local server")
    api_key_env: str | None = Field(default=None,
                                    description="Environment variable holding the key, if not the provider's usual one")
    script: Path | None = Field(default=None, description="For 'scripted': the file of turns (relative to the spec)")
    price_as: str | None = Field(default=None,
                                 description="Price calls as this litellm model (e.g. for a scripted or local model)")
    api: Literal["auto", "chat", "responses"] = Field(
        default="auto", description="Chat Completions or the Responses API; auto: the Responses API for OpenAI "
                                    "reasoning models (with reasoning summaries, reasoning kept across turns)")
    timeout_s: PositiveFloat = Field(default=600, description="HTTP timeout of one model call (shortened to the "
                                                              "time an agent has left)")
    max_retries: NonNegativeInt = Field(default=6, description="Retries of a transient provider error (Engram's "
                                                               "only retry layer)")

    @model_validator(mode="after")
    def _script_only_for_scripted(self) -> ModelSettings:
        if self.id == SCRIPTED_MODEL and self.script is None:
            raise ValueError("the scripted model needs `script:` (a file of turns)")
        if self.id != SCRIPTED_MODEL and self.script is not None:
            raise ValueError("`script:` is only for model id 'scripted'")
        return self


class BudgetSettings(_Strict):
    max_agents: PositiveInt = 3
    minutes_per_agent: PositiveFloat = 60
    max_evaluations: PositiveInt | None = None
    max_dollars: PositiveFloat | None = None
    target_score: float | None = Field(default=None, description="Stop once the best score reaches this")


class SandboxSettings(_Strict):
    backend: Literal["auto", "docker", "bwrap", "process"] = "auto"
    image: str | None = Field(default=None, description="Docker image for the 'docker' backend, pinned by content: "
                              "repo@sha256:<digest> or sha256:<image id> (a tag works but is warned about); "
                              "default: $ENGRAM_SANDBOX_IMAGE or engram-sandbox:latest (`engram sandbox build`)")
    shell_timeout_s: PositiveFloat = Field(default=300, description="Limit for one shell command of an agent")
    shell_memory_mb: PositiveInt = Field(default=4096, le=2**30)


class TrackingSettings(_Strict):
    mlflow: bool = True
    uri: str | None = Field(default=None, description="MLflow tracking URI; default: SQLite under ./mlruns")
    experiment: str | None = Field(default=None, description="MLflow experiment; default: the problem name")


class OutputSettings(_Strict):
    dir: Path = Field(default=Path("runs"), description="Runs go to <dir>/<spec name>/<run id>/")


class ExecutorSettings(_Strict):
    """Where and how many runs execute at once; not part of a run's identity (changing it resumes the same run)."""

    name: Literal["local", "ray"] = Field(default="local", description="local: a pool of worker processes on this "
                                          "machine; ray: one Ray task per run on a cluster (pip install 'engram[ray]')")
    jobs: PositiveInt | None = Field(default=None, description="local: at most this many runs at once; "
                                     "default: the number of CPU cores")
    address: str | None = Field(default=None, description="ray: the cluster address; default: $RAY_ADDRESS or auto")
    cpus_per_run: PositiveFloat = Field(default=1, description="ray: CPUs each run's task declares")
    docker_resource: str = Field(default="engram_docker", description="ray: custom resource a run with the docker "
                                 "sandbox takes one unit of (caps concurrent Docker runs per node)")
    max_retries: NonNegativeInt = Field(default=2, description="Restarts of a run whose worker or node died "
                                        "(it resumes from its archive)")
    max_dollars: PositiveFloat | None = Field(default=None, description="Cap on the dollars of all runs launched "
                                              "together (their sum), on top of each run's budget.max_dollars")
    fork_server: bool = Field(default=True, description="Fork each run from a server that has imported Engram's "
                              "libraries once (per sweep, or per Ray worker); false: a fresh Python per run (slower "
                              "start; each run uses the Engram installed when it starts)")


class Spec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="Names the folder <output.dir>/<name>/: letters, digits, _ . - "
                                  "(not starting with . or -)")
    description: str = ""
    problem: ProblemSettings
    method: MethodSettings = Field(default_factory=EngramMethod)
    model: ModelSettings
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    runs: PositiveInt = Field(default=1, le=MAX_RUNS, description="Number of seeds")
    first_seed: NonNegativeInt = Field(default=0, le=2**31)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)

    @model_validator(mode="before")
    @classmethod
    def _method_defaults_to_engram(cls, data: Any) -> Any:
        """`method: {digest: false}` means the Engram method; other methods must be named."""
        if isinstance(data, dict) and isinstance(data.get("method"), dict) and "name" not in data["method"]:
            data = {**data, "method": {"name": "engram", **data["method"]}}
        return data

    @property
    def max_dollars(self) -> float | None:
        """A seed's dollar cap: budget.max_dollars, or the method's own cap (one-shot, best-shot and
        evolution: the reference's $30) if that is lower."""
        caps = [self.budget.max_dollars, getattr(self.method, "max_dollars", None)]
        known = [cap for cap in caps if cap is not None]
        return min(known) if known else None

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.runs))

    def to_plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def apply_overrides(data: dict[str, Any], overrides: list[str], *, source: str) -> dict[str, Any]:
    """Set dotted keys from `key.path=value` strings; values are parsed as YAML (5, true, [a, b])."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: override {item!r} must look like section.field=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _is_family_name(name: str) -> bool:
    from engram.frontier_cs.family import is_family_name

    return is_family_name(name)


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make file paths in the spec absolute relative to the spec file, so the run does not depend on cwd."""
    problem = data.get("problem")
    if isinstance(problem, dict) and isinstance(problem.get("name"), str):
        name = problem["name"]
        if ("/" in name or name.startswith(".")) and not _is_family_name(name):
            problem["name"] = str((base / name).resolve())
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("script"), str):
        model["script"] = str((base / model["script"]).resolve())
    # Where runs go stays relative to the working directory, as documented, but is made absolute
    # here so that nothing below (sandbox mounts, the archive link of the process backend) depends
    # on the directory a later process happens to run in.
    output = data.get("output")
    directory = output.get("dir", "runs") if isinstance(output, dict) else "runs" if output is None else None
    if isinstance(directory, (str, Path)):
        data["output"] = {**(output or {}), "dir": str(Path(directory).expanduser().absolute())}


def parse_spec(data: dict[str, Any], *, source: str, base: Path, overrides: list[str] = ()) -> Spec:
    data = apply_overrides(dict(data), list(overrides), source=source)
    _resolve_paths(data, base)
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        where = source if not overrides else f"{source} (with --set {' '.join(overrides)})"
        raise ConfigError(format_validation_error(where, exc, Spec)) from None


def load_spec(path: Path, overrides: list[str] = ()) -> Spec:
    """Load and validate a spec file, applying `--set` overrides; errors name file and field."""
    data = read_yaml_mapping(path)
    data.setdefault("name", path.stem)
    return parse_spec(data, source=str(path), base=path.resolve().parent, overrides=list(overrides))


def check_spec(path: Path, overrides: list[str] = ()) -> str:
    """Everything `engram validate` can check without running: the file, its problem and scenarios,
    the scripted model's script. Errors name the spec file and the field; returns a one-line summary."""
    from engram.problems.problem import load_problem

    spec = load_spec(path, list(overrides))
    if spec.problem.members is not None:
        from engram.frontier_cs.selection import member_names

        names = member_names(spec.problem.name, spec.problem.members)
        return (f"{spec.name}: {len(names)} problems of {spec.problem.name}, {spec.method.name}, {spec.model.id}, "
                f"{spec.runs} seed(s) each")
    try:
        problem = load_problem(spec.problem.name)
    except EngramError as exc:
        raise ConfigError(f"{path}: problem.name: {exc}") from None
    try:
        problem.select_scenarios(spec.problem.scenarios)
    except EngramError as exc:
        raise ConfigError(f"{path}: problem.scenarios: {exc}") from None
    if spec.model.id != SCRIPTED_MODEL:
        from engram.models.llm import unknown_model

        unknown = unknown_model(spec.model.id, spec.model.api_base)
        if unknown:
            raise ConfigError(f"{path}: {unknown}")
    if spec.model.id == SCRIPTED_MODEL and spec.model.script is not None:
        from engram.models.llm import ScriptedChatModel

        try:
            ScriptedChatModel(script=spec.model.script, agent=0)
        except EngramError as exc:
            raise ConfigError(f"{path}: model.script: {exc}") from None
    budget = spec.budget
    agents = "agent" if budget.max_agents == 1 else "agents"
    chain = (f", up to {budget.max_agents} {agents} of {budget.minutes_per_agent:g} min"
             if spec.method.name == "engram" else "")  # other methods do not run a chain of agents
    return f"{spec.name}: {problem.name}, {spec.method.name}, {spec.model.id}, {spec.runs} seed(s){chain}"
