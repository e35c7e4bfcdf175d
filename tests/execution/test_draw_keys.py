"""What seeds an encoding group's draws (``EncodingGroup.draw_key``): the group's whole identity, dataset folder
included, for every encoder but ``stored_release`` (tests/encoders/test_stored_release.py), so every existing suite
draws what it drew; storage formats of one encoding share its draws."""

from __future__ import annotations

from nonxfer_bench.execution.plan import plan_suite
from tests.execution.small import small_suite
from tests.hostile.test_releases import make_images


def test_a_plain_suites_draws_are_keyed_on_the_float32_groups_whole_identity(tmp_path):
    groups = plan_suite(small_suite(tmp_path, storage=["float32", "png8"]))
    float32 = {(g.encoder.name, g.strength, g.seed): g.key for g in groups if g.storage == "float32"}
    assert {g.storage for g in groups} == {"float32", "png8"}
    assert all(g.draw_key == float32[g.encoder.name, g.strength, g.seed] for g in groups)


def test_a_plain_suites_draws_change_with_where_its_image_folder_lies(tmp_path):
    draws = []
    for name in ("here", "there"):
        dataset = {"name": "image_folder", "params": {"root": str(make_images(tmp_path / name / "photos")), "size": 16}}
        draws.append({g.encoder.name: g.draw_key for g in plan_suite(small_suite(tmp_path / name, dataset=dataset))})
    assert draws[0].keys() == {"clean", "gaussian"} and all(draws[0][name] != draws[1][name] for name in draws[0])
