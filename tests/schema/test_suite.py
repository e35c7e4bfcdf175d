"""Suite validation: every mistake is one line naming the file, the key and what would be valid."""

from pathlib import Path

import pytest
import yaml

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.loading import load_suite

VALID = {
    "name": "s",
    "dataset": {"name": "digits"},
    "zoo": [{"name": "m", "arch": "resnet18"}, {"name": "n", "arch": "resnet18"}],
    "authorized": ["m"],
    "encoders": [{"name": "patch", "strengths": [10]}],
    "attacks": [{"name": "identity"}],
}


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def error_for(tmp_path: Path, data) -> str:
    with pytest.raises(UserError) as caught:
        load_suite(write(tmp_path, data))
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "suite.yaml") in message
    return message


def with_(**changes):
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data.update(changes)
    return data


def test_a_valid_suite_loads_with_parameter_defaults_filled_in(tmp_path):
    suite = load_suite(write(tmp_path, VALID))
    assert suite.encoders[0].params == {"tau": 1e-5}
    assert [m.name for m in suite.models] == ["m", "n"]


@pytest.mark.parametrize(
    "data, expected",
    [
        (with_(atacks=[]), "key 'atacks': unknown key; valid keys here:"),
        (with_(seeds="zero"), "key 'seeds'"),
        (with_(attacks=[{"name": "jpg"}]), "key 'attacks[0].name': unknown attack 'jpg'; valid: "),
        (with_(encoders=[{"name": "nope", "strengths": [1]}]), "unknown encoder 'nope'; valid: clean, gaussian"),
        (with_(dataset={"name": "cifar"}), "key 'dataset.name': unknown dataset 'cifar'"),
        (
            with_(attacks=[{"name": "blur", "strengths": [1.5]}]),
            "key 'attacks[0].strengths': strength 1.5 is outside [0, 1] (got [1.5])",
        ),
        (with_(attacks=[{"name": "blur", "strengths": [-0.1]}]), "outside [0, 1]"),
        (
            with_(attacks=[{"name": "blur", "strengths": []}]),
            "key 'attacks[0].strengths': List should have at least 1 item",
        ),
        (with_(encoders=[{"name": "patch", "strengths": [float("nan")]}]), "finite number"),
        (
            with_(attacks=[{"name": "blur", "params": {"sigma": 2}}]),
            "key 'attacks[0].params.sigma': unknown key; valid keys here: max_sigma",
        ),
        (with_(attacks=[{"name": "jpeg_pil", "params": {"max_quality": 101}}]), "key 'attacks[0].params.max_quality'"),
        (with_(authorized=["x"]), "key 'authorized[0]': 'x' is not in the zoo; valid: m, n"),
        (with_(controls=["m"]), "key 'controls[0]': 'm' is not an unauthorized zoo model; valid: n"),
        (with_(controls=["x"]), "key 'controls[0]': 'x' is not an unauthorized zoo model"),
        (with_(zoo="missing.yaml"), "key 'zoo': zoo file"),
        (
            with_(zoo=[{"name": "m", "arch": "a", "weights": {"source": "file", "path": "w.pth"}}], authorized=["m"]),
            "key 'zoo[0].weights.path': weight file",
        ),
        (with_(zoo=[{"name": "m", "arch": "a", "weights": {"source": "disk"}}]), "key 'zoo[0].weights.source'"),
        (with_(zoo=[{"name": "m", "arch": "a"}, {"name": "m", "arch": "b"}]), "key 'zoo[1].name': duplicate name 'm'"),
        (with_(batch_size=0), "key 'batch_size': Input should be greater than or equal to 1"),
        (with_(name="has space"), "key 'name'"),
        ("name: [unclosed", "not valid YAML"),
        ("- a list", "expected a mapping"),
    ],
)
def test_bad_suites_give_one_line_naming_file_key_and_valid_values(tmp_path, data, expected):
    assert expected in error_for(tmp_path, data)


def test_a_control_has_its_own_role_and_cell_keys_while_other_keys_stay(tmp_path):
    from nonxfer_bench.execution.plan import plan_suite

    plain = plan_suite(load_suite(write(tmp_path, VALID)))
    controlled_suite = load_suite(write(tmp_path, with_(controls=["n"])))
    controlled = plan_suite(controlled_suite)
    assert [controlled_suite.role(m, "m") for m in ("m", "n")] == ["authorized", "control"]
    for before, after in zip(plain, controlled):
        for (step, model), key in before.cells.items():
            same = key in after.cells.values()
            assert same == (model != "n")


def test_missing_suite_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_suite(tmp_path / "nope.yaml")


def test_yaml_cannot_construct_python_objects(tmp_path):
    assert "not valid YAML" in error_for(tmp_path, "name: !!python/object/apply:os.system ['true']\n")
