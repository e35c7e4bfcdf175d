"""The attack interface: a released batch in, an attacked batch out, one common strength axis.

A contributor writes one class: declare ``Params`` (pydantic), map the common strength in [0, 1]
to the attack's own parameter in ``parameter``, and transform images in ``forward``. Strength 0 is
the mildest setting, 1 the harshest. Images are float [0, 1]-unit batches (B x C x H x W) that may be
unclipped (the reference encoder releases unclipped floats); the attack decides what it does with
out-of-range values and says so in its docstring.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

import torch
from pydantic import BaseModel

from nonxfer_bench.attacks.threat import Budget, ThreatModel, Tier
from nonxfer_bench.core.params import NoParams
from nonxfer_bench.core.registry import Registry

if TYPE_CHECKING:
    from nonxfer_bench.zoo import ZooModel

ATTACKS: Registry["Attack"] = Registry("attack", "nonxfer_bench.attacks", "nonxfer_bench.attacks")


class Encode(Protocol):
    """The group's encoder as an attacker may call it (:attr:`AttackContext.encode`)."""

    def __call__(self, images: torch.Tensor, model: "ZooModel", key: str | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class TuningImages:
    """The verdict's tuning images of the group's release, for an attack that searches its own settings (``tuned``).

    The images the verdict picks each tier's strongest attack on
    (:meth:`~nonxfer_bench.schema.protocol.VerdictSpec.split`
    of the suite's protocol, else its defaults), never those it reports on; their labels are what the evaluator's own
    choice already reads.
    - ``released``: (n) -> the first n tuning images in the split's order, as (their released NEs on the host, their
      labels), in dataset order; each call encodes the group again up to the last of them (only they are kept);
    - ``models``: the group's unauthorized evaluated models (a search scores their mean accuracy);
    - ``predict``: top-1 predictions of one batch on the host, in smaller chunks where a batch runs out of memory;
    - ``note``: a line of progress for the user.
    """

    released: Callable[[int], tuple[torch.Tensor, torch.Tensor]]
    models: tuple[str, ...]
    predict: Callable[["ZooModel", torch.Tensor], torch.Tensor]
    batch_size: int
    note: Callable[[str], None]


@dataclass
class AttackContext:
    """What an informed attacker may use; an attack takes only what its threat model grants.

    Built once per encoding group by the runner and handed to :meth:`Attack.fit`.
    - ``authorized``: the authorized model as deployed for this release (oracle and integrity attacks only): for a
      keyed scheme, transformed with the release's key (:meth:`Encoder.authorized_view`), else the zoo model;
    - ``model``: looks up any zoo model by name (surrogate candidates named in the attack's params);
    - ``public_images``: clean images from a split disjoint from the evaluation images, at the release
      resolution ([0, 1]); empty when the suite declares no ``public`` dataset;
    - ``released``: the first released (encoded) images of this group: as many as the attack's ``released``
      budget (across batches, at most the group's images), else the first batch;
    - ``batch_labels``: labels of the batch being attacked (integrity attacks), set per batch;
    - ``public_labels``: labels of ``public_images`` (None when unknown);
    - ``encode``: the group's encoder at the group's strength, keyed apart from the release's draws: (clean
      images, a model) in, NEs made for that model out. With the authorized model: the owner's release of a
      labelled set (labelled-NE attackers); with a model the attacker holds: self-made noise of the release's kind.
      ``key``: the attacker's own key instead (draws from a generator keyed by it alone, not by the group): for a
      scheme whose transform is public and whose secret is drawn from its generator, encodings under a key the
      attacker chose.
    - ``tuning``: the verdict's tuning images and how to score them (:class:`TuningImages`); None where the runner has
      none.
    """

    authorized: "ZooModel"
    model: Callable[[str], "ZooModel"]
    public_images: torch.Tensor
    released: torch.Tensor
    batch_labels: torch.Tensor | None = None
    public_labels: torch.Tensor | None = None
    encode: Encode | None = None
    tuning: TuningImages | None = None

    def limited(self, released: int | None, public: int | None) -> "AttackContext":
        """The same context holding only the first ``released`` NEs and ``public`` clean images (None: all)."""
        labels = self.public_labels
        return replace(
            self,
            released=self.released[:released],
            public_images=self.public_images[:public],
            public_labels=None if labels is None else labels[:public],
        )


class Attack(ABC):
    """A registered attack; ``threat`` states, as data, what the attacker knows and uses.

    Attacks that learn from data or use models override :meth:`fit`, which the runner calls (through
    :meth:`prepare`, which applies the ``released``/``public`` budget parameters and records the
    :class:`Budget` given in ``spent``) once per encoding group before the first batch is attacked. Attacks that adapt
    the unauthorized party's model instead of the images set ``adapts_model`` and implement :meth:`adapt`.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = NoParams
    threat: ClassVar[ThreatModel] = ThreatModel(
        tier=Tier.NONE, text="no knowledge: a fixed transformation of the released images"
    )
    # the score stage evaluates adapt(model) on the images this attack returns (usually unchanged)
    adapts_model: ClassVar[bool] = False
    # expensive attacks (networks, iterations): the runner caches their outputs per group, step, draw and batch
    cache_outputs: ClassVar[bool] = False
    # the no-attack step: its cells are the baseline every attack is compared with, and carry the bound numbers
    baseline: ClassVar[bool] = False
    # measures what a release leaks and returns its images unchanged (identify): no rung of the ladder, no verdict step
    measures_only: ClassVar[bool] = False
    # computes on the CPU whatever the batch's device (libjpeg, scikit-image): on an accelerator the runner runs it
    # on a thread pool, beside the device work of the other attacks
    cpu_only: ClassVar[bool] = False

    def __init__(self, params: BaseModel) -> None:
        self.params = params
        self.spent = Budget()

    def prepare(self, context: AttackContext) -> None:
        """Fit on the budget this attack may spend (its ``released``/``public`` parameters, else everything the
        group holds) and record in ``spent`` how many images of each kind it was given."""
        released, public = getattr(self.params, "released", None), getattr(self.params, "public", None)
        limited = context.limited(released, public)
        threat = self.threat
        self.spent = Budget(
            released=len(limited.released) if threat.released else 0,
            public=len(limited.public_images) if threat.public else 0,
        )
        self.fit(limited)

    def budget(self, strength: float) -> Budget:
        """What the attack spends at ``strength`` (recorded per cell); attacks whose use depends on it override."""
        return self.spent

    def adapt(self, model: "ZooModel", strength: float) -> "ZooModel":
        """An adapted copy of ``model`` (after :meth:`fit`), for attacks with ``adapts_model``; the default keeps it."""
        return model

    @property
    def draws(self) -> int:
        """How many stochastic draws the runner evaluates (``Params.draws`` if declared, else 1)."""
        return int(getattr(self.params, "draws", 1))

    def fit(self, context: AttackContext) -> None:
        """Learn what the attack needs (subspaces, priors, surrogates); the default needs nothing."""

    def parameter(self, strength: float) -> dict[str, Any]:
        """The attack's own setting(s) at a common strength (``quality=50``), for logs and tables: with the
        budget, what tells this attack step from its others (:class:`~nonxfer_bench.cells.step.Step`)."""
        return {}

    def measured(self, strength: float) -> dict[str, Any]:
        """What the fit found on this release (a chosen candidate, a variance ratio): kept in the cell
        (``attack_measured``), never part of the step's identity, since it differs between releases."""
        return {}

    @abstractmethod
    def forward(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        """Attack a batch; must keep its shape and dtype."""

    def __call__(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"{self.name}: strength {strength} outside [0, 1]")
        return self.forward(images, strength, generator)


def to_unit_range(images: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map images into [0, 1] for 8-bit codecs: 'clip' clamps; 'minmax' rescales each image (reference).

    Returns the mapped images and the per-image (low, scale) to undo the mapping.
    """
    if mode == "clip":
        low = torch.zeros(len(images), 1, 1, 1, dtype=images.dtype, device=images.device)
        return images.clamp(0, 1), low, torch.ones_like(low)
    flat = images.flatten(1)
    low = flat.min(1).values.view(-1, 1, 1, 1)
    scale = (flat.max(1).values.view(-1, 1, 1, 1) - low).clamp_min(1e-12)
    return (images - low) / scale, low, scale
