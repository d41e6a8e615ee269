"""Mention memory (matching/memory.py): exact and fuzzy finding on hand-written sentences in both languages,
precision counts, scores and their JSON round trip."""

from __future__ import annotations

import json
import math

import pytest

from icdcoder.errors import DataError
from icdcoder.matching.memory import (
    CodeEvidence,
    MemoryParams,
    MentionMemory,
    average_precision,
    canonical,
    fold,
    words,
)

RCC = "icd10cm:C64.9"
HTA = "icd10cm:I10"
PAIN = "icd10cm:R52"


def _memory(**params: object) -> MentionMemory:
    pairs = [
        ("Carcinoma de células renales", RCC),
        ("carcinoma de celulas renales", RCC),
        ("HTA", HTA),
        ("hipertensión arterial", HTA),
        ("dolor", PAIN),
        ("dolor", "icd10cm:R10.9"),  # an ambiguous mention: two codes
    ]
    return MentionMemory.learn(pairs, MemoryParams(**params))  # type: ignore[arg-type]


def test_fold_and_words_keep_raw_offsets() -> None:
    text = "Paciente con HTA;  Células RENALES."
    ws = words(text)
    assert [w.text for w in ws] == ["paciente", "con", "hta", "celulas", "renales"]
    assert [text[w.start : w.end] for w in ws] == ["Paciente", "con", "HTA", "Células", "RENALES"]
    assert fold("Ñandú ÁÉÍÓÚ") == "nandu aeiou"
    assert canonical("  Carcinoma  de\tcélulas-renales ") == "carcinoma de celulas renales"


def test_learn_merges_folded_mentions() -> None:
    mem = _memory()
    assert mem.mentions == ["carcinoma de celulas renales", "dolor", "hipertension arterial", "hta"]
    assert mem.code_counts[0] == {RCC: 2}
    assert mem.code_counts[1] == {"icd10cm:R10.9": 1, PAIN: 1}
    assert mem.codes() == sorted([RCC, HTA, PAIN, "icd10cm:R10.9"])


def test_exact_hits_are_accent_and_case_free_on_word_boundaries() -> None:
    mem = _memory(fuzzy=False)
    text = "Varón con CARCINOMA DE CELULAS RENALES y hta; no chtax."
    hits = mem.find(text)
    got = sorted((text[h.start : h.end], h.exact, h.similarity) for h in hits)
    assert got == [("CARCINOMA DE CELULAS RENALES", True, 1.0), ("hta", True, 1.0)]  # not inside "chtax"


def test_fuzzy_spanish_mention_hits_english_cognates_in_any_order() -> None:
    mem = _memory(min_similarity=0.5)
    text = "A 60-year-old man with arterial hypertension and a renal cell carcinoma."
    hits = {mem.mentions[h.mention]: h for h in mem.find(text)}
    h = hits["hipertension arterial"]
    assert text[h.start : h.end] == "arterial hypertension" and not h.exact
    # hipertension ~ hypertension: Dice of padded trigrams 2*9/(12+12) = 0.75; arterial = 1 -> mean 0.875
    assert h.similarity == pytest.approx(0.875)
    r = hits["carcinoma de celulas renales"]
    assert text[r.start : r.end] == "renal cell carcinoma"
    # carcinoma 1, renales ~ renal 2*4/(7+5) = 2/3, celulas ~ cell 2*2/(7+4) < word_sim 0.5 -> 0
    assert r.similarity == pytest.approx((1 + 2 / 3) / 3, abs=1e-6)
    # above the default 0.8 floor only the hypertension survives
    strict = {mem.mentions[h.mention] for h in mem.find(text, min_similarity=0.8)}
    assert strict == {"hipertension arterial"}


def test_spanish_inflection_hits_fuzzily_and_windows_are_bounded() -> None:
    mem = _memory(min_similarity=0.7)
    text = "Carcinomas de células renal bilateral."  # plural and singular: not exact
    (h,) = [h for h in mem.find(text) if mem.mentions[h.mention].startswith("carcinoma")]
    assert not h.exact and text[h.start : h.end] == "Carcinomas de células renal"
    # carcinomas ~ carcinoma 2*8/(10+9), celulas 1, renal ~ renales 2/3
    assert h.similarity == pytest.approx((16 / 19 + 1 + 2 / 3) / 3, abs=1e-6)
    # the same words spread over a long passage are not one mention ("células renales" alone is 2/3 < 0.7)
    far = (
        "Carcinoma en estudio. "
        + "Se realizan pruebas complementarias varias veces. " * 3
        + "Células renales."
    )
    assert not [h for h in mem.find(far) if mem.mentions[h.mention].startswith("carcinoma")]


def test_longest_only_drops_hits_inside_longer_ones() -> None:
    mem = MentionMemory.learn(
        [("insuficiencia renal", "icd10cm:N19"), ("insuficiencia renal crónica", "icd10cm:N18.9")]
    )
    text = "Insuficiencia renal crónica."
    hits = mem.find(text)
    assert len(hits) == 2
    kept = mem.select(hits, 0.8, longest_only=True)
    assert [mem.mentions[h.mention] for h in kept] == ["insuficiencia renal cronica"]
    assert len(mem.select(hits, 0.8, longest_only=False)) == 2


def test_precision_counts_and_noisy_or_score_hand_computed() -> None:
    mem = _memory(fuzzy=False, smoothing=1.0, prior=0.5, gamma=2.0)
    train = [
        ("Dolor abdominal. HTA.", [HTA, "icd10cm:R10.9"]),
        ("Dolor torácico.", [PAIN]),
        ("Sin dolor.", []),
        ("HTA.", [HTA]),
    ]
    mem.fit_precision(train)
    d, h = mem.mentions.index("dolor"), mem.mentions.index("hta")
    assert mem.found[d] == 3 and mem.found_with_code[d] == {"icd10cm:R10.9": 1, PAIN: 1}
    assert mem.found[h] == 2 and mem.found_with_code[h] == {HTA: 2}
    assert mem.precision(d, PAIN) == pytest.approx((1 + 0.5) / (3 + 1))
    assert mem.precision(h, HTA) == pytest.approx((2 + 0.5) / (2 + 1))
    text = "HTA de larga evolución; HTA mal controlada y dolor."
    scored = mem.code_text(text)
    assert set(scored) == {HTA, PAIN, "icd10cm:R10.9"}
    q = 2.5 / 3  # each exact hit of "hta": similarity 1 ** 2 * precision
    assert scored[HTA].score == pytest.approx(1 - (1 - q) ** 2)
    assert scored[HTA].mentions == 2 and scored[HTA].spans == [(0, 3), (24, 27)]
    assert scored[PAIN].score == pytest.approx(1.5 / 4)
    assert scored[PAIN].features() == {
        "memory_similarity": 1.0,
        "memory_mentions": 1.0,
        "memory_precision": pytest.approx(0.375),
    }
    # an unseen mention (never found in train) falls back to the prior
    fresh = MentionMemory.learn([("fiebre", "icd10cm:R50.9")], MemoryParams(fuzzy=False, prior=0.5))
    assert fresh.code_text("Fiebre.")["icd10cm:R50.9"].score == pytest.approx(0.5)


def test_average_precision_counts_every_gold_code() -> None:
    scored = {c: CodeEvidence(score=s) for c, s in {"a": 0.9, "b": 0.8, "c": 0.7}.items()}
    # ranks: a hit (1/1), b miss, c hit (2/3); gold has a fourth code never proposed
    assert average_precision(scored, ["a", "c", "z", "y"]) == pytest.approx((1 + 2 / 3) / 4)
    assert average_precision(scored, []) == 0.0


def test_json_round_trip_gives_identical_codes() -> None:
    mem = _memory(min_similarity=0.5)
    mem.fit_precision([("Varón con HTA y carcinoma renal.", [HTA, RCC])])
    back = MentionMemory.from_json(json.loads(json.dumps(mem.to_json())))
    text = "arterial hypertension; renal cell carcinoma; HTA"
    a, b = mem.code_text(text), back.code_text(text)
    assert a.keys() == b.keys()
    assert all(math.isclose(a[c].score, b[c].score) and a[c].spans == b[c].spans for c in a)
    assert back.params == mem.params
    with pytest.raises(DataError, match="not a mention memory"):
        MentionMemory.from_json({"format": "something else"})


def test_tune_picks_the_dev_best_grid_point() -> None:
    mem = _memory()
    train = [("Varón con hipertensión arterial.", [HTA]), ("Dolor lumbar.", ["icd10cm:R10.9"])]
    # dev needs the fuzzy hit (English) to find the code: an exact-only memory scores 0
    dev = [("A man with arterial hypertension.", [HTA])]
    grid = mem.tune(train, dev, min_similarity=(0.8, 1.0), longest_only=(True,), gamma=(1.0,))
    by = {g["min_similarity"]: g["dev_map"] for g in grid}
    assert by[1.0] == 0.0 and by[0.8] == 1.0
    assert mem.params.min_similarity == 0.8
    h = mem.mentions.index("hipertension arterial")
    assert mem.found[h] == 1 and mem.found_with_code[h] == {HTA: 1}
