"""Small helpers that keep notebooks thin: parameter checks and the provenance line under every result."""
from __future__ import annotations

from nbseg.errors import ConfigError


def require_types(namespace: dict, **expected) -> None:
    """Check notebook parameters (a papermill run can inject any value) before anything is computed.

    ``require_types(globals(), SMOKE=bool, LIMIT=(int, type(None)))``: a parameter of the wrong type raises
    :class:`ConfigError` naming it, the value and the expected type. ``int`` is accepted where ``float`` is expected,
    ``bool`` is not accepted where ``int`` is.
    """
    problems = []
    for name, types in expected.items():
        types = types if isinstance(types, tuple) else (types,)
        if name not in namespace:
            problems.append(f"{name} is not set")
            continue
        value = namespace[name]
        ok = any(_fits(value, t) for t in types)
        if not ok:
            want = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            problems.append(f"{name}={value!r} is a {type(value).__name__}, expected {want}")
    if problems:
        raise ConfigError("notebook parameters: " + "; ".join(problems) +
                          ". Fix the -p KEY=VALUE you passed (strings need quotes inside papermill YAML).")


def _fits(value, t) -> bool:
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, t)


def describe_run(backbone, dataset, n_images: int | None = None) -> str:
    """One line saying which backbone, which weights and which data produced what follows."""
    n = f", {n_images} images" if n_images is not None else ""
    warn = "  [random init: a baseline, not a trained model]" if getattr(backbone, "random_init", False) else ""
    return f"backbone: {backbone.describe()} · data: {dataset.describe()}{n}{warn}"


def table_metrics(table, keys, values, prefix: str = "") -> dict:
    """Flat ``metrics.json`` entries from a table: ``{"<prefix><key values joined by />/<value column>": number}``
    for every row, e.g. ``table_metrics(summary, ["map"], ["dataset_iou"], "trained/")`` ->
    ``{"trained/mean/dataset_iou": 0.41, ...}``."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    out = {}
    for _, row in table.iterrows():
        name = "/".join(str(row[k]) for k in keys)
        for column in ([values] if isinstance(values, str) else values):
            out[f"{prefix}{name}/{column}"] = float(row[column])
    return out
