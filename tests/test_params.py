import pytest

from shared.params import check_parameters, parameter_problems


EXPECTED = {"a.weight": (4, 3), "a.bias": (4,), "b.scale": (3,)}


def test_parameter_problems_name_each_difference():
    found = {"a.weight": (3, 4), "b.scale": [3], "c.extra": (2, 2)}
    assert parameter_problems(EXPECTED, found) == [
        "missing a.bias (4,)",
        "unexpected c.extra (2, 2)",
        "a.weight has shape (3, 4), expected (4, 3)",
    ]
    assert parameter_problems(EXPECTED, dict(EXPECTED)) == []
    assert parameter_problems({}, {}) == []


def test_check_parameters_raises_the_callers_error_listing_every_problem():
    class Mismatch(ValueError):
        pass

    check_parameters(EXPECTED, {"b.scale": (3,), "a.bias": (4,), "a.weight": (4, 3)}, what="x", error=Mismatch)
    many = {f"extra.{i}": (1,) for i in range(30)}
    with pytest.raises(Mismatch) as err:
        check_parameters(EXPECTED, many, what="torch state", error=Mismatch, extra_problems=["b.scale is int"])
    msg = str(err.value)
    assert msg.startswith("torch state does not match the parameter table: missing a.weight (4, 3); ")
    assert all(f"unexpected extra.{i} (1,)" in msg for i in range(30))
    assert msg.endswith("; b.scale is int")
