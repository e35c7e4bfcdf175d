"""Parameter models: one strict base, and one way a validation error becomes a user's message."""

import pytest
from pydantic import Field, field_validator

from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.core.params import Strict
from nonxfer_bench.core.registry import Registry
from nonxfer_bench.datasets import DATASETS
from nonxfer_bench.encoders import ENCODERS

REGISTRIES = {"attack": ATTACKS, "encoder": ENCODERS, "dataset": DATASETS}


@pytest.mark.parametrize(
    "kind, name", [(kind, name) for kind, registry in REGISTRIES.items() for name in registry.names()]
)
def test_every_registered_component_has_strict_params(kind, name):
    assert issubclass(REGISTRIES[kind].get(name).Params, Strict)


def test_create_turns_a_validation_error_into_one_line_naming_the_parameter():
    with pytest.raises(UserError) as caught:
        ATTACKS.create("blur", {"sigma": 2})
    assert str(caught.value) == "attack 'blur': parameter 'sigma': unknown key; valid keys here: max_sigma"
    with pytest.raises(
        UserError, match=r"^attack 'jpeg_pil': parameter 'max_quality': .*less than or equal to 100 \(got 101\)$"
    ):
        ATTACKS.create("jpeg_pil", {"max_quality": 101})
    with pytest.raises(UserError, match=r"^encoder 'patch': parameter 'tau': .*valid number.* \(got 'small'\)$"):
        ENCODERS.create("patch", {"tau": "small"})


class _Params(Strict):
    size: int = Field(3, ge=1)

    @field_validator("size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"size {value} must be odd")
        return value


class _Component:
    Params = _Params

    def __init__(self, params: _Params) -> None:
        self.params = params


def test_validator_messages_come_without_pydantics_prefix():
    registry = Registry("widget", None, "nonxfer_bench.tests.none")
    registry.register("w")(_Component)
    assert registry.create("w", {"size": 5}).params.size == 5
    with pytest.raises(UserError) as caught:
        registry.create("w", {"size": 4})
    assert str(caught.value) == "widget 'w': parameter 'size': size 4 must be odd (got 4)"
