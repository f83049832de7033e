"""The scripted model's keyed turns: `when` picks a turn by the request's text, `repeat` keeps it available.

Callers such as OpenEvolve's worker pool ask in an order a script cannot predict; keying each
canned answer on what the request contains makes such runs reproducible offline.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from engram.errors import ConfigError
from engram.models.llm import ScriptedChatModel

KEYED = """\
agents:
  - turns:
      - when: 'Current Program\\s+```python\\s+# alpha'
        content: first answer for alpha
      - when: '# beta'
        repeat: true
        content: beta, every time
      - when: 'Current Program\\s+```python\\s+# alpha'
        content: second answer for alpha
      - content: unkeyed, once
"""


def _script(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "script.yaml"
    path.write_text(text)
    return path


def _ask(model: ScriptedChatModel, program: str) -> str:
    return model.invoke([SystemMessage(content="system"),
                         HumanMessage(content=f"# Current Program\n```python\n{program}\n```")]).content


def test_keyed_turns_answer_in_whatever_order_they_are_asked(tmp_path: Path):
    model = ScriptedChatModel(_script(tmp_path, KEYED), agent=1)
    assert _ask(model, "# beta") == "beta, every time"
    assert _ask(model, "# alpha") == "first answer for alpha"
    assert _ask(model, "# beta") == "beta, every time"
    assert _ask(model, "# alpha") == "second answer for alpha"
    # Neither alpha turn is left; the first unkeyed turn answers, once.
    assert _ask(model, "# alpha") == "unkeyed, once"
    assert _ask(model, "# alpha") == ""
    assert _ask(model, "# beta") == "beta, every time"
    assert model.position == 7


def test_when_searches_every_message_of_the_request(tmp_path: Path):
    model = ScriptedChatModel(_script(tmp_path, "agents:\n  - turns:\n      - {when: 'be terse', content: ok}\n"), 1)
    assert model.invoke([HumanMessage(content="hello")]).content == ""
    assert model.invoke([SystemMessage(content="Please be terse."), HumanMessage(content="hi")]).content == "ok"


def test_unkeyed_scripts_still_play_in_order(tmp_path: Path):
    model = ScriptedChatModel(_script(tmp_path, "agents:\n  - turns:\n      - {content: a}\n      - {content: b}\n"), 1)
    assert [model.invoke([HumanMessage(content="x")]).content for _ in range(3)] == ["a", "b", ""]


def test_concurrent_callers_never_get_the_same_single_use_turn(tmp_path: Path):
    turns = "".join(f"      - {{when: 'key', content: 'n{i}'}}\n" for i in range(40))
    model = ScriptedChatModel(_script(tmp_path, "agents:\n  - turns:\n" + turns), 1)
    answers: list[str] = []
    lock = threading.Lock()

    def ask() -> None:
        for _ in range(10):
            text = model.invoke([HumanMessage(content="key")]).content
            with lock:
                answers.append(text)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == sorted(f"n{i}" for i in range(40))


def test_a_bad_regular_expression_is_a_config_error(tmp_path: Path):
    path = _script(tmp_path, "agents:\n  - turns:\n      - {when: '(unclosed', content: x}\n")
    with pytest.raises(ConfigError, match="when"):
        ScriptedChatModel(path, 1)
