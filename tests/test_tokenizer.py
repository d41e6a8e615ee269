import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icdcoder.errors import ConfigError
from icdcoder.text.tokenizer import Token, Tokenizer, is_numeric_token


def _spans(tokens: list[Token]) -> list[tuple[str, int, int]]:
    return [(t.text, t.start, t.end) for t in tokens]


def test_hand_computed_offsets() -> None:
    raw = "Pt's BP 120/80, b12 2mg; médico riñón_x."
    assert _spans(Tokenizer().tokenize(raw)) == [
        ("pt", 0, 2),
        ("s", 3, 4),
        ("bp", 5, 7),
        ("b12", 16, 19),
        ("2mg", 20, 23),
        ("médico", 25, 31),
        ("riñón", 32, 37),
        ("x", 38, 39),
    ]
    assert Tokenizer().words(raw) == ["pt", "s", "bp", "b12", "2mg", "médico", "riñón", "x"]


def test_mimic_deid_markup() -> None:
    raw = "Admission Date:  [**2151-7-16**]  Hospital1 18"
    toks = Tokenizer().tokenize(raw)
    assert _spans(toks) == [("admission", 0, 9), ("date", 10, 14), ("hospital1", 34, 43)]
    assert [raw[t.start : t.end] for t in toks] == ["Admission", "Date", "Hospital1"]


def test_empty_and_separators_only() -> None:
    assert Tokenizer().tokenize("") == []
    assert Tokenizer().tokenize("  _-'. 12 3 \n") == []
    assert Tokenizer().words("a_b") == ["a", "b"]


def test_options() -> None:
    raw = "Riñón 120 a BP"
    assert Tokenizer(drop_numeric=False).words(raw) == ["riñón", "120", "a", "bp"]
    assert Tokenizer(lowercase=False).words(raw) == ["Riñón", "a", "BP"]
    assert Tokenizer(strip_accents=True).words(raw) == ["rinon", "a", "bp"]
    assert Tokenizer(min_token_len=2).words(raw) == ["riñón", "bp"]


def test_decomposed_accents_stay_whole_and_compose() -> None:
    raw = "Me\u0301dico x"  # NFD: 'e' + combining acute
    toks = Tokenizer().tokenize(raw)
    assert _spans(toks) == [("médico", 0, 7), ("x", 8, 9)]
    assert toks[0].text == unicodedata.normalize("NFC", "médico")
    assert Tokenizer(strip_accents=True).words(raw) == ["medico", "x"]
    # NFC may compose a lowercased pair that had no uppercase precomposed form: the text is shorter
    assert Tokenizer().tokenize("W\u030a") == [Token("\u1e98", 0, 2)]
    # a combining mark with no letter before it is not a token
    assert Tokenizer().words("_\u0301a") == ["a"]


def test_unicode_digits_and_special_lowercase() -> None:
    assert Tokenizer().words("٣٤ ² ½ x² ٣a") == ["x²", "٣a"]
    assert is_numeric_token("١٢") and is_numeric_token("1\u0301") and not is_numeric_token("1a")
    # 'İ'.lower() has two characters; the tokenizer keeps lengths equal to the surface
    (tok,) = Tokenizer().tokenize("İstanbul")
    assert tok == Token("istanbul", 0, 8)
    # Greek final sigma follows str.lower on the token
    assert Tokenizer().words("ΟΔΟΣ") == ["οδος"]


def test_config_roundtrip_and_errors() -> None:
    tok = Tokenizer(lowercase=False, drop_numeric=False, strip_accents=True, min_token_len=2)
    cfg = tok.to_config()
    assert cfg["type"] == "icdcoder-words" and cfg["min_token_len"] == 2
    assert Tokenizer.from_config(cfg) == tok
    assert Tokenizer.from_config({}) == Tokenizer()
    with pytest.raises(ConfigError, match="unknown tokenizer option"):
        Tokenizer.from_config({"lowercse": True})
    with pytest.raises(ConfigError, match="type"):
        Tokenizer.from_config({"type": "bpe"})
    with pytest.raises(ConfigError, match="lowercase must be true or false"):
        Tokenizer.from_config({"lowercase": "yes"})
    with pytest.raises(ConfigError, match="min_token_len"):
        Tokenizer(min_token_len=0)


_INTERESTING = st.sampled_from(list("aZé_ 1'İΣς-.\n\u0301\u0327٣²ßÅ\u00adﬁ\U0001d400"))
_TEXT = st.text(alphabet=st.one_of(_INTERESTING, st.characters()), max_size=60)


def _is_tok_char(c: str) -> bool:
    return c.isalnum() and c != "_"


@settings(max_examples=300, deadline=None)
@given(_TEXT, st.booleans(), st.booleans(), st.booleans())
def test_property_spans_and_normal_form(raw: str, lower: bool, drop: bool, strip: bool) -> None:
    tok = Tokenizer(lowercase=lower, drop_numeric=drop, strip_accents=strip)
    toks = tok.tokenize(raw)
    prev_end = -1
    for t in toks:
        assert 0 <= t.start < t.end <= len(raw)
        assert t.start > prev_end  # increasing, never overlapping or touching
        prev_end = t.end
        surface = raw[t.start : t.end]
        assert t.text == tok.normalize(surface)
        assert _is_tok_char(surface[0])
        assert all(_is_tok_char(c) or unicodedata.category(c)[0] == "M" for c in surface)
        # maximal runs: no letter/digit right before, no letter/digit/mark right after
        assert t.start == 0 or not _is_tok_char(raw[t.start - 1])
        assert t.end == len(raw) or not (
            _is_tok_char(raw[t.end]) or unicodedata.category(raw[t.end])[0] == "M"
        )
        if lower and not strip:
            low = surface.lower()
            if len(low) == len(surface) and unicodedata.is_normalized("NFC", low):
                assert t.text == low
        if drop:
            assert not is_numeric_token(surface)
    assert tok.words(raw) == [t.text for t in toks]


@settings(max_examples=200, deadline=None)
@given(_TEXT)
def test_property_every_letter_or_digit_is_covered(raw: str) -> None:
    keep_all = Tokenizer(drop_numeric=False)
    covered: set[int] = set()
    for t in keep_all.tokenize(raw):
        covered.update(range(t.start, t.end))
    assert all(i in covered for i, c in enumerate(raw) if _is_tok_char(c))
    dropped = [t for t in keep_all.tokenize(raw) if not is_numeric_token(raw[t.start : t.end])]
    assert Tokenizer().tokenize(raw) == dropped


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80), st.booleans(), st.integers(1, 3))
def test_property_ascii_fast_path_matches_general_path(raw: str, drop: bool, mtl: int) -> None:
    tok = Tokenizer(drop_numeric=drop, min_token_len=mtl)
    # " é" makes the text non-ASCII, so the general Unicode path runs; its last token is the "é"
    general = tok.tokenize(raw + " é")
    if mtl == 1:
        assert general[-1] == Token("é", len(raw) + 1, len(raw) + 2)
        general = general[:-1]
    assert tok.tokenize(raw) == general
    assert tok.words(raw) == [t.text for t in general]
