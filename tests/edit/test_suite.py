"""The edit suite: deterministic, dev and test apart, each case one change that its box holds;
ground-truth targets score as edits and unchanged sources do not."""

import numpy as np
import pytest

from difflab.config import ConfigError
from difflab.data.shapes import render
from difflab.edit.suite import EDIT_KINDS, case_seed, edit_suite, object_regions, score_edits


def test_suite_is_deterministic_and_splits_never_share_a_scene():
    dev, again = edit_suite("dev", 12), edit_suite("dev", 12)
    assert dev == again
    test = edit_suite("test", 12)
    assert not {c.seed for c in dev} & {c.seed for c in test}
    assert [c.kind for c in dev] == [EDIT_KINDS[k % 4] for k in range(12)]
    assert case_seed(0, "test") == case_seed(1000, "dev")
    with pytest.raises(ConfigError, match="reach the test split's seeds"):
        edit_suite("dev", 10, first=995)
    with pytest.raises(ConfigError, match="unknown edit kinds"):
        edit_suite("dev", 4, kinds=("blur",))


def test_each_case_changes_one_object_inside_its_box():
    for case in edit_suite("dev", 24):
        before, after = render(case.source), render(case.target)
        changed = (before != after).any(-1)
        assert changed.any() and not (changed & ~case.box()).any()
        if case.one_word:  # a recolour or reshape is a one-word swap of the caption
            a, b = case.source_prompt.split(), case.target_prompt.split()
            assert len(a) == len(b)
            swapped = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
            assert len([p for p in swapped if set(p) != {"a", "an"}]) == 1
        colors = [o.color for o in case.source.objects]
        shapes = [o.shape for o in case.source.objects]
        assert len(set(colors)) == len(colors) and len(set(shapes)) == len(shapes)
        union = np.zeros_like(changed)
        for region, _ in object_regions(case):
            union |= region
        assert (union == case.box()).all()


def test_targets_score_as_edits_and_sources_do_not():
    cases = edit_suite("dev", 16)
    targets = np.stack([render(c.target) for c in cases])
    sources = np.stack([render(c.source) for c in cases])
    assert all(r["ok"] for r in score_edits(targets, cases))
    rows = score_edits(sources, cases)
    assert not any(r["success"] for r in rows)  # a move must happen, not just be described
    assert all(r["psnr_outside"] == 100.0 for r in rows)
