"""Every case of the generated broken-file corpus gives the outcome documented for it, and a
skipped or left-out sample is named in its message."""

import pytest

from selfsup.data.broken import CASES, run_case


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}-{c.name}" for c in CASES])
def test_case_outcome(case, tmp_path):
    outcome = run_case(case, tmp_path)
    assert outcome.outcome == case.expect, outcome.message
    if case.expect in ("skipped", "left out"):
        assert outcome.faults >= 1 and str(tmp_path) in outcome.message
        assert outcome.samples >= 3  # the good samples beside the bad one are all read
    elif case.expect == "read":
        assert outcome.faults == 0 and outcome.samples >= 3
    else:
        assert outcome.message and "Traceback" not in outcome.message


def test_every_fault_kind_of_the_issue_is_covered():
    names = {f"{c.kind}-{c.name}" for c in CASES}
    wanted = {
        "image-truncated-jpeg", "image-corrupt-png", "image-zero-byte", "image-not-an-image",
        "image-grayscale", "image-rgba", "image-palette", "image-16-bit", "image-cmyk",
        "image-exif-orientation", "image-smaller-than-crop", "image-bomb-huge",
        "text-invalid-utf8", "text-empty-documents", "text-enormous-line", "text-binary-file",
        "captions-missing-columns", "captions-bad-quoting", "captions-missing-image",
        "shards-truncated-tar", "shards-unpaired-members", "shards-path-traversal",
        "source-empty-folder", "source-all-corrupt",
    }  # fmt: skip
    assert wanted <= names
