"""How one invocation runs a suite: one value shared by ``run``, ``train diffusion``, ``encode`` and ``verify``.

A suite file is what was asked for and stays as its file says (it is frozen once loaded); the command line's
``--device``, ``--precision``, ``--limit``, ``--no-bounds`` and ``--threads`` override its defaults here, never in
it. Which draws a run makes (CPU or CUDA generators: part of the cell keys off the CPU) follows from the device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nonxfer_bench.core.device import Precision, draw_kind, resolve_device
from nonxfer_bench.schema.suite import DatasetSpec, Suite


@dataclass(frozen=True)
class RunSettings:
    """The device (``auto``, ``cpu``, ``cuda`` or ``cuda:N``; resolved by :meth:`resolved`), the models' precision,
    how many images are evaluated (None: every image), whether the bound diagnostics run, and torch's threads."""

    device: str = "auto"
    precision: Precision = "fp32"
    limit: int | None = None
    bounds: bool = True
    threads: int | None = None

    @classmethod
    def of(
        cls, suite: Suite, device: str | None = None, precision: Precision | None = None, limit: int | None = None,
        bounds: bool = True, threads: int | None = None,
    ) -> RunSettings:  # fmt: skip
        """The suite file's settings with those given here in their place (``bounds=False`` turns them off)."""
        return cls(
            device or suite.device, precision or suite.precision, suite.dataset.limit if limit is None else limit,
            suite.bounds and bounds, threads or suite.threads,
        )  # fmt: skip

    def resolved(self) -> RunSettings:
        """With ``auto`` decided and the device checked (one line, exit 2, when it is not there): before any work."""
        return replace(self, device=str(resolve_device(self.device)))

    def on(self, device: str) -> RunSettings:
        return replace(self, device=device)

    @property
    def draws(self) -> str:
        """``cpu`` or ``cuda``: the generators the run's noise comes from
        (:func:`~nonxfer_bench.core.device.draw_kind`)."""
        return draw_kind(self.device)

    def dataset(self, suite: Suite) -> DatasetSpec:
        """The evaluated images: the suite's dataset with this run's limit."""
        return (
            suite.dataset
            if suite.dataset.limit == self.limit
            else suite.dataset.model_copy(update={"limit": self.limit})
        )

    def differences(self, suite: Suite) -> list[str]:
        """What this run changes of the suite as its file says (the results of such a run are not the suite's)."""
        reasons = []
        if self.limit != suite.dataset.limit:
            reasons.append(f"--limit {self.limit} (the suite: {suite.dataset.limit or 'every image'})")
        if self.precision != suite.precision:
            reasons.append(f"--precision {self.precision} (the suite: {suite.precision})")
        if self.bounds != suite.bounds:
            reasons.append("--no-bounds")
        if suite.device != "auto" and self.draws != draw_kind(suite.device):
            reasons.append(f"{self.draws} draws (the suite's device: {suite.device})")
        return reasons
