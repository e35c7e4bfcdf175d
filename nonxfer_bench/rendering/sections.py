"""A leaderboard is a list of sections: a title, an optional sentence above its table, the table, and its own
glossary under it (what its columns and intervals mean)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
    title: str
    table: str  # Markdown: one table, or several with their own paragraphs
    intro: str = ""  # above the table: what the section scores
    glossary: str = ""  # under the table: what its columns and intervals mean

    def lines(self) -> list[str]:
        """The section as Markdown lines: title, then each part that is there, a blank line after each."""
        return [f"## {self.title}", ""] + [
            line for part in (self.intro, self.table, self.glossary) if part for line in (part, "")
        ]
