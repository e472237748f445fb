"""The budget language: parsing, its one-line errors, and what each bound means."""

import pytest

from difflab.autotune.budget import parse_budget
from difflab.config import ConfigError


def test_the_three_forms_of_a_bound():
    b = parse_budget("accuracy>=-1pt, fd<=+10%,psnr>=28")
    assert b.text() == "accuracy>=-1pt,fd<=+10%,psnr>=28"
    ref = {"accuracy": 0.50, "fd": 20.0, "psnr": float("inf")}
    acc, fd, psnr = b.constraints
    assert acc.bound(ref["accuracy"]) == pytest.approx(0.49)  # points: hundredths
    assert fd.bound(ref["fd"]) == pytest.approx(22.0)  # percent of the reference
    assert psnr.bound(None) == 28.0  # absolute: no reference needed
    assert b.check({"accuracy": 0.49, "fd": 22.0, "psnr": 28.0}, ref)  # bounds are inclusive
    assert not b.check({"accuracy": 0.48, "fd": 22.0, "psnr": 30.0}, ref)
    assert not b.check({"accuracy": 0.6, "fd": 22.1, "psnr": 30.0}, ref)
    assert not b.check({"accuracy": 0.6, "fd": 10.0, "psnr": 27.9}, ref)


def test_a_signed_number_is_an_offset_and_margins_say_how_far_inside():
    b = parse_budget("psnr>=-3,fd<=+2")
    margins = b.margins({"psnr": 30.0, "fd": 5.0}, {"psnr": 32.0, "fd": 4.0})
    assert margins == pytest.approx({"psnr>=-3": 1.0, "fd<=+2": 1.0})


def test_accuracy_star_bounds_every_category():
    b = parse_budget("accuracy/*>=-1pt")
    ref = {"accuracy": 0.5, "accuracy/single": 0.9, "accuracy/spatial": 0.1}
    assert set(b.margins({**ref}, ref)) == {"accuracy/single>=-1pt", "accuracy/spatial>=-1pt"}
    assert not b.check({**ref, "accuracy/spatial": 0.05}, ref)  # one category is enough to fail
    assert b.check({**ref, "accuracy": 0.2}, ref)  # the overall value is not bounded here
    assert b.metrics == ("accuracy",)


@pytest.mark.parametrize("text, message", [
    ("", "budget is empty"),
    ("accuracy>=-1pt,,fd<=+10%", "empty part"),
    ("acc>=-1pt", "unknown metric 'acc'; valid: accuracy, fd"),
    ("fd<+10%", "must look like METRIC>=VALUE"),
    ("fd<=10%", "give its sign (e.g. fd<=+10%)"),
    ("accuracy>=1pt", "give its sign (e.g. accuracy>=-1pt)"),
    ("psnr>=28dB", "must look like"),
    ("fd/single<=+10%", "only accuracy has per-category values"),
    ("fd<=-100%", "leaves nothing"),
    ("psnr>=28,psnr>=30", "bounds psnr>= twice"),
])
def test_bad_budgets_raise_one_line_errors(text, message):
    with pytest.raises(ConfigError, match=None) as e:
        parse_budget(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_relative_bound_needs_the_reference_value():
    b = parse_budget("fd<=+10%")
    with pytest.raises(ConfigError, match="the reference has no fd value"):
        b.check({"fd": 1.0}, {})
    with pytest.raises(ConfigError, match="fd was not measured"):
        b.check({"psnr": 1.0}, {"fd": 1.0})
