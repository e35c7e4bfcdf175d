"""The one strict base for every parameter and schema model: an unknown key is an error, never ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A pydantic model that refuses keys it does not declare (a typo in a suite is an error) and infinite or
    NaN numbers (no parameter means anything at infinity)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NoParams(Strict):
    """Parameters of a component that takes none."""
