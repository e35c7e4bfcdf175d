"""What a run tells its user: the plan at the start, then each group's phase and completion.

The plan and plain lines go to standard output, so that standard error holds only errors (one line each).
When standard error is a terminal the groups are one progress bar there whose postfix names the group and
its phase (encode, attack and score); otherwise (a log, a scheduler) each finished group is one plain,
timestamped line. Every event is also appended to ``runs/<suite>/run.log``, so a run that ran unattended
can be read afterwards.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm


@dataclass(frozen=True)
class Plan:
    """The size of a run: encodings (groups) x attack steps x models = cells, and how many are already done."""

    groups: int
    attack_steps: int
    models: int
    cells: int
    finished_cells: int
    pending_groups: int

    def describe(self) -> str:
        todo = self.cells - self.finished_cells
        if not todo:
            return f"plan: all {self.cells} cells of {self.groups} encodings are finished; nothing to compute"
        return (
            f"plan: {self.groups} encodings x {self.attack_steps} attack steps x {self.models} models = {self.cells} "
            f"cells; {self.finished_cells} finished, {todo} to compute in {self.pending_groups} encodings"
        )


class Progress:
    """Reports a run's plan and groups: plain lines to ``stream``, a bar on ``bar_stream`` when it is a terminal, a log
    file."""

    def __init__(
        self, suite_name: str, log_path: Path | None, stream: TextIO | None = None, bar_stream: TextIO | None = None
    ) -> None:
        self.suite_name = suite_name
        self.stream = stream or sys.stdout
        self.bar_stream = bar_stream or sys.stderr
        self.log_path = log_path
        self.log: TextIO | None = None  # opened on the first event, closed by close()
        self.bar: tqdm | None = None
        self.done = 0
        self.total = 0
        self.started: dict[str, float] = {}

    @property
    def terminal(self) -> bool:
        return hasattr(self.bar_stream, "isatty") and self.bar_stream.isatty()

    def _line(self, text: str, show: bool = True) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.suite_name}: {text}"
        if self.log is None and self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log = open(self.log_path, "a")  # noqa: SIM115 - closed in close()
        if self.log is not None:
            self.log.write(stamped + "\n")
            self.log.flush()
        if show and not self.terminal:
            print(stamped, file=self.stream, flush=True)

    def plan(self, plan: Plan) -> None:
        """Say what will be done; on a terminal also open the bar over the groups to compute."""
        self.total = plan.pending_groups
        print(f"{self.suite_name}: {plan.describe()}", file=self.stream, flush=True)
        self._line(plan.describe(), show=False)
        if self.terminal and plan.pending_groups:
            self.bar = tqdm(total=plan.pending_groups, desc=self.suite_name, unit="encoding", file=self.bar_stream)

    def phase(self, group: str, phase: str) -> None:
        """A group entered a phase (only groups computed in this process report phases)."""
        self.started.setdefault(group, time.monotonic())
        if self.bar is not None:
            self.bar.set_postfix_str(f"{group}: {phase}")
        else:
            self._line(f"{group}: {phase}", show=False)

    def note(self, text: str) -> None:
        """A line the user should read (e.g. a budget clamped to the images a group has), shown even beside a bar."""
        if self.bar is not None:
            self.bar.write(f"note: {text}", file=self.bar_stream)
        self._line(f"note: {text}", show=self.bar is None)

    def group_done(self, group: str) -> None:
        self.done += 1
        began = self.started.pop(group, None)  # None: computed by a worker, which reports no phases to time it by
        took = "" if began is None else f" ({time.monotonic() - began:.1f} s)"
        text = f"encoding {self.done}/{self.total} finished: {group}{took}"
        if self.bar is not None:
            self.bar.update()
            self._line(text, show=False)
        else:
            self._line(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.log is not None:
            self.log.close()
