"""The synthetic MIMIC-shaped generator: determinism, label statistics, phrases, MIMIC-III CSV schema, CLI,
and that a simple model can learn it."""

from __future__ import annotations

import gzip
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from icdcoder.data.prepared import PreparedDataset
from icdcoder.data.sources.synthetic import (
    ICD_COLUMNS,
    NOTEEVENTS_COLUMNS,
    build_label_space,
    generate,
    prepare_synthetic,
    shipped_mimic3_hadm_ids,
    write_mimic3_csvs,
)
from icdcoder.errors import IcdcoderError
from icdcoder.ontology.systems import normalize_code

# Real ICD-9-CM codes with their long titles (and a few synonyms), enough for a 60-code label space.
_DX = {
    "401.9": ["Unspecified essential hypertension", "Hypertension NOS"],
    "428.0": ["Congestive heart failure, unspecified", "CHF"],
    "427.31": ["Atrial fibrillation", "AFib"],
    "414.01": ["Coronary atherosclerosis of native coronary artery"],
    "584.9": ["Acute kidney failure, unspecified", "acute renal failure"],
    "250.00": ["Diabetes mellitus without mention of complication, type II or unspecified type"],
    "272.4": ["Other and unspecified hyperlipidemia", "hyperlipidemia"],
    "518.81": ["Acute respiratory failure"],
    "599.0": ["Urinary tract infection, site not specified", "UTI"],
    "530.81": ["Esophageal reflux", "GERD"],
    "038.9": ["Unspecified septicemia", "sepsis"],
    "285.9": ["Anemia, unspecified"],
    "486": ["Pneumonia, organism unspecified", "pneumonia"],
    "244.9": ["Unspecified acquired hypothyroidism"],
    "496": ["Chronic airway obstruction, not elsewhere classified", "COPD"],
    "276.2": ["Acidosis"],
    "995.92": ["Severe sepsis"],
    "V58.61": ["Long-term (current) use of anticoagulants"],
    "276.1": ["Hyposmolality and/or hyponatremia", "hyponatremia"],
    "285.1": ["Acute posthemorrhagic anemia"],
    "585.9": ["Chronic kidney disease, unspecified", "CKD"],
    "424.0": ["Mitral valve disorders"],
    "V45.81": ["Aortocoronary bypass status"],
    "311": ["Depressive disorder, not elsewhere classified", "depression"],
    "410.71": ["Subendocardial infarction, initial episode of care", "NSTEMI"],
    "305.1": ["Tobacco use disorder"],
    "493.90": ["Asthma, unspecified"],
    "787.91": ["Diarrhea"],
    "780.39": ["Other convulsions", "seizure"],
    "787.20": ["Dysphagia, unspecified"],
    "300.00": ["Anxiety state, unspecified", "anxiety"],
    "733.00": ["Osteoporosis, unspecified"],
    "507.0": ["Pneumonitis due to inhalation of food or vomitus", "aspiration pneumonia"],
    "E878.8": ["Other specified surgical operations and procedures causing abnormal patient reaction"],
    "E849.7": ["Accidents occurring in residential institution"],
    "571.5": ["Cirrhosis of liver without mention of alcohol"],
    "574.20": ["Calculus of gallbladder without mention of cholecystitis"],
    "707.03": ["Pressure ulcer, lower back", "sacral decubitus ulcer"],
    "434.91": ["Cerebral artery occlusion, unspecified with cerebral infarction", "ischemic stroke"],
    "041.4": ["Escherichia coli [E. coli] infection in conditions classified elsewhere"],
    "008.45": ["Intestinal infection due to Clostridium difficile", "C. diff colitis"],
    "112.0": ["Candidiasis of mouth", "thrush"],
    "357.2": ["Polyneuropathy in diabetes"],
}
_PROC = {
    "96.04": ["Insertion of endotracheal tube", "intubation"],
    "96.71": ["Continuous invasive mechanical ventilation for less than 96 consecutive hours"],
    "38.93": ["Venous catheterization, not elsewhere classified"],
    "99.04": ["Transfusion of packed cells", "PRBC transfusion"],
    "39.61": ["Extracorporeal circulation auxiliary to open heart surgery", "cardiopulmonary bypass"],
    "36.15": ["Single internal mammary-coronary artery bypass"],
    "88.56": ["Coronary arteriography using two catheters", "cardiac catheterization"],
    "37.22": ["Left heart cardiac catheterization"],
    "96.6": ["Enteral infusion of concentrated nutritional substances", "tube feeds"],
    "99.15": ["Parenteral infusion of concentrated nutritional substances", "TPN"],
    "38.91": ["Arterial catheterization", "arterial line placement"],
    "45.13": ["Other endoscopy of small intestine", "EGD"],
    "00.14": ["Injection or infusion of oxazolidinone class of antibiotics"],
    "54.91": ["Percutaneous abdominal drainage", "paracentesis"],
    "39.95": ["Hemodialysis"],
    "33.24": ["Closed [endoscopic] biopsy of bronchus", "bronchoscopy with biopsy"],
    "31.1": ["Temporary tracheostomy"],
}


_ICD10CM = {
    "I10": ["Essential (primary) hypertension", "high blood pressure"],
    "E78.5": ["Hyperlipidemia, unspecified"],
    "K21.9": ["Gastro-esophageal reflux disease without esophagitis", "GERD"],
    "N17.9": ["Acute kidney failure, unspecified"],
    "I48.91": ["Unspecified atrial fibrillation"],
    "E11.9": ["Type 2 diabetes mellitus without complications"],
    "J18.9": ["Pneumonia, unspecified organism"],
    "A41.9": ["Sepsis, unspecified organism"],
    "D64.9": ["Anemia, unspecified"],
    "N39.0": ["Urinary tract infection, site not specified"],
    "E87.1": ["Hypo-osmolality and hyponatremia"],
    "F41.9": ["Anxiety disorder, unspecified"],
}
_ICD10PCS = {
    "02HV33Z": ["Insertion of Infusion Device into Superior Vena Cava, Percutaneous Approach"],
    "5A1955Z": ["Respiratory Ventilation, Greater than 96 Consecutive Hours"],
    "0BH17EZ": ["Insertion of Endotracheal Airway into Trachea, Via Natural or Artificial Opening"],
    "30233N1": ["Transfusion of Nonautologous Red Blood Cells into Peripheral Vein, Percutaneous Approach"],
    "3E0G76Z": ["Introduction of Nutritional Substance into Upper GI, Via Natural or Artificial Opening"],
}


@dataclass(frozen=True)
class _Syn:
    text: str
    source: str


@dataclass(frozen=True)
class _Entry:
    long_title: str


class FakeOntology:
    """The three ontology methods the generator calls, over the tables above (plus hierarchy parents)."""

    def __init__(self) -> None:
        self.tables = {"icd9cm-dx": _DX, "icd9cm-proc": _PROC, "icd10cm": _ICD10CM, "icd10pcs": _ICD10PCS}

    def codes(self, system: str) -> list[str]:
        table = self.tables.get(system, {})
        parents = {c.split(".")[0] for c in table if "." in c}  # non-leaf categories must be skipped
        if system == "icd10pcs":
            parents = {c[:3] for c in table}
        return sorted(set(table) | parents | {"001-139"})

    def synonyms(self, system: str, code: str) -> list[_Syn]:
        return [_Syn(t, "test") for t in self.tables[system].get(code, [])[1:]]

    def lookup(self, system: str, code: str) -> _Entry | None:
        names = self.tables.get(system, {}).get(code)
        if names is None:
            return _Entry("A category title") if code in self.codes(system) else None
        return _Entry(names[0])


ONTO = FakeOntology()


def _phrases(system: str, code: str) -> list[str]:
    return ONTO.tables[system][code]


def test_label_space_uses_leaf_codes_with_both_systems() -> None:
    space = build_label_space(50, "icd9", seed=3, ontology=ONTO)
    assert len(space.codes) == 50 == len(set(space.codes))
    # The head of the ranking is MIMIC-III's most frequent codes (those the ontology has), dx and proc mixed.
    assert space.codes[:4] == (
        ("icd9cm-dx", "401.9"), ("icd9cm-proc", "38.93"), ("icd9cm-dx", "428.0"), ("icd9cm-proc", "96.04")
    )  # fmt: skip
    assert space.phrases[0] == ("Unspecified essential hypertension", "Hypertension NOS")
    systems = Counter(s for s, _ in space.codes)
    assert systems["icd9cm-proc"] >= round(50 * 0.22)
    small = build_label_space(6, "icd9", ontology=ONTO)
    assert small.keys == [
        "icd9cm-dx:401.9", "icd9cm-proc:38.93", "icd9cm-dx:428.0", "icd9cm-proc:96.04", "icd9cm-dx:427.31",
        "icd9cm-dx:414.01",
    ]  # fmt: skip
    for system, code in space.codes:
        assert code in ONTO.tables[system]  # never a category such as 401 or a range such as 001-139
    assert space.probs[0] > space.probs[-1] and abs(space.probs.sum() - 1) < 1e-9


def test_deterministic_and_seed_sensitive() -> None:
    kw: dict[str, Any] = {"words_per_note": 150, "n_codes": 40, "ontology": ONTO}
    a = list(generate(15, seed=7, **kw))
    b = list(generate(15, seed=7, **kw))
    c = list(generate(15, seed=8, **kw))
    assert [(d.id, d.text, d.codes, d.split, d.evidence) for d in a] == [
        (d.id, d.text, d.codes, d.split, d.evidence) for d in b
    ]
    assert [d.text for d in a] != [d.text for d in c]
    # Note i does not depend on how many notes are generated (so a run can stream, or be extended).
    assert [d.text for d in generate(5, seed=7, **kw)] == [d.text for d in a[:5]]


def test_codes_per_note_mean_and_zipf_tail() -> None:
    docs = list(generate(400, words_per_note=60, n_codes=60, codes_per_note=4.0, zipf=1.2, ontology=ONTO))
    mean = np.mean([len(d.codes) for d in docs])
    assert 3.6 < mean < 4.4
    counts = Counter(k for d in docs for k in d.codes)
    freqs = sorted(counts.values(), reverse=True)
    median = freqs[len(freqs) // 2]
    assert freqs[0] >= 5 * median
    # All codes are proper system:code keys with canonical dots.
    for key in counts:
        system, code = key.split(":")
        assert normalize_code(system, code) == code


def test_every_code_is_mentioned_and_evidence_points_at_it() -> None:
    docs = list(generate(60, words_per_note=200, n_codes=50, ontology=ONTO))
    assert all(d.codes for d in docs)
    for doc in docs:
        low = doc.text.lower()
        for key in doc.codes:
            system, code = key.split(":")
            assert any(p.lower() in low for p in _phrases(system, code)), (doc.id, key)
        assert {e.code for e in doc.evidence} == set(doc.codes)
        for ev in doc.evidence:
            (start, end), *_ = ev.spans
            assert doc.text[start:end] == ev.text
    # MIMIC flavour: sections and de-identification placeholders.
    text = docs[0].text
    for header in (
        "Admission Date:",
        "History of Present Illness:",
        "Discharge Medications:",
        "Discharge Diagnosis:",
    ):
        assert header in text
    assert "[**" in text and "**]" in text
    # Hedged mentions of assigned codes and negated mentions of other codes both occur.
    every = "\n".join(d.text for d in docs)
    assert any(h in every for h in ("history of ", "rule out ", "s/p ", "status post "))
    assert any(
        n in every for n in ("No evidence of ", " was ruled out.", "Negative for ", "Low suspicion for ")
    )


def test_note_lengths_follow_the_parameter() -> None:
    docs = list(generate(60, words_per_note=800, n_codes=30, ontology=ONTO))
    lengths = np.array([len(d.text.split()) for d in docs])
    assert 650 < lengths.mean() < 1000
    assert lengths.std() > 100  # log-normal spread, not a constant
    assert lengths.max() <= 4 * 800 + 300


def test_split_fractions_and_bad_parameters() -> None:
    docs = list(generate(300, words_per_note=40, n_codes=20, split_fractions=(0.6, 0.2, 0.2), ontology=ONTO))
    split = Counter(d.split for d in docs)
    assert 150 < split["train"] < 210 and split["dev"] > 30 and split["test"] > 30
    with pytest.raises(IcdcoderError, match="split fractions"):
        generate(3, split_fractions=(0.5, 0.1, 0.1), ontology=ONTO)
    with pytest.raises(IcdcoderError, match="only 60 usable icd9cm-dx/icd9cm-proc codes, 500"):
        generate(3, n_codes=500, ontology=ONTO)
    with pytest.raises(IcdcoderError, match="unknown code system"):
        generate(3, systems="icd11", ontology=ONTO)


def test_tfidf_logistic_regression_beats_frequency_baseline() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    docs = list(generate(300, words_per_note=250, n_codes=50, codes_per_note=5.0, ontology=ONTO))
    train, test = docs[:240], docs[240:]
    mlb = MultiLabelBinarizer().fit([d.codes for d in docs])
    y_train = mlb.transform([d.codes for d in train])
    y_test = mlb.transform([d.codes for d in test])
    vec = TfidfVectorizer(min_df=2, sublinear_tf=True)
    x_train = vec.fit_transform([d.text for d in train])
    x_test = vec.transform([d.text for d in test])
    keep = y_train.sum(axis=0) > 0
    clf = OneVsRestClassifier(LogisticRegression(C=10.0, solver="liblinear")).fit(x_train, y_train[:, keep])
    scores = np.zeros(y_test.shape)
    scores[:, keep] = clf.predict_proba(x_test)
    model_f1 = f1_score(y_test, (scores >= 0.2).astype(int), average="micro")
    # Frequency baseline: every note gets the k most frequent training codes (k = mean cardinality).
    k = round(y_train.sum(axis=1).mean())
    base = np.zeros_like(y_test)
    base[:, np.argsort(-y_train.sum(axis=0))[:k]] = 1
    base_f1 = f1_score(y_test, base, average="micro")
    # Measured 0.65 vs 0.42; negated distractors and shared title words keep it far from trivial.
    assert model_f1 > base_f1 + 0.15, (model_f1, base_f1)
    assert model_f1 < 0.95


def test_prepare_synthetic_writes_a_prepared_dataset(tmp_path: Path) -> None:
    stats = prepare_synthetic(tmp_path / "syn", n_notes=30, words_per_note=80, n_codes=20, ontology=ONTO)
    ds = PreparedDataset.open(tmp_path / "syn")
    assert stats["total"]["documents"] == 30 == len(ds.load())
    assert stats["source"] == "synthetic" and stats["options"]["systems"] == ["icd9cm-dx", "icd9cm-proc"]
    first = next(iter(ds.documents()))
    assert first.evidence and first.id == "syn-0000000"
    again = prepare_synthetic(tmp_path / "syn2", n_notes=30, words_per_note=80, n_codes=20, ontology=ONTO)
    assert again["fingerprint"] == stats["fingerprint"]
    with pytest.raises(IcdcoderError, match="already exists"):
        prepare_synthetic(tmp_path / "syn", n_notes=3, n_codes=20, ontology=ONTO)


def _edin_full_train() -> list[int]:
    from icdcoder.data.sources.mimic_common import load_split_ids

    return load_split_ids("mimic3-full")["train"]


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_mimic3_csvs_have_mimic_schema(tmp_path: Path) -> None:
    out = tmp_path / "mimic"
    summary = write_mimic3_csvs(
        out, 120, words_per_note=60, n_codes=40, codes_per_note=4.0, ontology=ONTO, addendum_rate=0.2
    )
    notes = _read(out / "NOTEEVENTS.csv.gz")
    diag = _read(out / "DIAGNOSES_ICD.csv.gz")
    proc = _read(out / "PROCEDURES_ICD.csv.gz")
    assert tuple(notes.columns) == NOTEEVENTS_COLUMNS
    assert tuple(diag.columns) == ICD_COLUMNS == tuple(proc.columns)
    # MIMIC-III quotes the header and strings; numbers, dates and NULLs are bare.
    with gzip.open(out / "DIAGNOSES_ICD.csv.gz", "rt") as fh:
        assert fh.readline() == '"ROW_ID","SUBJECT_ID","HADM_ID","SEQ_NUM","ICD9_CODE"\n'
        assert re.fullmatch(r'1,\d+,\d+,1,"[0-9VE]+"\n', fh.readline())
    with gzip.open(out / "NOTEEVENTS.csv.gz", "rt") as fh:
        fh.readline()
        assert re.match(
            r'1,\d+,\d+,2\d{3}-\d\d-\d\d,,,"Discharge summary","Report",,,"Admission Date:', fh.readline()
        )
    reports = notes[(notes.CATEGORY == "Discharge summary") & (notes.DESCRIPTION == "Report")]
    addenda = notes[(notes.CATEGORY == "Discharge summary") & (notes.DESCRIPTION == "Addendum")]
    assert len(reports) == 120 - summary["without_discharge_summary"] == reports.HADM_ID.nunique()
    assert len(addenda) == summary["addenda"] > 5
    assert set(notes.CATEGORY) - {"Discharge summary"}  # other categories a loader must drop
    assert notes.ROW_ID.astype(int).is_unique
    assert (reports.CHARTTIME == "").all() and (reports.CHARTDATE.str.match(r"^2\d{3}-\d{2}-\d{2}$")).all()
    # HADM_IDs come from the shipped split files.
    shipped = {h for ids in shipped_mimic3_hadm_ids().values() for h in ids}
    assert {int(h) for h in reports.HADM_ID} <= shipped
    assert sum(summary["splits"].values()) == 120 and summary["splits"]["none"] == 0
    # Codes are stored undotted; dots re-inserted they are the generator's codes for the same note.
    coded = diag[diag.ICD9_CODE != ""]
    assert not coded.ICD9_CODE.str.contains(".", regex=False).any()
    assert not proc.ICD9_CODE.str.contains(".", regex=False).any()
    docs = list(generate(120, words_per_note=60, n_codes=40, codes_per_note=4.0, ontology=ONTO))
    by_hadm: dict[str, list[str]] = {}
    for table, system in ((coded, "icd9cm-dx"), (proc, "icd9cm-proc")):
        for hadm, code in zip(table.HADM_ID, table.ICD9_CODE, strict=True):
            key = f"{system}:{normalize_code(system, code)}"
            by_hadm.setdefault(hadm, [])
            if key not in by_hadm[hadm]:
                by_hadm[hadm].append(key)
    for j, row in enumerate(reports.itertuples()):
        assert docs[j].text == row.TEXT
        assert by_hadm[str(row.HADM_ID)] == docs[j].codes
    # Deterministic to the byte (gzip timestamps fixed).
    write_mimic3_csvs(
        tmp_path / "again",
        120,
        words_per_note=60,
        n_codes=40,
        codes_per_note=4.0,
        ontology=ONTO,
        addendum_rate=0.2,
    )
    for name in ("NOTEEVENTS", "DIAGNOSES_ICD", "PROCEDURES_ICD"):
        assert (out / f"{name}.csv.gz").read_bytes() == (tmp_path / "again" / f"{name}.csv.gz").read_bytes()


def test_mimic3_csvs_invent_ids_beyond_the_split_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = shipped_mimic3_hadm_ids()
    assert [len(shipped[s]) for s in ("train", "dev", "test")] == [47723, 1631, 3372]
    from icdcoder.data.sources import synthetic

    # CAML lists 4 train ids that the published split (Edin's table) lacks: they get no discharge summary.
    withheld = synthetic.caml_ids_without_discharge_summary()
    assert len(withheld) == 4 and withheld == set(shipped["train"]) - set(_edin_full_train())
    tables = {"train": [101, 102, 105], "dev": [103], "test": [104]}
    monkeypatch.setattr(synthetic, "shipped_mimic3_hadm_ids", lambda: tables)
    monkeypatch.setattr(synthetic, "caml_ids_without_discharge_summary", lambda: {105})
    summary = write_mimic3_csvs(
        tmp_path / "m", 8, words_per_note=30, n_codes=20, ontology=ONTO, addendum_rate=1
    )
    assert summary["splits"] == {"train": 3, "dev": 1, "test": 1, "none": 3}
    assert summary["without_discharge_summary"] == 1 and summary["discharge_reports"] == 7
    notes = pd.read_csv(tmp_path / "m" / "NOTEEVENTS.csv.gz", usecols=["HADM_ID", "CATEGORY"])
    ids = notes[notes.CATEGORY == "Discharge summary"].HADM_ID
    assert sorted(set(ids)) == [101, 102, 103, 104, 200001, 200002, 200003]
    diag = pd.read_csv(tmp_path / "m" / "DIAGNOSES_ICD.csv.gz", usecols=["HADM_ID"])
    assert 105 in set(diag.HADM_ID)  # coded, but without a discharge summary (as on real MIMIC-III)


def test_mimic4_csvs_have_mimic4_schema(tmp_path: Path) -> None:
    from icdcoder.data.sources.synthetic import (
        DIAGNOSES_ICD_COLUMNS,
        DISCHARGE_COLUMNS,
        PROCEDURES_ICD_COLUMNS,
        shipped_mimic4_hadm_ids,
        write_mimic4_csvs,
    )

    shipped = shipped_mimic4_hadm_ids()
    assert [len(shipped["icd10"][s]) for s in ("train", "dev", "test")] == [89099, 13378, 19802]
    out = tmp_path / "m4"
    summary = write_mimic4_csvs(out, 60, words_per_note=60, n_codes=15, codes_per_note=3.0, ontology=ONTO)
    notes = _read(out / "note" / "discharge.csv.gz")
    diag = _read(out / "hosp" / "diagnoses_icd.csv.gz")
    proc = _read(out / "hosp" / "procedures_icd.csv.gz")
    assert tuple(notes.columns) == DISCHARGE_COLUMNS
    assert tuple(diag.columns) == DIAGNOSES_ICD_COLUMNS and tuple(proc.columns) == PROCEDURES_ICD_COLUMNS
    with gzip.open(out / "hosp" / "diagnoses_icd.csv.gz", "rt") as fh:
        assert fh.readline() == "subject_id,hadm_id,seq_num,icd_code,icd_version\n"
    assert notes.hadm_id.nunique() == 60 and (notes.note_type == "DS").all()
    assert not notes.text.str.contains("[**", regex=False).any() and notes.text.str.contains("___").all()
    versions = {**{h: "9" for ids in shipped["icd9"].values() for h in ids}}
    versions.update({h: "10" for ids in shipped["icd10"].values() for h in ids})
    for table in (diag, proc):
        assert not table.icd_code.str.contains(".", regex=False).any()
        assert all(versions[int(h)] == v for h, v in zip(table.hadm_id, table.icd_version, strict=True))
    assert set(proc.icd_code[proc.icd_version == "10"]) <= set(_ICD10PCS)
    assert sum(summary["splits"]["icd9"].values()) + sum(summary["splits"]["icd10"].values()) == 60


def test_cli_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from icdcoder.cli import data_synthetic

    monkeypatch.setattr(data_synthetic, "_ontology", lambda: ONTO)
    app = typer.Typer()
    data_synthetic.register(app)
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["synthetic", "--notes", "12", "--words", "60", "--codes", "20", "--codes-per-note", "3",
         "--seed", "4", "--out", str(tmp_path / "ds")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "12 documents" in res.output
    assert PreparedDataset.open(tmp_path / "ds").stats["options"]["seed"] == 4
    res = runner.invoke(
        app,
        ["synthetic-mimic3-csv", "--notes", "10", "--words", "50", "--codes", "20",
         "--out", str(tmp_path / "raw")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "raw" / "NOTEEVENTS.csv.gz").is_file()
    res = runner.invoke(app, ["synthetic", "--notes", "2", "--codes", "20", "--out", str(tmp_path / "ds")])
    assert isinstance(res.exception, IcdcoderError) and "already exists" in str(res.exception)


def test_with_the_real_ontology() -> None:
    from icdcoder.data.sources.synthetic import _phrases as real_phrases
    from icdcoder.ontology.ontology import get_ontology

    onto = get_ontology()
    for systems, n_codes in (("icd9", 60), ("icd10", 12)):
        docs = list(generate(12, words_per_note=120, n_codes=n_codes, systems=systems, seed=2))
        assert len({d.text for d in docs}) == 12
        for doc in docs:
            low = doc.text.lower()
            for key in doc.codes:
                system, code = key.split(":")
                entry = onto.lookup(system, code)
                assert entry is not None and entry.is_leaf, key
                assert any(p.lower() in low for p in real_phrases(onto, system, code)), (doc.id, key)
        systems_seen = {k.split(":")[0] for d in docs for k in d.codes}
        assert len(systems_seen) == 2, systems_seen
