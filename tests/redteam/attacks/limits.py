# --- red-team attack: get more than the evaluation's limits by spreading over processes and files ---------
# Parameters (ATTACK): mode -- "processes" (fork far past the process cap), "memory" (several processes that
# each stay under the memory limit but together exceed it), "files" (many files, each under the file-size
# limit, together far past it, in the working directory (`folder: work`), /tmp (`tmp`) or another folder).
# Each child or file reports what it got; the test compares that with the limit for the whole evaluation.


def _redteam_limits(params):
    import os
    import sys
    import time

    mode = params["mode"]
    if mode == "processes":
        children = []
        try:
            for _ in range(params["count"]):
                pid = os.fork()
                if pid == 0:
                    time.sleep(3)
                    os._exit(0)
                children.append(pid)
                print(f"REDTEAM processes {len(children) + 1}", flush=True)
        except OSError as exc:
            print(f"REDTEAM processes-refused {type(exc).__name__}", flush=True)
        for pid in children:
            os.waitpid(pid, 0)
    elif mode == "memory":
        read_end, write_end = os.pipe()
        children = []
        for number in range(params["count"]):
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                try:
                    block = bytearray(params["each"])
                    for offset in range(0, len(block), 4096):  # touch every page: resident, not just reserved
                        block[offset] = 1
                    os.write(write_end, bytes([number]))
                    time.sleep(3)  # hold it while the others allocate
                except MemoryError:
                    pass
                os._exit(0)
            children.append(pid)
        os.close(write_end)
        holding, gone, held = set(), set(), 0
        deadline = time.monotonic() + 20
        while len(holding | gone) < len(children) and time.monotonic() < deadline:
            data = os.read(read_end, 64)
            if not data:
                break
            holding.update(children[index] for index in data)
            for pid in children:  # a child the OOM killer took is gone before another's allocation returns
                if pid not in gone and os.waitpid(pid, os.WNOHANG)[0] == pid:
                    gone.add(pid)
            held = max(held, len(holding - gone))
            print(f"REDTEAM memory-held {held} x {params['each']}", flush=True)
        for pid in children:
            if pid not in gone:
                os.waitpid(pid, 0)
    elif mode == "files":
        total = 0
        folder = {"work": os.getcwd(), "tmp": "/tmp"}.get(params["folder"]) or os.path.expandvars(params["folder"])
        for number in range(params["count"]):
            path = os.path.join(folder, f"redteam-fill-{number}")
            try:
                with open(path, "wb") as handle:
                    for _ in range(params["each"] >> 20):
                        handle.write(b"\0" * (1 << 20))
                        total += 1 << 20
            except OSError as exc:
                print(f"REDTEAM files-refused {type(exc).__name__}", flush=True)
            print(f"REDTEAM files-written {total}", flush=True)
    sys.stdout.flush()


_redteam_limits(ATTACK)
