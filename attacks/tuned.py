"""``tuned``: another attack with its settings chosen by a search on the verdict's tuning images (Optuna).

An attack's settings (a blur's sigma, a subspace attack's dimensions, a fine-tuning's learning rate) decide how strong
it is; picking them on the images a result is reported on would inflate that result (the winner's curse). ``tuned``
searches them on the tuning images alone: the share of the evaluated images on which the verdict picks each tier's
strongest attack (:meth:`~nonxfer_bench.schema.protocol.VerdictSpec.split` of the suite's protocol, or its defaults
without one), never the images the verdict reports on. The search reads those images' labels, as the evaluator's own
choice already does, and nothing else beyond the searched attack's threat model.

For each strength of the step, an Optuna study (seeded TPE; a seeded grid, each combination at most once, when the space
lists values alone) maximizes the mean accuracy of the group's unauthorized models on the tuning images, attacked by the
inner
attack fitted with the trial's settings at that strength. The best trial (the earliest of equals) attacks the release.
The cells record, in ``attack_measured``, the chosen settings (``tuned``), their accuracy there (``tuning_accuracy``, on
``tuning_images`` images) and every trial as ``settings:accuracy`` (``trace``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import torch
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext
from nonxfer_bench.attacks.threat import Budget, ThreatModel, Tier
from nonxfer_bench.core.hashing import keyed_generator
from nonxfer_bench.core.params import MAX_IMAGES, Strict, describe_error
from nonxfer_bench.metrics.statistics import wilson
from nonxfer_bench.zoo import ZooModel

MAX_TRIALS = 64
# what the runner reads from an attack before it is fitted: fixed for the step, never searched
UNSEARCHED = {"draws": "the number of draws the runner evaluates"}

Choice = (
    bool
    | Annotated[int, Field(ge=-(10**9), le=10**9)]
    | Annotated[float, Field(ge=-1e9, le=1e9)]
    | Annotated[str, Field(max_length=200)]
)


class SearchRange(Strict):
    """A numeric range of one setting: uniform, or log-uniform (``log``), over reals or integers (``int``)."""

    low: float = Field(ge=-1e9, le=1e9)
    high: float = Field(ge=-1e9, le=1e9)
    log: bool = Field(False, description="sample log-uniformly (low > 0)")
    int: bool = Field(False, description="integer values (low and high are integers)")

    @model_validator(mode="after")
    def _valid_range(self) -> SearchRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"log needs low > 0 (low is {self.low:g})")
        if self.int and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"int needs integer low and high (got {self.low:g}, {self.high:g})")
        return self

    def ends(self) -> list[float | int]:
        return [int(self.low), int(self.high)] if self.int else [self.low, self.high]


class TunedParams(Strict):
    attack: str = Field(min_length=1, max_length=100, description="the registered attack whose settings are searched")
    params: Any = Field(default_factory=dict, validate_default=True, description="that attack's fixed parameters")
    space: dict[str, SearchRange | list[Choice]] = Field(
        min_length=1,
        max_length=16,
        description="parameter of the attack -> a range {low, high, log, int} or a list of values (1 to 64)",
    )
    trials: int = Field(
        16, ge=1, le=MAX_TRIALS, description="trials per study (one study per strength and encoding group)"
    )
    images: int = Field(
        1000,
        ge=1,
        le=MAX_IMAGES,
        description="at most this many tuning images score a trial (the first of the tuning split)",
    )
    seed: int = Field(0, ge=0, lt=2**31, description="seeds the sampler and the inner attack's draws")

    @field_validator("attack")
    @classmethod
    def _searchable(cls, name: str) -> str:
        searchable = [
            n for n in ATTACKS.names() if n != "tuned" and not (ATTACKS.get(n).baseline or ATTACKS.get(n).measures_only)
        ]
        if name not in searchable:
            why = (
                "unknown attack"
                if name not in ATTACKS.names()
                else "no settings to search that change what a model classifies in"
            )
            raise ValueError(f"{why} {name!r}; valid: {', '.join(searchable)}")
        return name

    @field_validator("params")
    @classmethod
    def _inner_params(cls, values: Any, info: ValidationInfo) -> Any:
        """The inner attack's validated parameters (left as given when ``attack`` itself is invalid)."""
        return _validated(ATTACKS.get(info.data["attack"]), values, "") if "attack" in info.data else values

    @field_validator("space", mode="before")
    @classmethod
    def _bounded_choices(cls, space: Any) -> Any:
        for key, value in space.items() if isinstance(space, dict) else ():
            if isinstance(value, list) and not 1 <= len(value) <= MAX_TRIALS:
                raise ValueError(f"'{key}' lists {len(value)} values; give 1 to {MAX_TRIALS}")
        return space

    @field_validator("space")
    @classmethod
    def _inner_settings(
        cls, space: dict[str, SearchRange | list], info: ValidationInfo
    ) -> dict[str, SearchRange | list]:
        """Every searched key is a parameter of the inner attack; each end of a range and each listed value is valid
        there
        and keeps the inner attack's threat model."""
        if "attack" not in info.data or "params" not in info.data:
            return space
        inner, params = ATTACKS.get(info.data["attack"]), info.data["params"]
        base = inner(params).threat
        for key, values in space.items():
            if key not in inner.Params.model_fields or key in UNSEARCHED:
                fixed = f" ('{key}' is {UNSEARCHED[key]}, fixed per step)" if key in UNSEARCHED else ""
                searchable = ", ".join(k for k in inner.Params.model_fields if k not in UNSEARCHED) or "none"
                raise ValueError(
                    f"'{key}' is not a setting of attack {inner.name!r} to search{fixed}; valid: {searchable}"
                )
            for value in values.ends() if isinstance(values, SearchRange) else values:
                threat = inner(
                    _validated(inner, params.model_dump(mode="json") | {key: value}, f"'{key}' = {value!r}: ")
                ).threat
                if threat != base:
                    raise ValueError(
                        f"'{key}' = {value!r} makes {inner.name} a {threat.tier.value!r} attack, not "
                        f"{base.tier.value!r}; a step keeps one threat model"
                    )
        return space


def _validated(inner: type[Attack], values: Any, where: str) -> Any:
    """``values`` as ``inner``'s parameters; a ValueError naming ``inner``'s parameter otherwise."""
    try:
        return inner.Params.model_validate(values)
    except ValidationError as error:
        sub, message = describe_error(error, inner.Params)
        raise ValueError(f"{where}{inner.name} parameter '{sub}': {message}" if sub else f"{where}{message}") from None


@ATTACKS.register("tuned")
class Tuned(Attack):
    """Another attack (``attack``, ``params``) with the settings in ``space`` chosen per strength and group by an Optuna
    search on the verdict's tuning images (module docstring).

    The step's strength passes through to the inner attack (to search a strength, search the attack's own parameter at
    strength 1: ``blur``'s ``max_sigma``). Its threat model and budgets are the inner attack's; the search also reads
    the
    labels of the tuning images, as the evaluator's choice of the strongest attack does. Each trial fits the inner
    attack
    anew (its ``released``/``public`` budgets apply) and attacks at most ``images`` tuning images in batches, with one
    draw from a generator keyed by ``seed`` and the strength (the same for every trial); an attack that adapts models
    adapts each unauthorized model once per trial. Cost: ``trials`` fits and attacks of those images per strength.
    """

    Params = TunedParams
    threat = ThreatModel(
        tier=Tier.NONE,
        text="the searched attack's tier and budgets (recorded per cell); its settings are chosen on the "
        "labelled tuning images, never on the reported ones",
    )

    def __init__(self, params: TunedParams) -> None:
        super().__init__(params)
        self.inner = ATTACKS.get(params.attack)(params.params)  # the attack as the suite fixed it, before any search
        self.threat = self.inner.threat
        self.adapts_model = self.inner.adapts_model
        self.context: AttackContext | None = None
        self.tuning: tuple[torch.Tensor, torch.Tensor] | None = (
            None  # the tuning images' released NEs (host) and labels
        )
        self.studies: dict[float, _Study] = {}  # strength -> its finished study

    @property
    def draws(self) -> int:
        return self.inner.draws

    def fit(self, context: AttackContext) -> None:
        if context.tuning is None:
            raise ValueError(
                "tuned: needs the verdict's tuning images (AttackContext.tuning), which the runner provides"
            )
        released, labels = context.tuning.released(self.params.images)
        if not len(released):
            raise ValueError(
                "tuned: no labelled tuning images to score a trial on: the evaluated images have no labels, or too "
                "few for the verdict's tuning share"
            )
        self.context, self.tuning, self.studies = context, (released, labels), {}

    def study(self, strength: float) -> _Study:
        """The search at ``strength``, run on first use and kept."""
        if self.context is None or self.tuning is None:
            raise RuntimeError(f"{self.name}: call fit() with an AttackContext before attacking")
        if strength not in self.studies:
            self.studies[strength] = _Study(self, strength)
        return self.studies[strength]

    def parameter(self, strength: float) -> dict:
        """What the step searches (the same on every release; what it chose is in :meth:`measured`)."""
        return {"search": f"{self.params.attack}:{'+'.join(sorted(self.params.space))}", "trials": self.params.trials}

    def measured(self, strength: float) -> dict:
        return self.study(strength).measured()

    def budget(self, strength: float) -> Budget:
        return self.study(strength).best.budget(strength)

    def adapt(self, model: ZooModel, strength: float) -> ZooModel:
        return self.study(strength).best.adapt(model, strength)

    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        return self.study(strength).best(images, strength, generator)


class _Study:
    """One Optuna study of a :class:`Tuned` attack at one strength: every trial's settings and score, and the best
    trial's fitted inner attack."""

    def __init__(self, tuned: Tuned, strength: float) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.tuned, self.strength = tuned, strength
        params, tuning = tuned.params, tuned.context.tuning
        self.models = [tuned.context.model(name) for name in tuning.models]
        if not self.models:
            raise ValueError("tuned: the group has no unauthorized model to score a trial on")
        self.scores: dict[tuple, float] = {}  # settings -> mean accuracy (a repeated trial is not recomputed)
        self.best: Attack = tuned.inner
        self.best_score = -1.0
        self.trials: list[tuple[dict[str, Any], float]] = []
        grid = _grid(params.space)
        sampler = (
            optuna.samplers.GridSampler(grid, seed=params.seed)
            if grid
            else optuna.samplers.TPESampler(seed=params.seed)
        )
        trials = min(params.trials, _size(grid)) if grid else params.trials
        what = f"tuned {params.attack} at strength {strength:g}"
        tuning.note(
            f"{what}: {trials} trials on {len(tuned.tuning[0])} tuning images x {len(self.models)} unauthorized models"
        )
        began = time.perf_counter()
        optuna.create_study(direction="maximize", sampler=sampler).optimize(self.objective, n_trials=trials)
        n = len(tuned.tuning[0])
        interval = wilson(min(self.best_score * n, n), n)
        tuning.note(
            f"{what}: {_text(self.settings)} reaches {self.best_score:.1%} [{interval.lo:.1%}, {interval.hi:.1%}] "
            f"mean unauthorized accuracy on n = {n} tuning images ({len(self.trials)} trials, "
            f"{time.perf_counter() - began:.1f} s)"
        )

    @property
    def settings(self) -> dict[str, Any]:
        """The best trial's settings: the first trial with the best score."""
        return max(self.trials, key=lambda trial: trial[1])[0]

    def objective(self, trial: Any) -> float:
        settings = {key: _suggest(trial, key, values) for key, values in self.tuned.params.space.items()}
        key = tuple(sorted(settings.items()))
        if key not in self.scores:
            inner = ATTACKS.create(
                self.tuned.params.attack, self.tuned.params.params.model_dump(mode="json") | settings
            )
            inner.prepare(self.tuned.context)
            self.scores[key] = self.score(inner)
            if self.scores[key] > self.best_score:
                self.best, self.best_score = inner, self.scores[key]
        self.trials.append((settings, self.scores[key]))
        return self.scores[key]

    def score(self, inner: Attack) -> float:
        """The mean accuracy of the unauthorized models on the tuning images attacked by the fitted ``inner`` (batch by
        batch, one draw keyed by the seed and the strength; the models adapted once where the attack adapts them)."""
        (released, labels), tuning, strength = self.tuned.tuning, self.tuned.context.tuning, self.strength
        generator = keyed_generator(self.tuned.name, self.tuned.params.seed, strength)
        models = self.models
        if inner.adapts_model:
            with torch.enable_grad():  # fine-tuning trains, whatever mode the caller computes in
                models = [inner.adapt(model, strength) for model in models]
        correct = torch.zeros(len(models), dtype=torch.long)
        for start in range(0, len(released), tuning.batch_size):
            attacked = inner(released[start : start + tuning.batch_size].to(self.models[0].device), strength, generator)
            truth = labels[start : start + tuning.batch_size].cpu()
            correct += torch.tensor([int((tuning.predict(model, attacked) == truth).sum()) for model in models])
        return float(correct.double().mean()) / len(released)

    def measured(self) -> dict[str, Any]:
        """The chosen settings, their tuning accuracy and images, every trial as ``settings:accuracy``; then what the
        chosen attack's own fit found."""
        ours = {
            "tuned": _text(self.settings),
            "tuning_accuracy": round(self.best_score, 4),
            "tuning_images": len(self.tuned.tuning[0]),
            "trace": "; ".join(f"{_text(settings)}:{value:.4f}" for settings, value in self.trials),
        }
        return self.best.measured(self.strength) | ours


def _grid(space: dict[str, SearchRange | list]) -> dict[str, list] | None:
    """The space as a grid when every entry lists its values, else None."""
    return None if any(isinstance(values, SearchRange) for values in space.values()) else dict(space)


def _size(grid: dict[str, list]) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def _suggest(trial: Any, key: str, values: SearchRange | list) -> Any:
    if isinstance(values, list):
        return trial.suggest_categorical(key, values)
    if values.int:
        return trial.suggest_int(key, int(values.low), int(values.high), log=values.log)
    return trial.suggest_float(key, values.low, values.high, log=values.log)


def _text(settings: dict[str, Any]) -> str:
    """``max_sigma=1.234,quality=20``: floats to 4 significant digits."""
    return ",".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in sorted(settings.items())
    )
