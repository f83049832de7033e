"""The documentation cannot go stale: the site builds with warnings as errors, every page is in the
navigation, and every shell command shown in a ```console block (README.md and docs/) runs offline
with the exit code the page claims.

Convention (see docs/development.md): a command line starts with `$ `; a line `# exit: N` right
after it sets another expected exit code; the HTML comment `<!-- docs-test: skip (reason) -->`
before a block exempts it (an API key, network, a cluster, a server, a long run). Each page's
commands run in order in one scratch directory that mirrors the repository, so a page can refer
to what an earlier command of the same page produced and nothing lands in the checkout.

The output shown under a command, if any, must be what it prints (stdout and stderr together, blank
lines and runs of spaces ignored), line for line from the first line to the last: `…` inside a
line stands for any text (a time, a path), and a line `...` for any number of lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
GENERATED_PAGES = {"spec-reference.md", "cli-reference.md"}
"""Pages the build hook (docs/hooks/reference.py) generates from the code; they are not in docs/."""

SKIP_MARKER = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^`]*)$")
EXIT_LINE = re.compile(r"^#\s*exit:\s*(?P<code>-?\d+)\s*$")
SCRATCH_EXCLUDES = {".git", "runs", "mlruns", "site", "results", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str
    exit_code: int
    shown: tuple[str, ...] = ()
    """The output the page shows for the command (empty: not checked)."""

    def output_pattern(self) -> re.Pattern[str] | None:
        if not self.shown:
            return None
        parts = []
        for line in self.shown:
            if line == "...":
                parts.append(r"(?:[^\n]*\n)*?")
            else:
                parts.append(".*?".join(re.escape(piece) for piece in line.split("…")) + r"\n")
        return re.compile("".join(parts))


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    commands: tuple[Command, ...]
    skip_reason: str | None


def doc_pages() -> list[Path]:
    return [REPO / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)]


def console_blocks(path: Path) -> list[Block]:
    """The ```console blocks of a page with their commands, expected exit codes and skip markers."""
    page = str(path.relative_to(REPO))
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(opening["fence"]):
            end += 1
        if opening["info"].strip().split(" ")[0] == "console":
            body = [line[len(opening["indent"]):] for line in lines[index + 1:end]]
            blocks.append(Block(page, index + 1, _commands(page, index + 2, body), _skip_reason(lines, index)))
        index = end + 1
    return blocks


def _skip_reason(lines: list[str], fence_index: int) -> str | None:
    previous = fence_index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    if previous < 0:
        return None
    marker = SKIP_MARKER.search(lines[previous])
    return marker["reason"].strip() if marker else None


def _commands(page: str, first_line: int, body: list[str]) -> tuple[Command, ...]:
    commands: list[Command] = []
    for offset, line in enumerate(body):
        if not line.startswith("$ "):
            continue
        following = body[offset + 1:]
        expected = EXIT_LINE.match(following[0].strip()) if following else None
        if expected:
            following = following[1:]
        shown = []
        for out in following:
            if out.startswith("$ "):
                break
            if out.strip():
                shown.append(normalise(out))
        commands.append(Command(page, first_line + offset, line[2:].strip(), int(expected["code"]) if expected else 0,
                                tuple(shown)))
    return tuple(commands)


def normalise(line: str) -> str:
    return " ".join(line.split())


def normalised_output(text: str) -> str:
    return "".join(normalise(line) + "\n" for line in text.splitlines() if line.strip())


def runnable_pages() -> list[Path]:
    return [page for page in doc_pages() if any(not b.skip_reason for b in console_blocks(page))]


def test_site_builds_offline_with_warnings_as_errors(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link, anchor, include or page missing from the nav fails."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "spec-reference" / "index.html").is_file()
    reference = (tmp_path / "site" / "spec-reference" / "index.html").read_text()
    assert "max_dollars" in reference and "ExecutorSettings" in reference


def test_theme_fetches_nothing_from_the_network() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert config["theme"].get("font") is False, "Material would load Google Fonts"
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config.get("plugins", [])]
    assert not {"social", "privacy", "git-revision-date-localized"} & set(plugins)


def _nav_pages(node: object) -> set[str]:
    if isinstance(node, str):
        return {node}
    if isinstance(node, list):
        return set().union(*(_nav_pages(item) for item in node)) if node else set()
    if isinstance(node, dict):
        return set().union(*(_nav_pages(value) for value in node.values()))
    return set()


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = _nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    on_disk = {str(p.relative_to(DOCS)) for p in doc_pages()[1:]}
    assert on_disk - nav == set(), "add these pages to mkdocs.yml's nav"
    assert nav - on_disk - GENERATED_PAGES == set(), "mkdocs.yml's nav names pages that do not exist"


def test_readme_stays_a_front_door() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    lines = readme.splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith("<!-- test-command"))
    assert lines[marker + 1].strip().startswith("pip install -e '.[dev]'"), ".ci/run runs this line verbatim"


def test_skip_markers_give_a_reason_and_blocks_hold_commands() -> None:
    for page in doc_pages():
        text = page.read_text()
        for comment in re.findall(r"<!--\s*docs-test:[^>]*-->", text):
            assert SKIP_MARKER.fullmatch(comment), f"{page}: malformed marker {comment}"
        for block in console_blocks(page):
            assert block.commands, f"{block.page}:{block.line}: a console block without a `$ ` command"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A directory that looks like the repository root (symlinks) but keeps runs and stores apart."""
    for entry in REPO.iterdir():
        if entry.name not in SCRATCH_EXCLUDES:
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_console_commands_run_as_documented(page: Path, scratch: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MLFLOW_TRACKING_URI": "",
        "HOME": str(scratch / "home"),
        "XDG_CACHE_HOME": str(scratch / "home" / ".cache"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "TMPDIR": str(scratch / "tmp"),  # leftovers of other processes' runs are not this page's business
        # The pages show what a newcomer's machine without Docker prints (`auto` picks bwrap), whether or
        # not this machine runs an engine (CI does, for the Docker tests).
        "DOCKER_HOST": f"unix://{scratch / 'no-docker-engine.sock'}",
    }
    (scratch / "tmp").mkdir()
    env.pop("OPENAI_API_KEY", None)
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    for block in console_blocks(page):
        if block.skip_reason:
            continue
        for command in block.commands:
            result = subprocess.run(["bash", "-c", command.text], cwd=scratch, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, timeout=900)
            assert result.returncode == command.exit_code, (
                f"{command.page}:{command.line}: `{command.text}` exited {result.returncode}, "
                f"the page says {command.exit_code}\n{result.stdout[-3000:]}"
            )
            pattern = command.output_pattern()
            if pattern is not None:
                assert pattern.fullmatch(normalised_output(result.stdout)), (
                    f"{command.page}:{command.line}: `{command.text}` printed something else than the page "
                    f"shows:\n{result.stdout[-3000:]}"
                )


def test_shown_output_is_matched_line_for_line() -> None:
    shown = Command("p", 1, "x", 0, ("a b", "...", "run: …/seed-0", "done"))
    pattern = shown.output_pattern()
    assert pattern is not None
    assert pattern.fullmatch(normalised_output("a   b\nnoise\n\nrun: /tmp/x/seed-0\ndone\n"))
    assert not pattern.fullmatch(normalised_output("a b\nrun: /tmp/x/seed-0\ndone\nmore\n")), "unshown tail"
    assert not pattern.fullmatch(normalised_output("first\na b\nrun: x/seed-0\ndone\n")), "unshown head"
