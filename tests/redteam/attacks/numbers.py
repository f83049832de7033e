# --- red-team attack: answer with numbers the scorer cannot take -------------------------------------------
# Parameters (ATTACK): mode -- "nan", "inf", "huge" (10**400, beyond any float), "deep" (an answer nested
# 100,000 lists deep) or "types" (every number as a string). The harness's json.dumps is wrapped, so every
# answer (or, for interactive problems, every reply) leaves the sandbox poisoned that way.


def _redteam_numbers(params):
    import json

    original = json.dumps
    mode = params["mode"]
    poison = {"nan": float("nan"), "inf": float("inf"), "huge": 10 ** 400, "types": None}[mode] \
        if mode != "deep" else None
    depth = 100_000

    def poisoned(value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return str(value) if mode == "types" else poison
        if isinstance(value, list | tuple):
            return [poisoned(item) for item in value]
        if isinstance(value, dict):
            return {key: poisoned(item) for key, item in value.items()}
        return value

    def dumps(obj, *args, **kwargs):
        if isinstance(obj, dict):
            key = "answer" if obj.get("event") == "scenario" else "reply" if obj.get("ok") is True else None
            if key is not None:
                if mode == "deep":
                    text = original({**obj, key: "__REDTEAM__"}, *args, **kwargs)
                    return text.replace('"__REDTEAM__"', "[" * depth + "]" * depth)
                obj = {**obj, key: poisoned(obj[key])}
        return original(obj, *args, **kwargs)

    json.dumps = dumps
    print(f"REDTEAM numbers-{mode} armed", flush=True)


_redteam_numbers(ATTACK)
