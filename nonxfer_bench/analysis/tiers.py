"""A protocol run attacks each release tier by tier and stops at the tier that settles it, as AutoAttack stops attacking
a point once it is broken: a release broken at a tier stays broken whatever a higher tier's attacks do, so they are
not needed, and the verdict says so (``not needed: broken at ...``). A protocol whose verdict stops at ``unheld``
(ne-v2) also stops at the first tier a release does not hold (its gap not above 0 beyond its interval: a higher tier
can only lower it, up to the noise of choosing each tier's attack), and with ``no_attack_stage`` scores every release
with no attack before any attack runs. This is what makes the protocol's strong ensemble affordable: most releases
settle at a low, cheap stage.

:func:`tiered_plan` cuts a suite's plan to what such a run needs given the cells already finished; ``run`` computes
it pass after pass until nothing is missing, and readers (``leaderboard``, ``report``) apply the same cut to the cells
they find, so a finished protocol run is complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.analysis.verdict import release_verdict
from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.cells.cell import Cell
from nonxfer_bench.cells.release import Release
from nonxfer_bench.execution.plan import AttackStep, EncodingGroup
from nonxfer_bench.schema.protocol import VERDICT_TIERS, WHITE_BOX, VerdictSpec

ORDER = (*VERDICT_TIERS, WHITE_BOX)  # white box last: reported beside the verdict, needed only where nothing broke it


def _release(group: EncodingGroup) -> Release:
    return Release(group.authorized, group.encoder.name, group.strength, group.storage, group.precision)


def step_stages(plan: list[EncodingGroup], spec: VerdictSpec) -> dict[AttackStep, int]:
    """Each step's stage, the order a protocol run attacks in: no attack first, then its attack's tier in
    :data:`ORDER` as the instance declares it (a learned inverse's depends on its pairs); with ``no_attack_stage`` no
    attack is a stage of its own, before the none tier's attacks. An attack that only measures (``identify``) breaks
    nothing and asks its question whatever breaks the release: it runs with no attack."""
    shift = 1 if spec.no_attack_stage else 0
    stages: dict[int, int] = {}
    out = {}
    for group in plan:
        for step, _ in group.cells:
            key = id(step.spec)
            if key not in stages:
                attack = ATTACKS.create(step.spec.name, step.spec.params)
                first = attack.baseline or attack.measures_only
                stages[key] = 0 if first else shift + ORDER.index(attack.threat.tier.value)
            out[step] = stages[key]
    return out


def tiered_plan(plan: list[EncodingGroup], cells: Mapping[str, Cell], spec: VerdictSpec) -> list[EncodingGroup]:
    """``plan`` cut, per release, to the stages up to the first that settles it (``spec.stop``), as far as ``cells``
    (finished cells by key) tell: a release's next stage is planned once every cell of its lower stages is finished and
    none settled it."""
    stages = step_stages(plan, spec)
    last = (1 if spec.no_attack_stage else 0) + len(ORDER) - 1  # white box: only where nothing settled the release
    by_release: dict[Release, list[EncodingGroup]] = {}
    for group in plan:
        by_release.setdefault(_release(group), []).append(group)
    clean = {release.authorized + release.precision: groups for release, groups in by_release.items() if release.clean}
    levels = {release: 0 for release in by_release}
    for release, groups in by_release.items():
        if release.clean:
            levels[release] = last + 1
            continue
        reference = clean.get(release.authorized + release.precision, [])
        while levels[release] < last:
            level = levels[release]
            keys = [key for group in groups for (step, _), key in group.cells.items() if stages[step] <= level]
            if any(key not in cells for key in keys):
                break  # this stage is still to compute
            if any(key not in cells for group in reference for key in group.cells.values()):
                break  # the break target is the clean images' no-attack accuracy: unknown until they are scored
            if _settled(release, [cells[key] for key in keys], reference, cells, spec):
                break
            levels[release] += 1
    cut = [
        replace(
            group, cells={cell: key for cell, key in group.cells.items() if stages[cell[0]] <= levels[_release(group)]}
        )
        for group in plan
    ]
    return [group for group in cut if group.cells]


def _settled(
    release: Release, cells: list[Cell], clean: list[EncodingGroup], finished: Mapping[str, Cell], spec: VerdictSpec
) -> bool:
    """Whether the finished ``cells`` of ``release`` (with the clean images' no-attack cells for the break target)
    settle it: break it, or with ``spec.stop == "unheld"`` show a tier it does not hold."""
    clean_cells = [finished[key] for group in clean for key in group.cells.values() if key in finished]
    frame = results_frame(cells + clean_cells)
    metric = "accuracy" if frame["accuracy"].notna().any() else "agreement"
    verdict = release_verdict(
        release, frame[frame.encoder != "clean"], frame[frame.encoder == "clean"] if clean_cells else None, spec, metric
    )
    return verdict is not None and verdict.settled_at is not None
