"""OpenEvolve's configuration, generated from an Engram spec.

Only fields that both tested versions of the package (0.4.0 and 0.4.1) know are set, by their
dataclass names, so that a renamed field fails loudly instead of being dropped. Settings that
belong to Engram are fixed here: models are reached through the runner's endpoint (sampling
parameters come from the spec's `model.params`, not from OpenEvolve's `llm` section), evaluations
are never retried and never cascaded, LLM feedback is off, and OpenEvolve's own evaluation timeout
is only a backstop above the sandbox's limit (its timer cannot kill the thread it abandons).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openevolve.config import Config

    from engram.spec import OpenEvolveMethod

_EVALUATION_TIMEOUT_MARGIN_S = 120
_WORKER_TASKS = 1_000_000
"""Setting `max_tasks_per_child` makes the worker pool use the 'spawn' start method (Python 3.11+):
workers start clean instead of forking a runner that holds threads and locks. The number is large
so that workers are, in practice, never replaced."""


@dataclass(frozen=True)
class SessionPaths:
    """Where one OpenEvolve session (the first run or a resume) keeps its own files."""

    root: Path

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def db_path(self) -> Path:
        return self.root / "db"

    @property
    def evaluation_file(self) -> Path:
        return self.root / "evaluate.py"

    @property
    def trace(self) -> Path:
        return self.output_dir / "evolution_trace.jsonl"

    @property
    def worker_log(self) -> Path:
        return self.output_dir / "logs" / "workers.log"


@dataclass(frozen=True)
class Connection:
    """How OpenEvolve's workers reach the runner's model."""

    api_base: str
    api_key: str
    model_name: str
    timeout_s: int


def worker_count(settings: OpenEvolveMethod) -> int:
    return settings.workers or os.cpu_count() or 1


def build_config(settings: OpenEvolveMethod, *, paths: SessionPaths, connection: Connection, system_message: str,
                 seed: int, evaluation_limit_s: float) -> Config:
    """The complete OpenEvolve `Config` for one session."""
    from openevolve.config import (
        Config,
        DatabaseConfig,
        EvaluatorConfig,
        EvolutionTraceConfig,
        LLMConfig,
        LLMModelConfig,
        PromptConfig,
    )

    llm = LLMConfig(api_base=connection.api_base, api_key=connection.api_key, timeout=connection.timeout_s,
                    retries=0, retry_delay=0, models=[LLMModelConfig(name=connection.model_name, weight=1.0)])
    prompt = PromptConfig(system_message=system_message, num_top_programs=settings.num_top_programs,
                          num_diverse_programs=settings.num_diverse_programs)
    database = DatabaseConfig(
        db_path=str(paths.db_path), in_memory=True, population_size=settings.population_size,
        archive_size=settings.archive_size, num_islands=settings.islands,
        elite_selection_ratio=settings.elite_selection_ratio, exploration_ratio=settings.exploration_ratio,
        exploitation_ratio=settings.exploitation_ratio, migration_interval=settings.migration_interval,
        migration_rate=settings.migration_rate, random_seed=seed,
    )
    evaluator = EvaluatorConfig(timeout=int(evaluation_limit_s + _EVALUATION_TIMEOUT_MARGIN_S), max_retries=0,
                                cascade_evaluation=False, parallel_evaluations=worker_count(settings),
                                use_llm_feedback=False)
    trace = EvolutionTraceConfig(**_known(EvolutionTraceConfig, enabled=True, format="jsonl", include_code=True,
                                          include_prompts=False, include_failures=True, buffer_size=1,
                                          output_path=str(paths.trace)))
    return Config(max_iterations=settings.iterations, checkpoint_interval=settings.checkpoint_interval,
                  log_level="INFO", random_seed=seed, llm=llm, prompt=prompt, database=database,
                  evaluator=evaluator, evolution_trace=trace, diff_based_evolution=settings.diff_based,
                  max_code_length=settings.max_code_length, max_tasks_per_child=_WORKER_TASKS)


def _known(cls: type, **values: Any) -> dict[str, Any]:
    """Drop options an older OpenEvolve lacks (0.4.0 has no failure trace); they only add records."""
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in values.items() if key in names}
