"""Normalisation for dictionary matching: folding keeps offsets, inflections and abbreviations meet their
code-title forms, organ adjectives meet their nouns, modifiers are recognised (EN and ES)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from icdcoder.matching.normalize import fold, get_normalizer


def keys(text: str, lang: str = "en") -> list[str]:
    return [w.key for w in get_normalizer(lang).words(text)]


def bag(text: str, lang: str = "en") -> set[str]:
    """The matcher compares terms as bags of keys (word order free)."""
    return set(keys(text, lang))


@given(st.text(max_size=60))
def test_fold_keeps_length_so_offsets_are_shared(text: str) -> None:
    folded = fold(text)
    assert len(folded) == len(text)
    assert folded == folded.lower() or not folded.isascii()


def test_fold_removes_accents_and_case() -> None:
    assert fold("Células RIÑÓN Fémur") == "celulas rinon femur"


def test_every_word_points_back_into_the_raw_text() -> None:
    text = "Pt w/o HTN; Renal cell carcinoma, fractures d/t fall."
    words = get_normalizer("en").words(text)
    # "d/t" expands to "due to", two stop words: nothing of it is left to match
    assert [(text[w.start : w.end], w.key) for w in words] == [
        ("Pt", "pt"),
        ("w/o", "without"),
        ("HTN", "hypertens"),
        ("Renal", "kidney"),
        ("cell", "cell"),
        ("carcinoma", "cancer"),
        ("fractures", "fractur"),
        ("fall", "fall"),
    ]


def test_inflection_and_abbreviation_meet_the_title_form() -> None:
    assert keys("fractures") == keys("fracture")
    assert keys("HTN") == keys("hypertension")
    assert keys("w/o") == ["without"]
    assert bag("malignant neoplasm of kidney") == bag("kidney cancer") == bag("renal carcinoma")
    assert keys("hepatic") == keys("liver")
    assert keys("of the") == []  # stop words


def test_spanish_inflection_accents_and_organs() -> None:
    assert keys("fracturas del fémur", "es") == keys("Fractura de femur", "es")
    assert keys("renales", "es") == keys("riñón", "es")
    assert keys("HTA", "es") == keys("hipertensión", "es")
    assert bag("tumor maligno del riñón", "es") == bag("carcinoma renal", "es")
    assert keys("DM tipo 2", "es") == keys("diabetes no insulinodependiente", "es")


def test_modifiers_flag_unspecified_and_other_and_cut_exclusions() -> None:
    en = get_normalizer("en")
    assert en.modifiers("Pneumonia, unspecified organism") == ({"unspecified"}, "pneumonia")
    assert en.modifiers("Other specified disorders of kidney NOS") == (
        {"other", "unspecified"},
        "disorders of kidney",
    )
    assert (
        en.modifiers("Malignant neoplasm of kidney, except renal pelvis")[1] == "malignant neoplasm of kidney"
    )
    es = get_normalizer("es")
    assert es.modifiers("Dolor, no especificado") == ({"unspecified"}, "dolor")
    assert es.modifiers("Tumor maligno del riñón, excepto de la pelvis renal")[1] == "tumor maligno del rinon"
