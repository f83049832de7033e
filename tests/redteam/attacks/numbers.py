# --- red-team attack: answer with numbers the scorer cannot take -------------------------------------------
# Parameters (ATTACK): mode -- "nonfinite" (NaN, inf and -inf in turn), "huge" (10**400, beyond any float),
# "deep" (an answer nested 100,000 lists deep) or "types" (every number as a string). The harness's
# json.dumps is wrapped, so every answer (or every reply of an interactive problem) leaves poisoned.


def _redteam_numbers(params):
    import json

    original = json.dumps
    mode = params["mode"]
    nonfinite = [float("nan"), float("inf"), float("-inf")]
    depth = 100_000
    count = [0]

    def poison(value):
        count[0] += 1
        if mode == "types":
            return str(value)
        if mode == "huge":
            return 10 ** 400
        return nonfinite[count[0] % len(nonfinite)]

    def poisoned(value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return poison(value)
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
