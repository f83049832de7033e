"""Compiling C++ inside the sandbox: candidates once per evaluation, checkers once per problem.

Every compilation runs in the sandbox that will run the binary (a candidate's source is untrusted
and g++ can be made to read any file it can see), with the upstream judge's line
`g++ <src> -O2 -pipe -std=gnu++17 [-I include] -o <out>` and its limits (10 s of CPU, 512 MiB,
50 processes). A checker or interactor is compiled once and kept in Engram's cache under a key of
its source, `testlib.h`, the compiler's identity inside the sandbox and the backend, so that a
binary built for one backend's libraries never runs under another.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from engram.errors import SandboxError
from engram.problems.data import cache_root
from engram.sandbox import Limits, Mount, Sandbox, clean_environment
from engram.sandbox.base import KiB, MiB

FLAGS = ("-O2", "-pipe", "-std=gnu++17")
COMPILE_LIMITS = Limits(wall_seconds=120, cpu_seconds=10, memory_bytes=512 * MiB, max_processes=50,
                        file_size_bytes=256 * MiB, output_bytes=64 * KiB)
"""A candidate's compilation: upstream's 10 s of CPU, 512 MiB and 50 processes (the wall limit is only a backstop)."""
JUDGE_COMPILE_LIMITS = Limits(wall_seconds=900, cpu_seconds=300, memory_bytes=2048 * MiB, max_processes=50,
                              file_size_bytes=256 * MiB, output_bytes=64 * KiB)
"""A checker's or interactor's: trusted sources that must compile, some of them slowly (testlib at -O2 on a
busy machine), so the limits only stop a runaway compiler."""
_IDENTITY_SCRIPT = "g++ --version | head -n 1; g++ -dumpmachine; getconf GNU_LIBC_VERSION"


@dataclass(frozen=True)
class Compiled:
    binary: Path | None
    """None when compilation failed (see `log`)."""
    log: str
    seconds: float


def compile_source(sandbox: Sandbox, source: bytes, source_name: str, build_dir: Path, output_name: str, *,
                   include: Path | None = None, limits: Limits = COMPILE_LIMITS) -> Compiled:
    """Compile `source` (saved as `build_dir/source_name`) in the sandbox; the binary stays in `build_dir`."""
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / source_name).write_bytes(source)
    (build_dir / "tmp").mkdir(exist_ok=True)
    argv = ["g++", source_name, *FLAGS]
    mounts = []
    if include is not None:
        argv += ["-I", str(include)]
        mounts.append(Mount(include))
    argv += ["-o", output_name]
    run = sandbox.run(argv, workdir=build_dir, mounts=mounts, limits=limits, env=clean_environment(build_dir))
    binary = build_dir / output_name
    log = (run.stderr.text() + run.stdout.text()).strip()
    if run.timed_out:
        return Compiled(None, f"compilation did not finish within its limits ({run.timed_out} time)\n{log}".rstrip(),
                        run.wall_seconds)
    if run.returncode != 0 or not binary.is_file() or binary.is_symlink():
        if run.returncode == 127 or "g++: not found" in log or "No such file or directory: 'g++'" in log:
            raise SandboxError(f"g++ is not installed where the {sandbox.name} sandbox runs programs: {log[-300:]}")
        reason = (f"g++ exited with code {run.returncode}" if run.returncode >= 0
                  else f"g++ was killed by signal {-run.returncode}")
        return Compiled(None, f"{reason}\n{log}".rstrip(), run.wall_seconds)
    return Compiled(binary, log, run.wall_seconds)


_identities: dict[int, str] = {}
_identity_lock = threading.Lock()


def compiler_identity(sandbox: Sandbox) -> str:
    """The compiler and C library the sandbox's programs are built with (once per sandbox object)."""
    with _identity_lock:
        if id(sandbox) in _identities:
            return _identities[id(sandbox)]
    with tempfile.TemporaryDirectory(prefix="engram-gxx-") as scratch:
        run = sandbox.run(["/bin/sh", "-c", _IDENTITY_SCRIPT], workdir=Path(scratch),
                          limits=Limits(wall_seconds=60, memory_bytes=512 * MiB, output_bytes=16 * KiB),
                          env=clean_environment(Path(scratch)))
    text = run.stdout.text().strip()
    first_line = text.splitlines()[0] if text else ""
    if run.returncode != 0 or "g++" not in first_line:
        raise SandboxError(f"g++ is not available in the {sandbox.name} sandbox (`g++ --version` said: "
                           f"{(run.stderr.text() or text).strip()[:300] or run.returncode}); install g++ "
                           f"(Debian/Ubuntu: apt-get install g++) or use a sandbox image that has it")
    identity = f"{sandbox.name}\n{text}"
    with _identity_lock:
        _identities[id(sandbox)] = identity
    return identity


@dataclass(frozen=True)
class CachedBinary:
    path: Path
    sha256: str

    def intact(self) -> bool:
        return self.path.is_file() and _sha256(self.path.read_bytes()) == self.sha256


def checker_cache_dir() -> Path:
    return cache_root().parent / "frontier-cs" / "judges"


def judge_binary(sandbox: Sandbox, source: bytes, role: str, testlib: bytes | None) -> CachedBinary:
    """The compiled checker (`role` "chk") or interactor ("interactor"), built once per key.

    Raises `SandboxError` if it does not compile: the problem, not the candidate, is broken then."""
    identity = compiler_identity(sandbox)
    digest = hashlib.sha256()
    for part in (role.encode(), source, testlib or b"", identity.encode(), " ".join(FLAGS).encode()):
        digest.update(_sha256(part).encode())
    key = digest.hexdigest()[:32]
    final = checker_cache_dir() / key
    binary = final / role
    recorded = final / f"{role}.sha256"
    if binary.is_file() and recorded.is_file():
        cached = CachedBinary(binary, recorded.read_text().strip())
        if cached.intact():
            return cached
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{key}.", suffix=".part", dir=final.parent))
    # The compiler runs as the sandbox's unprivileged uid, which cannot reach the cache under a closed
    # home (/root): it builds in a scratch folder of its own, and only the binary enters the cache.
    scratch = Path(tempfile.mkdtemp(prefix="engram-judge-build-"))
    try:
        os.chmod(scratch, 0o755)
        include = scratch / "include"
        include.mkdir()
        os.chmod(include, 0o755)
        if testlib is not None:
            (include / "testlib.h").write_bytes(testlib)
            os.chmod(include / "testlib.h", 0o644)
        build = scratch / "build"
        compiled = compile_source(sandbox, source, f"{role}.cc", build, role, include=include,
                                  limits=JUDGE_COMPILE_LIMITS)
        if compiled.binary is None:
            raise SandboxError(f"the problem's {role} does not compile with g++ in the {sandbox.name} sandbox:\n"
                               f"{compiled.log[-2000:]}")
        result = staging / "result"
        result.mkdir()
        shutil.copyfile(compiled.binary, result / role)
        os.chmod(result / role, 0o755)
        sha = _sha256((result / role).read_bytes())
        (result / f"{role}.sha256").write_text(sha + "\n")
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process built the same key at the same moment
            os.replace(result, final)
        cached = CachedBinary(binary, (final / f"{role}.sha256").read_text().strip())
        if not cached.intact():
            raise SandboxError(f"the compiled {role} in {final} changed while it was being stored")
        return cached
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
