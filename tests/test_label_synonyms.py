"""Label synonyms for label-side models: cleaning, filtering, sampling to exactly M, bad-input policies."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icdcoder.errors import DataError
from icdcoder.ontology.entry import Synonym
from icdcoder.ontology.label_synonyms import (
    Policy,
    Selection,
    build_label_synonyms,
    clean_synonym,
    dedup_key,
    keep_synonym,
    read_synonym_file,
)


class FakeSource:
    """Stands in for the ontology: a fixed ranked list per key, title first."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls = 0

    def synonyms(self, system: str, code: str) -> Sequence[Synonym]:
        self.calls += 1
        texts = self.table.get(f"{system}:{code}", [])
        return [Synonym(t, "long_title" if i == 0 else "gem_forward") for i, t in enumerate(texts)]


HTN = "icd9cm-dx:401.9"
CKD = "icd9cm-dx:585.9"
PAIN = "icd10cm:R52"
TABLE = {
    HTN: [
        "Unspecified essential hypertension",
        "Hypertension NOS",
        "high blood pressure",
        "Essential (primary) hypertension",
        "HTN",  # 1 word, 3 characters: filtered out
        "hypertension (arterial) (benign)",
        "systemic hypertension",
    ],
    CKD: ["Chronic kidney disease, unspecified", "Chronic renal disease", "CKD"],
    PAIN: ["Pain, unspecified"],
}


def test_clean_removes_nos_and_dashes() -> None:
    assert clean_synonym("Hypertension NOS") == "Hypertension"
    assert clean_synonym("Anemia (NOS)") == "Anemia"
    assert clean_synonym("nos, pain - acute") == "pain acute"
    assert clean_synonym("Non-ST elevation (NSTEMI) myocardial infarction") == (
        "Non ST elevation (NSTEMI) myocardial infarction"
    )
    assert clean_synonym("post\u2013operative state") == "post operative state"
    assert clean_synonym("Pain, NOS") == "Pain"
    assert clean_synonym("  NOS  ") == ""
    # "nos" inside a word stays
    assert clean_synonym("Diagnosis of dysgnosia") == "Diagnosis of dysgnosia"


def test_keep_rule_two_words_or_seven_characters() -> None:
    assert keep_synonym("low t4")  # 2 words
    assert keep_synonym("abcdefg")  # 7 characters
    assert not keep_synonym("abcdef")
    assert not keep_synonym("HTN")


def test_dedup_key_ignores_case_accents_and_punctuation() -> None:
    assert dedup_key("Hypertension, essential") == dedup_key("hypertension essential")
    assert dedup_key("Anémie") == dedup_key("anemie")


def test_ranked_selection_title_first_filtered_and_deduplicated() -> None:
    syn = build_label_synonyms([HTN, CKD], 4, selection="ranked", source=FakeSource(TABLE))
    # "Hypertension NOS" cleans to "Hypertension" (kept: 12 characters); "HTN" is filtered out.
    assert syn.texts[0] == [
        "Unspecified essential hypertension",
        "Hypertension",
        "high blood pressure",
        "Essential (primary) hypertension",
    ]
    assert syn.sources[0] == ["long_title", "gem_forward", "gem_forward", "gem_forward"]
    # CKD: title + 1 kept ("CKD" filtered) = 2 distinct, repeated a, b, a, b
    assert syn.texts[1] == [
        "Chronic kidney disease, unspecified",
        "Chronic renal disease",
        "Chronic kidney disease, unspecified",
        "Chronic renal disease",
    ]
    assert syn.sources[1][2:] == ["repeat:long_title", "repeat:gem_forward"]
    r = syn.report
    assert (r.filtered_short, r.short_codes, r.repeated_slots, r.absent_slots) == (2, 1, 2, 0)
    assert r.short_examples == [CKD]
    assert r.distinct_median == 4.0  # 6 and 2 distinct
    assert r.candidates == 10


def test_random_selection_is_seeded_per_code_and_independent_of_label_order() -> None:
    src = FakeSource(TABLE)
    a = build_label_synonyms([HTN, CKD], 3, source=src, seed=7)
    b = build_label_synonyms([CKD, HTN], 3, source=src, seed=7)
    assert a.texts[0] == b.texts[1] and a.texts[1] == b.texts[0]
    assert a.texts[0][0] == "Unspecified essential hypertension"  # the title always comes first
    # the rest is a sample of the 5 kept non-title strings, without repetition
    rest = a.texts[0][1:]
    assert len(set(rest)) == 2
    kept = {"Hypertension", "high blood pressure", "Essential (primary) hypertension"}
    kept |= {"hypertension (arterial) (benign)", "systemic hypertension"}
    assert set(rest) <= kept
    draws = {tuple(build_label_synonyms([HTN], 3, source=src, seed=s).texts[0]) for s in range(20)}
    assert len(draws) > 1  # the seed matters


def test_global_random_state_is_untouched() -> None:
    random.seed(1)
    expected = random.random()
    random.seed(1)
    build_label_synonyms([HTN, CKD], 3, source=FakeSource(TABLE), seed=3)
    assert random.random() == expected


def test_drop_policy_leaves_absent_slots() -> None:
    syn = build_label_synonyms([CKD, PAIN], 3, policy="drop", selection="ranked", source=FakeSource(TABLE))
    assert syn.texts[1] == ["Pain, unspecified", None, None]
    assert syn.sources[1] == ["long_title", "absent", "absent"]
    assert syn.present() == [[True, True, False], [True, False, False]]
    assert syn.report.absent_slots == 3 and syn.report.short_codes == 2


def test_fail_policy_reports_counts() -> None:
    with pytest.raises(DataError, match=r"2 of 3 code\(s\) with fewer than M=3"):
        build_label_synonyms([HTN, CKD, PAIN], 3, policy="fail", source=FakeSource(TABLE))
    # enough synonyms everywhere: no error
    build_label_synonyms([HTN], 3, policy="fail", source=FakeSource(TABLE))


def test_code_without_any_text_falls_back_to_title_then_code() -> None:
    src = FakeSource({})
    syn = build_label_synonyms(
        ["icd10cm:Z99.89", "icd10cm:M80.08X"], 2, titles=["Dependence on devices", ""], source=src
    )
    assert syn.texts == [["Dependence on devices"] * 2, ["M80.08X"] * 2]
    assert syn.sources[0][0] == "title" and syn.sources[1][0] == "code"
    assert syn.report.code_fallback == 1
    assert "1 code(s) without any text" in syn.report.summary()


def test_m_equal_one_is_the_title_only() -> None:
    syn = build_label_synonyms([HTN, CKD], 1, source=FakeSource(TABLE))
    assert syn.texts == [["Unspecified essential hypertension"], ["Chronic kidney disease, unspecified"]]
    assert syn.report.short_codes == 0


def test_user_json_file_validated_against_the_label_space(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "syn.json"
    path.write_text(
        json.dumps(
            {
                "icd9cm-dx:4019": ["high blood pressure", "", "  ", "HTN", "Hypertension NOS"],
                "ICD9CM-DX:999.9": ["not in the label space"],
                "icd9cm-dx:250.00": ["sugar diabetes"],
            }
        ),
        encoding="utf-8",
    )
    syn = build_label_synonyms(
        [HTN, CKD],
        3,
        titles=["Unspecified essential hypertension", "Chronic kidney disease"],
        user_file=path,
        selection="ranked",
    )
    assert syn.texts[0] == ["Unspecified essential hypertension", "high blood pressure", "Hypertension"]
    assert syn.sources[0] == ["title", "user_file", "user_file"]
    assert syn.texts[1] == ["Chronic kidney disease"] * 3
    r = syn.report
    assert (r.unknown_codes, r.empty_strings, r.filtered_short, r.missing_codes) == (2, 2, 1, 1)
    assert r.unknown_examples == ["icd9cm-dx:250.00", "icd9cm-dx:999.9"]
    assert r.missing_examples == [CKD]
    assert "2 code(s) outside the label space" in caplog.text  # reported, not silent
    with pytest.raises(DataError, match="outside the label space"):
        build_label_synonyms([HTN, CKD], 1, titles=["a title", "b title"], user_file=path, policy="fail")


def test_user_tsv_file(tmp_path: Path) -> None:
    path = tmp_path / "syn.tsv"
    path.write_text(
        "key\tsynonym\n# a comment\nicd10cm:r52\tgeneralized pain\n\nicd10cm:R52\tpain all over\n",
        encoding="utf-8",
    )
    assert read_synonym_file(path) == {PAIN: ["generalized pain", "pain all over"]}
    bad = tmp_path / "bad.tsv"
    bad.write_text("icd10cm:R52\tok\nicd10cm:R52 no tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv:2: line has no tab"):
        read_synonym_file(bad)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.json", '{"R52": ["pain"]}', "lacks its code system"),
        ("b.json", '{"icd11:R52": ["pain"]}', "unknown code system"),
        ("c.json", '{"icd10cm:R52": "pain"}', "not a list of strings"),
        ("d.json", '["icd10cm:R52"]', "must be an object"),
        ("e.json", '{"icd10cm:R52": [', "invalid JSON"),
        ("f.csv", "icd10cm:R52,pain", "unknown synonym file type"),
    ],
)
def test_bad_user_files_are_named(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as exc:
        read_synonym_file(path)
    assert name in str(exc.value)


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="synonym file not found"):
        build_label_synonyms([HTN], 2, user_file=tmp_path / "nope.json")


_text = st.text(alphabet="abc -NOS", min_size=0, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(_text, min_size=0, max_size=8), min_size=1, max_size=5),
    st.integers(1, 5),
    st.sampled_from(["repeat", "drop"]),
    st.sampled_from(["random", "ranked"]),
)
def test_always_exactly_m_distinct_cleaned_synonyms(
    lists: list[list[str]], m: int, policy: Policy, selection: Selection
) -> None:
    keys = [f"icd10cm:A0{i}" for i in range(len(lists))]
    src = FakeSource(dict(zip(keys, lists, strict=True)))
    syn = build_label_synonyms(keys, m, policy=policy, selection=selection, source=src)
    for key, row, raw in zip(keys, syn.texts, lists, strict=True):
        assert len(row) == m
        present = [t for t in row if t is not None]
        assert present, "every code keeps at least one synonym"
        if policy == "repeat":
            assert len(present) == m
        distinct = list(dict.fromkeys(present))
        assert len({dedup_key(t) for t in distinct}) == len(distinct)
        cleaned = {clean_synonym(t) for t in raw} | {key.partition(":")[2]}
        assert set(distinct) <= cleaned
        # the first slot is the (cleaned) first candidate when it survives cleaning
        if raw and clean_synonym(raw[0]):
            assert row[0] == clean_synonym(raw[0])
