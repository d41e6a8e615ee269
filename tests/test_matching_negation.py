"""ConText-style cues and their scopes, English and Spanish: which words each cue governs."""

from __future__ import annotations

import pytest

from icdcoder.matching.negation import context_of


def cats(text: str, phrase: str, lang: str = "en") -> set[str]:
    """Categories of the scopes covering `phrase` in `text`."""
    start = text.index(phrase)
    return context_of(text, lang).categories(start, start + len(phrase))


@pytest.mark.parametrize(
    ("text", "phrase", "expected"),
    [
        ("No lymphadenopathy.", "lymphadenopathy", {"negated"}),
        ("The patient denies chest pain or dyspnea.", "dyspnea", {"negated"}),
        ("Pneumonia was ruled out.", "Pneumonia", {"negated"}),
        ("Family history of diabetes.", "diabetes", {"family"}),
        ("Her mother had breast cancer.", "breast cancer", {"family"}),
        ("History of tuberculosis.", "tuberculosis", {"historical"}),
        ("Possible appendicitis.", "appendicitis", {"possible"}),
        ("Lymphadenopathy.", "Lymphadenopathy", set()),
        # the scope ends at the clause: a termination word, the sentence end
        ("No fever but cough.", "cough", set()),
        ("No fever. Cough.", "Cough", set()),
        ("He has no fever and presents cough.", "cough", set()),
        # a pseudo-cue is not a cue
        ("Gram negative bacilli in blood.", "bacilli", set()),
        ("Non small cell lung cancer.", "lung cancer", set()),
    ],
)
def test_english_scopes(text: str, phrase: str, expected: set[str]) -> None:
    assert cats(text, phrase) == expected


@pytest.mark.parametrize(
    ("text", "phrase", "expected"),
    [
        ("No se observan adenopatías.", "adenopatías", {"negated"}),
        ("Sin fiebre ni disnea.", "disnea", {"negated"}),
        ("Se descartó neumonía.", "neumonía", {"negated"}),
        ("Neumonía descartada.", "Neumonía", {"negated"}),
        ("Antecedentes familiares de diabetes.", "diabetes", {"family"}),
        ("Antecedentes de tuberculosis.", "tuberculosis", {"historical"}),
        ("Sospecha de apendicitis.", "apendicitis", {"possible"}),
        ("No fiebre pero tos.", "tos", set()),
        ("Diabetes mellitus no insulinodependiente.", "insulinodependiente", set()),
        ("Hipertensión arterial.", "Hipertensión", set()),
    ],
)
def test_spanish_scopes(text: str, phrase: str, expected: set[str]) -> None:
    assert cats(text, phrase, "es") == expected


def test_scope_is_limited_in_words() -> None:
    text = "No " + " ".join(f"w{i}" for i in range(12)) + " target."
    assert cats(text, "w0") == {"negated"}
    assert cats(text, "target") == set()


def test_offsets_point_into_the_raw_text_with_accents() -> None:
    text = "Niega dolor torácico; refiere cefalea."
    scopes = context_of(text, "es").scopes
    assert [(s.category, text[s.cue_start : s.cue_end], text[s.start : s.end]) for s in scopes] == [
        ("negated", "Niega", "dolor torácico")
    ]


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        # evidence phrases often include their cue: the cue's own characters do not count against it
        ("No lymphadenopathy or metastases were evident", "negated"),
        ("lymphadenopathy", "negated"),
        ("no cough", "negated"),
        ("Fever since Monday", None),
        # "Fever since Monday, " (20 characters) outside the scope, "cough" (5) inside: under half
        ("Fever since Monday, no cough", None),
        ("Mother had breast cancer", "family"),
        ("breast cancer", "family"),
    ],
)
def test_span_context_of_evidence_phrases(phrase: str, expected: str | None) -> None:
    text = (
        "CT: No lymphadenopathy or metastases were evident. Fever since Monday, no cough. "
        "Mother had breast cancer."
    )
    start = text.index(phrase)
    assert context_of(text, "en").span_context(start, start + len(phrase)) == expected


def test_span_context_needs_half_of_the_phrase_and_prefers_the_larger_share() -> None:
    text = "Cough and no fever."
    index = context_of(text, "en")
    # non-cue characters in the scope: "fever" 5 of 5, "and no fever" 5 of 10, "Cough and no fever" 5 of 16
    assert index.span_context(text.index("fever"), text.index("fever") + 5) == "negated"
    assert index.span_context(text.index("and"), len(text) - 1) == "negated"
    assert index.span_context(0, len(text) - 1) is None
    assert index.span_context(0, 0) is None
