"""One encoding group, computed in stages: encode each batch, attack it, score every model, assemble the cells.

:class:`GroupComputation` streams the dataset batch by batch through the stages, so memory does not grow
with the dataset:

1. **encode** (:meth:`GroupComputation.encode`): the clean batch becomes the release (stored and read back
   when the group's storage is not float32);
2. **attack** (:class:`AttackedBatches`): every pending attack step and draw, with the outputs of
   expensive attacks cached on disk per group, step, draw and batch;
3. **score** (:meth:`GroupComputation.score`): every model with a missing cell classifies the attacked
   batch; per-image outcomes accumulate in a :class:`~nonxfer_bench.metrics.outcomes.Tally` per cell;
4. **assemble** (:meth:`GroupComputation.assemble`): one typed :class:`~nonxfer_bench.cells.cell.Cell` per
   missing (attack step, model).

Every tensor a stage hands on is a batch that may live on another device than the host; only per-image
outcomes and scalars come back to the host. An error a component raises in a stage (an encoder, an attack: a bug,
an input it cannot handle) becomes a :class:`ComponentError` naming the suite entry (:func:`blame`): one line for
the user, and the run stops with every group finished before it stored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import torch

from nonxfer_bench.attacks import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.base import TuningImages
from nonxfer_bench.cells.cell import Cell, Role
from nonxfer_bench.core import faults
from nonxfer_bench.core.cache import ArrayCache
from nonxfer_bench.core.errors import UserError, one_line
from nonxfer_bench.core.hashing import keyed_generator, stable_hash
from nonxfer_bench.core.memory import return_freed_memory
from nonxfer_bench.encoders import ENCODERS, Encoder, Encoding
from nonxfer_bench.execution.plan import AttackStep, EncodingGroup
from nonxfer_bench.linalg.bounds import NOT_COMPUTED, group_bounds
from nonxfer_bench.metrics.image_quality import psnr_per_image, ssim_per_image
from nonxfer_bench.metrics.outcomes import Tally
from nonxfer_bench.schema.protocol import VerdictSpec
from nonxfer_bench.storage.formats import apply_storage
from nonxfer_bench.zoo import ZooModel

log = logging.getLogger(__name__)

Missing = dict[tuple[AttackStep, str], str]  # (attack step, evaluated model) -> cell key
MESSAGE_LIMIT = 300  # characters of a component's error message shown in the error line


class ComponentError(UserError):
    """A component raised while a group was computed; the message names its suite entry (``attacks[3] (finetune):
    ...``)."""


@contextlib.contextmanager
def blame(entry: str) -> Iterator[None]:
    """Any error raised inside as a :class:`ComponentError` naming ``entry``; a :class:`UserError` (a missing file, a
    bad value: it names what is wrong already) passes as it is."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever a component raises is the component's, not the run's
        raise ComponentError(f"{entry}: {type(error).__name__}: {one_line(str(error), MESSAGE_LIMIT)}") from error


class Release(NamedTuple):
    """One batch after stage 1: where it starts in the dataset, its clean images and labels, and its release."""

    start: int
    clean: torch.Tensor
    labels: torch.Tensor
    encoding: Encoding


@dataclass
class GroupInputs:
    """What a group reads: the clean inputs at the authorized model's release format, their labels, every
    evaluated model's predictions on them, and the id of this image list (hash of dataset and subset)."""

    clean: Callable[[int, int], torch.Tensor]  # (start, size) -> clean batch in [0, 1]
    count: int
    labels: torch.Tensor
    clean_predictions: dict[str, torch.Tensor]
    image_ids: str


@dataclass
class GroupServices:
    """The runner's shared resources a group uses: models, attacks, the OOM-safe predictor, public images."""

    model: Callable[[str], ZooModel]
    attack: Callable[[AttackStep], Attack]
    predict: Callable[[ZooModel, torch.Tensor], torch.Tensor]
    public_images: Callable[[ZooModel], torch.Tensor]
    role: Callable[[str, str], Role]
    phase: Callable[[EncodingGroup, str], None]  # progress: which stage a group is in
    note: Callable[[EncodingGroup, str], None]  # progress: something the user should know about a group's cells
    suite_name: str
    batch_size: int
    sample_images: int
    public_labels: Callable[[], torch.Tensor | None] = lambda: (
        None
    )  # labels of the public images, if the suite has them
    precision: str = "fp32"  # the models' precision, recorded in the cells (part of their keys when not fp32)
    overlap_cpu_attacks: bool = (
        False  # run CPU-only attacks on a thread pool beside the device work (the device is not the CPU)
    )
    bounds: bool = True  # compute the bound diagnostics (suite key 'bounds')
    entry: Callable[[Any], str] = lambda spec: (
        spec.name
    )  # a suite entry (an encoder's or attack's spec) as error lines name it
    verdict: VerdictSpec = (
        VerdictSpec()
    )  # the suite's protocol's verdict (its defaults without one): the tuning split attacks may search on


class AttackedBatches:
    """Stage 2: attack outputs per (step, draw, batch), from the disk cache for expensive attacks.

    A draw is reused only when all its batches are cached (draws are sequential in their generator). The
    reused batches are mapped when the group starts: another process's eviction cannot take them away
    mid-group (a mapping outlives the file's removal), and a draw with any batch missing is recomputed.
    """

    def __init__(
        self,
        group: EncodingGroup,
        steps: list[AttackStep],
        attacks: Callable[[AttackStep], Attack],
        count: int,
        size: int,
        entry: Callable[[Any], str],
    ) -> None:
        self.attacks, self.count, self.size, self.entry = attacks, count, size, entry
        self.seconds: dict[AttackStep, float] = defaultdict(
            float
        )  # wall time of this stage (fit, attack, adapt) per step
        self.devices: dict[AttackStep, str] = {}  # the device type each step's attack computed on
        self.outputs = ArrayCache("attacked")
        self.generators = {
            (step, draw): keyed_generator(
                group.draw_key, step.spec.name, step.spec.params, step.strength, *([draw] if draw else [])
            )
            for step in steps
            for draw in range(attacks(step).draws)
        }
        self.keys = {
            (step, draw): _attacked_keys(group, step, draw, count, size)
            for (step, draw) in self.generators
            if attacks(step).cache_outputs
        }
        self.held = {cell: [self.outputs.get(key) for key in keys] for cell, keys in self.keys.items()}
        self.reuse = {cell for cell, hits in self.held.items() if all(hit is not None for hit in hits)}

    def __call__(self, step: AttackStep, draw: int, start: int, released: torch.Tensor) -> torch.Tensor:
        key = self.keys[(step, draw)][start // self.size] if (step, draw) in self.keys else None
        if start == 0 and (step, draw) in self.reuse and (damage := self._damage(self.held[(step, draw)], released)):
            log.warning(f"{step.label}: cached attack outputs are damaged ({damage}); computing the draw again")
            self.reuse.discard((step, draw))  # all its batches: they come from one generator, in order
        if (step, draw) in self.reuse:
            return torch.from_numpy(self.held[(step, draw)][start // self.size][0]).to(released.device)
        began = time.perf_counter()
        attack = self.attacks(step)
        with blame(self.entry(step.spec)):
            attacked = attack(released, step.strength, self.generators[(step, draw)])
            if not isinstance(attacked, torch.Tensor) or attacked.shape != released.shape:
                raise ValueError(
                    f"returned {tuple(getattr(attacked, 'shape', ())) or type(attacked).__name__} for a batch of "
                    f"shape {tuple(released.shape)}"
                )
        self.seconds[step] += time.perf_counter() - began
        self.devices[step] = "cpu" if attack.cpu_only else attacked.device.type
        if key is not None:
            self.outputs.put(key, attacked.detach().cpu().numpy())
        return attacked.to(released.device)  # attacks that work on the host (libjpeg, scikit-image) hand back there

    def _damage(self, hits: list[tuple[np.ndarray, dict]], released: torch.Tensor) -> str | None:
        """What is wrong with a draw's cached output batches for this release, or None: each must be a finite
        float array of its batch's shape (an attack's output has the shape of its input)."""
        for index, (array, _) in enumerate(hits):
            shape = (min(self.size, self.count - index * self.size), *released.shape[1:])
            if array.shape != shape or not np.issubdtype(array.dtype, np.floating):
                return f"batch {index + 1}: a {array.dtype} array of shape {array.shape}, not {shape}"
            if not np.isfinite(array).all():
                return f"batch {index + 1}: values that are not finite"
        return None


@dataclass
class _Measures:
    """Per-image PSNR/SSIM collected over the batches of a group."""

    encoded_psnr: list[torch.Tensor] = field(default_factory=list)
    stored_psnr: list[torch.Tensor] = field(default_factory=list)
    attacked_psnr: dict[AttackStep, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))
    attacked_ssim: dict[AttackStep, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))


class GroupComputation:
    """One group's missing cells and its sample rows; touches neither the store nor the tracker."""

    def __init__(self, group: EncodingGroup, missing: Missing, services: GroupServices) -> None:
        self.group, self.missing, self.services = group, missing, services
        self.authorized = services.model(group.authorized)
        with blame(services.entry(group.encoder)):
            self.encoder = ENCODERS.create(group.encoder.name, group.encoder.params)
        self.encode_generator = keyed_generator(group.draw_key, "encode")
        # the authorized model as deployed for this release (a keyed scheme's transformed model; else the model itself)
        self.deployed = self.encoder.authorized_view(self.authorized, keyed_generator(group.draw_key, "encode"))
        self.steps = list(dict.fromkeys(step for step, _ in missing))
        self.draws = {step: services.attack(step).draws for step in self.steps}
        self.tallies = {cell: Tally(self.draws[cell[0]]) for cell in missing}
        self.measures = _Measures()
        self.encoder_info: dict[str, float] = {}
        self.bounds: tuple[dict, dict] = ({}, {})
        self.sample_rows: dict[str, torch.Tensor] = {}
        self.adapted: dict[
            tuple[AttackStep, str], ZooModel
        ] = {}  # model-adapting attacks: (step, model) -> adapted copy
        self.attacked_batches: AttackedBatches | None = None

    def run(self, inputs: GroupInputs) -> tuple[list[Cell], dict[str, torch.Tensor]]:
        size = self.services.batch_size
        self.attacked_batches = AttackedBatches(
            self.group, self.steps, self.services.attack, inputs.count, size, self.services.entry
        )
        releases = self.releases(inputs)
        ahead, context = self.fit_attacks(releases, inputs)
        with self.cpu_pool() as pool:
            for start, clean, labels, encoding in _drain(ahead, releases):
                context.batch_labels = labels
                self.services.phase(
                    self.group, f"batch {start // size + 1}/{-(-inputs.count // size)}: attack and score"
                )
                for step, draw, attacked in self.attacked(pool, start, encoding.images):
                    self.measure_attack(step, draw, start, clean, attacked)
                    self.score(step, draw, start, clean, attacked, labels, encoding, inputs.clean_predictions)
                faults.point("group_batch")
                return_freed_memory()  # the batch's tensors are gone: keep the footprint flat over many batches
        count = self.services.sample_images  # only the shown images travel back from a worker
        shown = dict.fromkeys(
            ["clean", self.group.encoder.name, *(step.label for step in self.steps)]
        )  # the grid's row order
        return self.assemble(inputs.image_ids), {
            label: self.sample_rows[label][:count] for label in shown if label in self.sample_rows
        }

    def releases(self, inputs: GroupInputs) -> Iterator[Release]:
        """Stage 1 over the dataset, batch by batch: (start, clean batch, its labels, its release)."""
        size = self.services.batch_size
        for start in range(0, inputs.count, size):
            self.services.phase(self.group, f"batch {start // size + 1}/{-(-inputs.count // size)}: encode")
            clean = inputs.clean(start, size)
            yield Release(start, clean, inputs.labels[start : start + size], self.encode(clean, first=start == 0))

    def fit_attacks(self, releases: Iterator[Release], inputs: GroupInputs) -> tuple[list[Release], AttackContext]:
        """Fit every attack once per group, before the first batch is attacked; returns the batches encoded for it.

        An attack fits on its ``released`` budget of the group's first NEs, whatever the batch size: as many
        batches are encoded ahead as the largest budget needs (only their releases are held), and a budget above
        the group's images is clamped to them (the cells' ``budget_released`` says how many were used). An
        attack without a budget fits on the first batch.
        """
        count = inputs.count
        budgets = {id(step.spec): getattr(self.services.attack(step).params, "released", None) for step in self.steps}
        needed = min(max((b for b in budgets.values() if b), default=0), count)
        ahead: list[Release] = []
        for release in releases:
            ahead.append(release)
            if sum(len(r.clean) for r in ahead) >= needed:
                break
        released = (
            ahead[0].encoding.images if len(ahead) == 1 else torch.cat([r.encoding.images for r in ahead])[:needed]
        )
        context = self.attack_context(released, inputs)
        first_batch = len(ahead[0].clean)
        for spec_id, budget in budgets.items():
            spec_steps = [s for s in self.steps if id(s.spec) == spec_id]
            if budget and budget > count:
                self.services.note(
                    self.group,
                    f"{spec_steps[0].spec.name} asks for {budget} released NEs, the group has {count}: it fits on "
                    f"{count}",
                )
            began = time.perf_counter()
            with blame(self.services.entry(spec_steps[0].spec)):
                self.services.attack(spec_steps[0]).prepare(
                    replace(context, released=released[: budget or first_batch])
                )
            for step in spec_steps:  # every strength of the attack needs its fit
                self.attacked_batches.seconds[step] += time.perf_counter() - began
        return ahead, context

    def cpu_pool(self) -> contextlib.AbstractContextManager[ThreadPoolExecutor | None]:
        """Threads for the group's CPU-only attacks when they may overlap with device work, else None."""
        steps = sum(1 for step in self.steps if self.services.attack(step).cpu_only)
        if not (self.services.overlap_cpu_attacks and steps):
            return contextlib.nullcontext()
        return ThreadPoolExecutor(min(steps, os.cpu_count() or 1), thread_name_prefix="nxb-cpu-attack")

    # stage 2
    def attacked(
        self, pool: ThreadPoolExecutor | None, start: int, released: torch.Tensor
    ) -> Iterator[tuple[AttackStep, int, torch.Tensor]]:
        """Every (step, draw) of one batch with its attacked images. With a pool, each CPU-only step runs its draws
        on a pool thread while the other steps run here, and is handed on last: its CPU work overlaps the device's."""
        on_pool = {
            step: pool.submit(self.all_draws, step, start, released)
            for step in self.steps
            if pool and self.services.attack(step).cpu_only
        }
        for step in self.steps:
            if step not in on_pool:
                for draw in range(self.draws[step]):
                    yield step, draw, self.attacked_batches(step, draw, start, released)
        for step, future in on_pool.items():
            for draw, attacked in enumerate(future.result()):
                yield step, draw, attacked

    def all_draws(self, step: AttackStep, start: int, released: torch.Tensor) -> list[torch.Tensor]:
        return [self.attacked_batches(step, draw, start, released) for draw in range(self.draws[step])]

    def attack_context(self, released: torch.Tensor, inputs: GroupInputs) -> AttackContext:
        """What informed attackers of this group may use; attackers' encodings use draws keyed apart from the
        release."""

        def encode(images: torch.Tensor, model: ZooModel, key: str | None = None) -> torch.Tensor:
            generator = (
                keyed_generator(self.group.draw_key, "attacker", model.name)
                if key is None
                else keyed_generator("attacker key", key, model.name)
            )
            return self.encoder.encode(images, model, self.group.strength, generator).images

        public = self.services.public_images(self.authorized)
        unauthorized = tuple(
            sorted(
                {
                    name
                    for _, name in self.group.cells
                    if self.services.role(name, self.group.authorized) == "unauthorized"
                }
            )
        )
        tuning = TuningImages(
            partial(self.tuning_images, inputs),
            unauthorized,
            self.services.predict,
            self.services.batch_size,
            partial(self.services.note, self.group),
        )
        return AttackContext(
            self.deployed,
            self.services.model,
            public,
            released,
            public_labels=self.services.public_labels(),
            encode=encode,
            tuning=tuning,
        )

    def tuning_images(self, inputs: GroupInputs, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``limit`` of the verdict's tuning images (``VerdictSpec.split`` over the labelled images, as the
        verdict
        splits them) as (their released NEs on the host, their labels), in dataset order.

        The group is encoded again from the start of its generator, batch by batch, up to the last of them, so each NE
        is
        the one the group releases; only those images are kept."""
        labels = inputs.labels.cpu()
        labelled = torch.nonzero(labels >= 0).flatten().numpy()
        tuning, _ = self.services.verdict.split(len(labelled))
        wanted = np.sort(labelled[tuning[:limit]])
        size, generator, kept = self.services.batch_size, keyed_generator(self.group.draw_key, "encode"), []
        for start in range(0, int(wanted[-1]) + 1 if len(wanted) else 0, size):
            released = self.release(inputs.clean(start, size), generator).images
            rows = wanted[(wanted >= start) & (wanted < start + len(released))] - start
            kept.append(released[torch.as_tensor(rows, device=released.device)].cpu())
        images = torch.cat(kept) if kept else torch.empty(0, *self.authorized.input_size)
        return images, labels[torch.as_tensor(wanted, dtype=torch.long)]

    # stage 1
    def encode(self, clean: torch.Tensor, first: bool) -> Encoding:
        """The release of one clean batch; on the first batch also the group's bound numbers and sample rows."""
        encoding = self.release(clean, self.encode_generator)
        self.measures.stored_psnr.append(psnr_per_image(clean, encoding.images))
        self.measures.encoded_psnr.append(encoding.achieved_psnr)
        self.encoder_info = encoding.info
        if first and self.services.bounds and any(self.services.attack(step).baseline for step in self.steps):
            models = {name: self.services.model(name) for _, name in self.missing}
            self.bounds = _group_bounds(self.encoder, self.authorized, clean, encoding, models)
        if first and self.services.sample_images:
            self.sample_rows = {
                "clean": self.sample_row(clean),
                self.group.encoder.name: self.sample_row(encoding.images),
            }
        return encoding

    def release(self, clean: torch.Tensor, generator: torch.Generator) -> Encoding:
        """The group's encoder on one clean batch, drawing from ``generator``, as the release stores it."""
        with blame(self.services.entry(self.group.encoder)):
            encoding = self.encoder.encode(clean, self.authorized, self.group.strength, generator)
        if self.group.storage != "float32":  # the release is what comes back from the stored files
            encoding.images = apply_storage(encoding.images, self.group.storage)
            encoding.flat_input = None  # the flat-input path bypasses any stored file
        return encoding

    def measure_attack(
        self, step: AttackStep, draw: int, start: int, clean: torch.Tensor, attacked: torch.Tensor
    ) -> None:
        self.measures.attacked_psnr[step].append(psnr_per_image(clean, attacked))
        self.measures.attacked_ssim[step].append(ssim_per_image(clean, attacked))
        strongest = step.strength == max(step.spec.strengths)
        if draw == 0 and start == 0 and self.sample_rows and strongest and not self.services.attack(step).baseline:
            self.sample_rows[step.label] = self.sample_row(attacked)

    def sample_row(self, batch: torch.Tensor) -> torch.Tensor:
        """The images a sample figure shows, copied to the host: the group keeps no whole device batch for them."""
        return batch[: self.services.sample_images].cpu().clone()

    # stage 3
    @torch.no_grad()
    def score(
        self,
        step: AttackStep,
        draw: int,
        start: int,
        clean: torch.Tensor,
        attacked: torch.Tensor,
        labels: torch.Tensor,
        encoding: Encoding,
        clean_predictions: dict[str, torch.Tensor],
    ) -> None:
        """Every model with a missing cell for ``step`` classifies the attacked batch."""
        attack = self.services.attack(step)
        unchanged = (
            torch.equal(attacked, clean) and not attack.adapts_model
        )  # e.g. clean/identity: the clean predictions are this cell's
        for cell_step, model_name in self.missing:
            if cell_step is not step:
                continue
            model = self.deployed if model_name == self.group.authorized else self.services.model(model_name)
            if attack.adapts_model:  # the attacker adapts its model, the images pass unchanged
                model = self.adapt(step, model)
            if model.training:
                raise ComponentError(f"{self.services.entry(step.spec)}: left model {model_name!r} in training mode")
            clean_pred = clean_predictions[model_name][start : start + len(attacked)]
            predictions = clean_pred if unchanged else self.services.predict(model, attacked)
            tally = self.tallies[(step, model_name)]
            tally.add(draw, predictions, labels, clean_pred)
            if self.scores_flat_input(step, model_name, encoding):
                tally.add_flat(
                    model.forward_first_layer(attacked, encoding.flat_input.first_layer(model.first_conv.weight))
                    .argmax(1)
                    .cpu(),
                    labels,
                )

    def adapt(self, step: AttackStep, model: ZooModel) -> ZooModel:
        """The model as ``step``'s attack adapts it, computed once per group and timed with the attack stage."""
        if (step, model.name) not in self.adapted:
            began = time.perf_counter()
            with (
                torch.enable_grad(),
                blame(self.services.entry(step.spec)),
            ):  # fine-tuning attacks train; score() runs under no_grad
                self.adapted[(step, model.name)] = self.services.attack(step).adapt(model, step.strength)
            self.attacked_batches.seconds[step] += time.perf_counter() - began
        return self.adapted[(step, model.name)]

    def scores_flat_input(self, step: AttackStep, model_name: str, encoding: Encoding) -> bool:
        """The one place the published protocol's flat input is scored: the authorized model, no attack,
        an encoder that produced one (the reference recipe on an overlapping stem, stored as float32)."""
        return (
            encoding.flat_input is not None
            and model_name == self.group.authorized
            and self.services.attack(step).baseline
        )

    # stage 4
    def cell_bounds(self, model_name: str) -> dict:
        """The bound numbers of a baseline cell; without bounds only the mark that they were not computed."""
        if not self.services.bounds:
            return {NOT_COMPUTED: False}
        return self.bounds[0] | self.bounds[1].get(model_name, {})

    def assemble(self, image_ids: str) -> list[Cell]:
        encoded_psnr = torch.cat(self.measures.encoded_psnr)
        stored_psnr = torch.cat(self.measures.stored_psnr)
        group = self.group
        cells = []
        for (step, model_name), key in self.missing.items():
            attack = self.services.attack(step)
            role = self.services.role(model_name, group.authorized)
            tally = self.tallies[(step, model_name)]
            bounds = self.cell_bounds(model_name) if attack.baseline else {}
            with blame(self.services.entry(step.spec)):
                budget, parameter, measured = (
                    attack.budget(step.strength),
                    attack.parameter(step.strength),
                    attack.measured(step.strength),
                )
            cells.append(
                Cell(
                    key=key,
                    suite=self.services.suite_name,
                    group=group.key,
                    authorized=group.authorized,
                    encoder=group.encoder.name,
                    strength=group.strength,
                    seed=group.seed,
                    storage=group.storage,
                    precision=self.services.precision,
                    attack=step.spec.name,
                    attack_strength=step.strength,
                    attack_param=parameter,
                    attack_measured=measured,
                    attack_config=step.spec.params,
                    baseline=attack.baseline,
                    model=model_name,
                    role=role,
                    encoded_psnr=_finite_mean(encoded_psnr),
                    encoded_psnr_min=_finite_min(encoded_psnr),
                    stored_psnr=_finite_mean(stored_psnr),
                    attacked_psnr=_finite_mean(torch.cat(self.measures.attacked_psnr[step])),
                    attacked_ssim=round(float(torch.cat(self.measures.attacked_ssim[step]).mean()), 4),
                    draws=self.draws[step],
                    encoder_info=self.encoder_info,
                    bounds=bounds,
                    outcomes=tally.outcomes(image_ids),
                    tier=attack.threat.tier.value,
                    budget_released=budget.released,
                    budget_labelled=budget.labelled,
                    budget_public=budget.public,
                    attack_seconds=round(self.attacked_batches.seconds[step], 4),
                    device=self.attacked_batches.devices.get(step, "cpu"),
                    threads=torch.get_num_threads(),
                    **tally.metrics(role),
                )
            )
        return cells


def _drain(ahead: list[Release], rest: Iterator[Release]) -> Iterator[Release]:
    """The batches in ``ahead`` (taken out as they go, so each is freed once used), then those of ``rest``."""
    while ahead:
        yield ahead.pop(0)
    yield from rest


def _attacked_keys(group: EncodingGroup, step: AttackStep, draw: int, count: int, size: int) -> list[str]:
    """Cache keys of one attack draw's output batches: the group (its encoding and data), the attack, the batching and
    torch's CPU threads (a fitted attack's float sums depend on them; a cell records the count it ran with)."""
    attack = {"name": step.spec.name, "params": step.spec.params, "version": ATTACKS.get(step.spec.name).version}
    return [
        stable_hash(
            {
                "group": group.key,
                "attack": attack,
                "strength": step.strength,
                "draw": draw,
                "start": start,
                "size": size,
                "threads": torch.get_num_threads(),
            }
        )
        for start in range(0, count, size)
    ]


def _group_bounds(
    encoder: Encoder, authorized: ZooModel, clean: torch.Tensor, encoding: Encoding, models: dict
) -> tuple[dict, dict]:
    """Bound-tightness numbers of one encoding group (:mod:`nonxfer_bench.linalg.bounds`); never fails a run."""
    try:
        return group_bounds(authorized, encoder, clean, encoding, models)
    except Exception as error:  # noqa: BLE001 - a diagnostic must not cost the benchmark its cells
        return {"bound/error": f"{type(error).__name__}: {str(error)[:300]}"}, {}


def _finite_mean(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return round(float(finite.mean()), 4) if len(finite) else None


def _finite_min(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return round(float(finite.min()), 4) if len(finite) else None
