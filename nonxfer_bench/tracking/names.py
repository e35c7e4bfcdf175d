"""MLflow metric names: the attack part of a per-cell or per-step name, bounded and made safe.

``<attack>`` in a metric name is the attack's name (``acc.blur.vit_a``) when it has one step per strength in the
group. An attack with several steps at one strength (one MLflow step), e.g. a budget sweep or two suite entries,
names every one of its steps ``<attack>/<step>`` (:func:`attack_names`), so each step is its own series and none
overwrites another.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from nonxfer_bench.cells.step import Step
from nonxfer_bench.core.hashing import stable_hash

MAX_METRIC_NAME = 250 - len("_lo")  # MLflow refuses a batch holding a key over 250 characters, suffixes included


def fitting(name: str) -> str:
    """``name``, or when it is too long for MLflow (long model and step names), its start and a hash of the whole."""
    return name if len(name) <= MAX_METRIC_NAME else f"{name[: MAX_METRIC_NAME - 9]}_{stable_hash(name)[:8]}"


STEP_SEPARATOR = "/"  # between an attack and its step's name: acc.<attack>/<step>.<model>
STEP_NAME_MAX = 100  # characters; longer step names are cut and end in a hash of the step
METRIC_STEP = "_metric_step"  # key of a step's strength in the params its name is chosen from


def mlflow_step(strength: float) -> int:
    """The MLflow step of an attack strength: round(100 x strength)."""
    return round(100 * strength)


def safe(text: str) -> str:
    """``text`` as part of a metric name: a '.' between digits becomes 'p' (0.01: 0p01), every other run of
    characters other than ASCII letters, digits, '_' and '-' one '_' ('.' would split the name, '/' nest it)."""
    text = re.sub(r"(?<=\d)\.(?=\d)", "p", text)
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")


def _step_name(params: dict[str, Any], keys: list[str]) -> str:
    """``k_v`` for each of ``keys`` (in their order) that ``params`` holds, joined by '_'; ``default`` when none."""
    pairs = []
    for key in keys:
        if key in params:
            value = safe(str(params[key]))
            pairs.append("_".join(filter(None, ["strength" if key == METRIC_STEP else safe(key), value])))
    return "_".join(pairs) or "default"


def attack_names(steps: Iterable[Step]) -> dict[Step, str]:
    """The attack part of the metric names of one group's steps (:class:`~nonxfer_bench.cells.step.Step`).

    An attack with one step per strength keeps its name (``blur``). An attack with several steps at one strength
    (MLflow step), e.g. a budget sweep, names every one of its steps ``<attack>/<step>``: ``<step>`` holds the
    params that tell its steps at one strength apart (``key_value``, sorted by key, joined by '_', made safe by
    :func:`safe`), so each is one series over the attack strength (``finetune/scope_all``,
    ``patch_mean/public_100_released_1``). Where that is not enough (names alike once made safe, or longer than
    :data:`STEP_NAME_MAX`), the step's name ends in a hash of the step, so no two steps share a name and step.
    """
    params: dict[Step, dict[str, Any]] = {}
    for step in steps:
        params.setdefault(step, {METRIC_STEP: step.strength} | dict(step.settings))
    names: dict[Step, str] = {}
    for attack in dict.fromkeys(key.attack for key in params):
        steps = {key: value for key, value in params.items() if key.attack == attack}
        at: dict[int, list[Step]] = {}
        for key in steps:
            at.setdefault(mlflow_step(key.strength), []).append(key)
        if all(len(keys) == 1 for keys in at.values()):
            names.update(dict.fromkeys(steps, attack))
            continue
        differing = set()  # the params whose values differ between steps at one strength (absent counts as a value)
        for keys in at.values():
            for k in set().union(*(steps[key] for key in keys)):
                if len({repr(steps[key][k]) if k in steps[key] else None for key in keys}) > 1:
                    differing.add(k)
        ordered = sorted(differing, key=lambda k: (k == METRIC_STEP, k))  # the strength, if it tells them apart, last
        for keys in at.values():
            chosen = {key: _step_name(steps[key], ordered) for key in keys}
            for key, name in chosen.items():
                alike = sum(other == name for other in chosen.values()) > 1
                if alike or len(name) > STEP_NAME_MAX:
                    name = f"{name[: STEP_NAME_MAX - 9]}_{stable_hash([key.strength, key.text])[:8]}"
                names[key] = f"{attack}{STEP_SEPARATOR}{name}"
    return names


def split_cell_metric(name: str) -> tuple[str, str, str | None, str]:
    """(metric, attack, step name or None, model) of a per-cell metric name, ``acc.blur.vit_a`` or
    ``acc.patch_mean/released_10.vit_a`` (with ``_lo``, ``_hi``, ``_n`` left on the model)."""
    metric, attack, model = name.split(".", 2)
    attack, _, step = attack.partition(STEP_SEPARATOR)
    return metric, attack, step or None, model
