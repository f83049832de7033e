"""Frontier-CS's algorithmic problems as an Engram problem family, with a local sandboxed judge.

`family` makes `frontier_cs/<id>` problems from the pinned upstream files (`manifest`, `sources`,
`config`); `scorer` is their trusted side, which hands C++ programs to the `judge` (compile once,
run each case through the compiled `launch.cc` in the sandbox, let the checker speak, read it with `protocol`).
"""
