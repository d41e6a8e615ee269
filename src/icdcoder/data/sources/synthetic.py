"""Synthetic MIMIC-shaped discharge summaries with real ICD codes, for tests, demos and scale benchmarks.

Notes look like MIMIC-III discharge summaries (section headers, de-identification placeholders such as
`[**2150-3-4**]`, vitals, labs, medication lists) and carry real codes from the offline ontology. Every code
assigned to a note is mentioned at least once by one of its titles or synonyms (verbatim apart from case,
sometimes twice, sometimes hedged: "history of", "rule out", "s/p"); a few titles of codes the note does NOT
carry appear negated ("no evidence of ...") so the task is learnable but not trivially separable. Code
frequencies follow a Zipf-like tail, note lengths a capped log-normal.

Everything is deterministic given the seed and the ontology content: the label space comes from
`default_rng([seed, 0])` and note `i` from `default_rng([seed, 1, i])`, so note `i` is the same whatever
`n_notes` is and a run never holds more than one note in memory.
"""

from __future__ import annotations

import gzip
import io
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from icdcoder.data.document import SPLITS, Document, Evidence
from icdcoder.data.prepared import write_prepared
from icdcoder.data.sources import mimic3, mimic4
from icdcoder.errors import IcdcoderError
from icdcoder.io import atomic_output_dir
from icdcoder.ontology.systems import CodeSystem, is_well_formed, parse_system

SYSTEM_PRESETS: dict[str, tuple[str, ...]] = {
    "icd9": (CodeSystem.ICD9CM_DX.value, CodeSystem.ICD9CM_PROC.value),
    "icd10": (CodeSystem.ICD10CM.value, CodeSystem.ICD10PCS.value),
}
_PROC_SYSTEMS = {CodeSystem.ICD9CM_PROC.value, CodeSystem.ICD10PCS.value}
# MIMIC-III full: about 22 % of the 8,929 codes are procedures; label cardinality 15.9 (top-50: 5.7).
PROC_SHARE = 0.22
MIMIC3_FULL_CARDINALITY = 15.9
MIMIC3_TOP50_CARDINALITY = 5.7
_LENGTH_SIGMA = 0.45  # log-normal spread of note lengths
_MIN_PHRASE_CHARS = 3
_MAX_PHRASES = 6
_SKIPPED_SOURCES = {"short_title"}  # CMS abbreviations nobody writes in a note

# The head of the frequency ranking: MIMIC-III's 50 most frequent codes (the CAML top-50 label set), roughly
# in frequency order, and a few codes known to be frequent in MIMIC-IV ICD-10. Codes the ontology lacks are
# skipped; the rest of the label space is drawn at random.
COMMON_CODES: tuple[str, ...] = (
    tuple(
        f"icd9cm-dx:{c}"
        for c in "401.9 428.0 427.31 414.01 584.9 250.00 272.4 518.81 599.0 530.81 272.0 285.9 244.9 486 "
        "285.1 276.2 496 995.92 V58.61 507.0 038.9 585.9 403.90 311 305.1 412 287.5 410.71 276.1 V45.81 "
        "424.0 V15.82 511.9".split()
    )
    + tuple(
        f"icd9cm-proc:{c}"
        for c in "38.93 96.04 96.6 96.71 99.04 39.61 96.72 88.56 38.91 36.15 99.15 88.72 37.22 33.24 39.95 "
        "45.13 37.23".split()
    )
    + tuple(
        f"icd10cm:{c}"
        for c in "I10 E78.5 Z87.891 K21.9 I25.10 E11.9 N17.9 F32.9 Z79.01 I48.91 F41.9 Z79.4 E03.9 D64.9 "
        "Z66 E87.1 I50.9 J44.9 G47.33 E66.9".split()
    )
    + tuple(
        f"icd10pcs:{c}" for c in "02HV33Z 5A1955Z 5A1945Z 0BH17EZ 3E0G76Z 30233N1 5A1D70Z 4A023N8".split()
    )
)

# The generated files use exactly the loaders' column lists, so generator and loader cannot drift apart.
NOTEEVENTS_COLUMNS = mimic3.NOTEEVENTS.schema
ICD_COLUMNS = mimic3.DIAGNOSES_ICD.schema
_INVENTED_HADM_START = 200001  # beyond MIMIC-III's HADM_ID range (100001-199999)


class OntologyLike(Protocol):
    """The part of `icdcoder.ontology.ontology.Ontology` the generator reads."""

    def codes(self, system: str) -> list[str]: ...

    def synonyms(self, system: str, code: str) -> Sequence[Any]: ...

    def lookup(self, system: str, code: str) -> Any: ...


def resolve_systems(systems: str | Sequence[str]) -> tuple[str, ...]:
    """`icd9` / `icd10` presets, one system name, or a sequence of system names -> system values."""
    if isinstance(systems, str):
        key = systems.strip().lower()
        if key in SYSTEM_PRESETS:
            return SYSTEM_PRESETS[key]
        systems = [s for s in key.split(",") if s.strip()]
    out = tuple(dict.fromkeys(parse_system(s).value for s in systems))
    if not out:
        raise IcdcoderError("no code system given.", fix="use icd9, icd10 or a list of system names.")
    return out


def _default_ontology() -> OntologyLike:
    from icdcoder.ontology.ontology import get_ontology  # loads tables lazily, on first use

    onto: OntologyLike = get_ontology()
    return onto


def _leaf_codes(system: str, codes: Sequence[str]) -> list[str]:
    """Well-formed codes with no descendant in `codes` (MIMIC carries billable leaves), sorted."""
    undotted = sorted({c.replace(".", ""): c for c in codes if is_well_formed(system, c)}.items())
    leaves = []
    for i, (flat, code) in enumerate(undotted):
        # In sorted order every descendant of `flat` follows it directly.
        if i + 1 < len(undotted) and undotted[i + 1][0].startswith(flat):
            continue
        leaves.append(code)
    return leaves


def _phrases(onto: OntologyLike, system: str, code: str) -> list[str]:
    """Texts a clinician might write for a code: its long title and the ontology's synonyms, in the
    ontology's rank order, without raw CMS short titles ("Unil femoral hern w obst") or index-style texts
    full of parentheses, de-duplicated case-insensitively, at most _MAX_PHRASES."""
    texts: list[str] = []
    entry = onto.lookup(system, code)
    title = getattr(entry, "long_title", None) if entry is not None else None
    if title:
        texts.append(str(title))
    for syn in onto.synonyms(system, code):
        if getattr(syn, "source", "") not in _SKIPPED_SOURCES:
            texts.append(str(getattr(syn, "text", syn)))
    seen: set[str] = set()
    out = []
    for t in texts:
        t = " ".join(t.split())
        if len(t) >= _MIN_PHRASE_CHARS and t.count("(") < 2 and t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out[:_MAX_PHRASES]


def _interleave(keys: Sequence[str], systems: Sequence[str]) -> list[str]:
    """Common codes of the wanted systems, alternating between systems in proportion to their list lengths
    (so a small head still mixes diagnoses and procedures)."""
    lists = [[k for k in keys if k.split(":", 1)[0] == s] for s in systems]
    lists = [x for x in lists if x]
    total = sum(len(x) for x in lists)
    out: list[str] = []
    pos = [0] * len(lists)
    while len(out) < total:
        # the list furthest behind its share goes next
        j = min(
            range(len(lists)), key=lambda i: (pos[i] / len(lists[i]) if pos[i] < len(lists[i]) else 2.0, i)
        )
        out.append(lists[j][pos[j]])
        pos[j] += 1
    return out


def _candidates(
    onto: OntologyLike, system: str, rng: np.random.Generator, skip: set[tuple[str, str]]
) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """A system's leaf codes in a seeded random order; the table is scanned only if a code is asked for."""
    pool = [c for c in _leaf_codes(system, onto.codes(system)) if (system, c) not in skip]
    for j in rng.permutation(len(pool)).tolist():
        yield system, pool[j], tuple(_phrases(onto, system, pool[j]))


def _take(
    candidates: Iterator[tuple[str, str, tuple[str, ...]]],
    want: int,
    picked: list[tuple[str, str, tuple[str, ...]]],
) -> int:
    """Move up to `want` candidates that have phrases into `picked`; return how many were moved."""
    got = 0
    while got < want:
        item = next(candidates, None)
        if item is None:
            break
        if item[2]:
            picked.append(item)
            got += 1
    return got


@dataclass(frozen=True)
class LabelSpace:
    """The codes a synthetic corpus draws from, in frequency-rank order (rank 0 is the most frequent)."""

    systems: tuple[str, ...]
    codes: tuple[tuple[str, str], ...]  # (system, code)
    phrases: tuple[tuple[str, ...], ...]
    probs: np.ndarray  # Zipf weights by rank, sum 1

    @property
    def keys(self) -> list[str]:
        return [f"{s}:{c}" for s, c in self.codes]


def build_label_space(
    n_codes: int,
    systems: str | Sequence[str] = "icd9",
    zipf: float = 1.1,
    seed: int = 0,
    ontology: OntologyLike | None = None,
) -> LabelSpace:
    """Pick `n_codes` real leaf codes that have at least one usable phrase, and give them Zipf weights."""
    if n_codes < 1:
        raise IcdcoderError(f"n_codes must be at least 1, got {n_codes}.")
    if zipf < 0:
        raise IcdcoderError(f"zipf exponent must be >= 0, got {zipf}.")
    sys_list = resolve_systems(systems)
    onto = ontology if ontology is not None else _default_ontology()
    rng = np.random.default_rng([seed, 0])
    has_proc = any(s in _PROC_SYSTEMS for s in sys_list)
    dx_systems = [s for s in sys_list if s not in _PROC_SYSTEMS]
    n_proc = round(n_codes * PROC_SHARE) if has_proc and dx_systems else (n_codes if has_proc else 0)
    quota: dict[str, int] = {}
    for group, n in (([s for s in sys_list if s in _PROC_SYSTEMS], n_proc), (dx_systems, n_codes - n_proc)):
        for j, s in enumerate(group):  # split a group's quota evenly over its systems
            quota[s] = n // len(group) + (1 if j < n % len(group) else 0)

    # The head of the ranking: the common codes the ontology has, systems interleaved.
    head: list[tuple[str, str, tuple[str, ...]]] = []
    for key in _interleave(COMMON_CODES, sys_list):
        system, code = key.split(":", 1)
        if len(head) < n_codes and onto.lookup(system, code) is not None:
            ph = tuple(_phrases(onto, system, code))
            if ph:
                head.append((system, code, ph))
    for system, _code, _ in head:
        quota[system] -= 1
    # A head larger than a system's share borrows from the other systems' quotas.
    for system in sys_list:
        while quota[system] < 0:
            donor = max(sys_list, key=lambda s: quota[s])
            quota[donor] -= 1
            quota[system] += 1
    skip = {(s, c) for s, c, _ in head}
    candidates = {s: _candidates(onto, s, rng, skip) for s in sys_list}
    picked: list[tuple[str, str, tuple[str, ...]]] = []
    short = 0
    for system in sys_list:
        got = _take(candidates[system], quota[system], picked) if quota[system] > 0 else 0
        short += quota[system] - got
    for system in sys_list:  # a system that ran out of codes is made up from the others
        if short:
            short -= _take(candidates[system], short, picked)
    if short:
        raise IcdcoderError(
            f"the ontology has only {len(head) + len(picked)} usable {'/'.join(sys_list)} codes, {n_codes} "
            "were asked for.",
            fix="ask for fewer codes (--codes).",
        )
    ranks = rng.permutation(len(picked))  # mix systems over the frequency ranks of the tail
    ordered = head + [picked[int(r)] for r in ranks]
    weights = 1.0 / np.power(np.arange(1, len(ordered) + 1, dtype=np.float64), zipf)
    return LabelSpace(
        systems=sys_list,
        codes=tuple((s, c) for s, c, _ in ordered),
        phrases=tuple(p for _, _, p in ordered),
        probs=weights / weights.sum(),
    )


# --- filler text banks ------------------------------------------------------------------------------

_SERVICES = (
    "MEDICINE",
    "CARDIOTHORACIC",
    "SURGERY",
    "NEUROLOGY",
    "CARDIOLOGY",
    "NEUROSURGERY",
    "ORTHOPAEDICS",
)
_ALLERGIES = (
    "No Known Allergies / Adverse Drug Reactions",
    "Patient recorded as having No Known Allergies to Drugs",
    "Penicillins",
    "Sulfa (Sulfonamide Antibiotics)",
    "Codeine / Morphine",
    "Lisinopril",
)
_COMPLAINTS = (
    "shortness of breath",
    "chest pain",
    "altered mental status",
    "abdominal pain",
    "fever",
    "weakness",
    "fall",
    "hypotension",
    "nausea and vomiting",
    "transfer for cardiac catheterization",
    "GI bleed",
    "syncope",
)
_SYMPTOMS = (
    "shortness of breath",
    "chest pressure",
    "abdominal pain",
    "fatigue",
    "dizziness",
    "lower extremity edema",
    "productive cough",
    "nausea",
    "generalized weakness",
    "confusion",
    "decreased appetite",
    "dyspnea on exertion",
    "palpitations",
    "back pain",
    "headache",
    "fevers and chills",
    "melena",
    "orthopnea",
)
_FINDINGS = (
    "no acute intracranial process",
    "small bilateral pleural effusions",
    "mild cardiomegaly without overt edema",
    "a moderate right-sided effusion",
    "diffuse bowel wall thickening",
    "a left lower lobe opacity",
    "stable postoperative changes",
    "mild degenerative changes of the spine",
    "a patent stent with no significant stenosis",
    "an ejection fraction of 35-40%",
)
_BODY = ("head", "chest", "abdomen and pelvis", "spine", "neck", "chest with contrast")
_UNITS = ("MICU", "CCU", "medicine floor", "CVICU", "SICU", "step-down unit", "TSICU")
_RELATIVES = ("daughter", "son", "sister", "partner", "brother")
_FHX = ("CAD", "MI at a young age", "breast cancer", "colon cancer", "stroke", "DM2", "HTN", "dementia")
_DISPO = ("home", "home with services", "acute rehab", "a skilled nursing facility")
_LINES = ("PIV", "R IJ CVL", "L radial arterial line", "PICC", "Foley")
_DIET = ("regular diet", "cardiac diet", "diabetic diet", "soft mechanical diet", "thin liquids")

# name, doses, route, frequency (MIMIC-style "Sig" follows from the frequency)
_DRUGS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("metoprolol tartrate", ("12.5 mg", "25 mg", "50 mg"), "PO", "BID"),
    ("lisinopril", ("5 mg", "10 mg", "20 mg"), "PO", "DAILY"),
    ("atorvastatin", ("20 mg", "40 mg", "80 mg"), "PO", "DAILY"),
    ("aspirin", ("81 mg", "325 mg"), "PO", "DAILY"),
    ("furosemide", ("20 mg", "40 mg", "80 mg"), "PO", "DAILY"),
    ("warfarin", ("2 mg", "5 mg", "7.5 mg"), "PO", "DAILY"),
    ("insulin glargine", ("10 units", "20 units", "34 units"), "SC", "QHS"),
    ("metformin", ("500 mg", "850 mg", "1000 mg"), "PO", "BID"),
    ("pantoprazole", ("40 mg",), "PO", "Q24H"),
    ("levothyroxine", ("25 mcg", "50 mcg", "100 mcg"), "PO", "DAILY"),
    ("amlodipine", ("5 mg", "10 mg"), "PO", "DAILY"),
    ("docusate sodium", ("100 mg",), "PO", "BID"),
    ("senna", ("8.6 mg",), "PO", "BID PRN"),
    ("acetaminophen", ("325 mg", "650 mg"), "PO", "Q6H PRN"),
    ("oxycodone", ("5 mg", "10 mg"), "PO", "Q4H PRN"),
    ("heparin", ("5000 units",), "SC", "TID"),
    ("vancomycin", ("1 g", "1250 mg"), "IV", "Q12H"),
    ("piperacillin-tazobactam", ("4.5 g",), "IV", "Q8H"),
    ("ceftriaxone", ("1 g", "2 g"), "IV", "Q24H"),
    ("ciprofloxacin", ("250 mg", "500 mg"), "PO", "Q12H"),
    ("prednisone", ("10 mg", "40 mg", "60 mg"), "PO", "DAILY"),
    ("albuterol", ("2 puffs",), "INH", "Q4H PRN"),
    ("tiotropium", ("18 mcg",), "INH", "DAILY"),
    ("clopidogrel", ("75 mg",), "PO", "DAILY"),
    ("lorazepam", ("0.5 mg", "1 mg"), "PO", "Q6H PRN"),
    ("gabapentin", ("100 mg", "300 mg"), "PO", "TID"),
    ("sertraline", ("50 mg", "100 mg"), "PO", "DAILY"),
    ("tamsulosin", ("0.4 mg",), "PO", "QHS"),
    ("allopurinol", ("100 mg", "300 mg"), "PO", "DAILY"),
    ("potassium chloride", ("20 mEq", "40 mEq"), "PO", "DAILY"),
    ("ferrous sulfate", ("325 mg",), "PO", "DAILY"),
    ("lactulose", ("30 mL",), "PO", "TID"),
    ("spironolactone", ("25 mg", "50 mg"), "PO", "DAILY"),
    ("carvedilol", ("3.125 mg", "6.25 mg", "12.5 mg"), "PO", "BID"),
    ("enoxaparin", ("40 mg", "80 mg"), "SC", "DAILY"),
    ("ondansetron", ("4 mg",), "IV", "Q8H PRN"),
)
_SIG = {
    "BID": "BID (2 times a day)",
    "TID": "TID (3 times a day)",
    "DAILY": "DAILY (Daily)",
    "QHS": "HS (at bedtime)",
    "Q24H": "Q24H (every 24 hours)",
    "Q12H": "Q12H (every 12 hours)",
    "Q8H": "Q8H (every 8 hours)",
    "Q6H PRN": "Q6H (every 6 hours) as needed for pain",
    "Q4H PRN": "Q4H (every 4 hours) as needed for pain",
    "BID PRN": "BID (2 times a day) as needed for constipation",
    "Q8H PRN": "Q8H (every 8 hours) as needed for nausea",
}
_COUNT_WORDS = ("One (1)", "Two (2)", "Three (3)", "Half (0.5)")

_SLOT_RANGES: dict[str, tuple[int, int, int]] = {  # lo, hi, divisor
    "n": (2, 9, 1),
    "temp": (970, 1024, 10),
    "hr": (55, 125, 1),
    "rr": (12, 28, 1),
    "sat": (88, 100, 1),
    "id": (1, 9999, 1),
    "wbc": (30, 240, 10),
    "lac": (5, 60, 10),
    "hct": (240, 420, 10),
    "age": (45, 90, 1),
}
_HPI = (
    "{He} was in {his} usual state of health until {n} days prior to admission when {he} developed {sym}.",
    "{He} reports {sym} for the past {n} days, associated with {sym2}.",
    "In the ED, initial vitals were T {temp} HR {hr} BP {bp} RR {rr} O2 sat {sat}% on RA.",
    "{He} was given {drug} and {drug2} in the ED and admitted to the {unit} for further management.",
    "Of note, {he} was recently discharged from [**Hospital {id}**] after a {n} day admission.",
    "Labs were notable for a WBC of {wbc} and a lactate of {lac}.",
    "A CT of the {body} was obtained which showed {finding}.",
    "EMS was called by {his} {rel}, who found {him} at home with {sym}.",
    "{He} denies fevers, chills, night sweats, nausea or vomiting.",
    "Review of systems is otherwise negative in detail except as noted above.",
    "{His} {rel} reports that {he} has been more tired over the last {n} weeks.",
    "{He} was seen by {his} PCP Dr. [**Last Name (STitle) {id}**] on [**{date}**], who increased {his} "
    "{drug}.",
    "On arrival to the floor {he} was comfortable and complained only of mild {sym}.",
    "Cardiology was consulted in the ED given concern for {sym}.",
)
_COURSE = (
    "{He} was started on {drug} and {his} symptoms improved over the next {n} days.",
    "Serial cardiac enzymes were trended and {his} troponin peaked at 0.{n}.",
    "{His} creatinine improved to 1.{n} with gentle IV fluids.",
    "Physical therapy evaluated the patient and recommended discharge to {dispo}.",
    "{He} remained hemodynamically stable throughout the remainder of the admission.",
    "Blood cultures drawn on admission showed no growth to date.",
    "Electrolytes were monitored daily and repleted as needed.",
    "{His} home {drug} was held on admission and restarted prior to discharge.",
    "Nutrition was consulted and {he} was tolerating a {diet} at the time of discharge.",
    "{He} was transferred to the floor on hospital day {n} in stable condition.",
    "Social work was involved for coping and discharge planning.",
    "Pain was well controlled with {drug} as needed.",
    "Goals of care were discussed with the patient and {his} {rel}; {he} remained full code.",
    "{He} was diuresed with IV furosemide with a net negative balance of {n} liters.",
    "A repeat CT of the {body} showed {finding}.",
    "{His} hematocrit remained stable at {hct} and {he} did not require further transfusion.",
    "The {unit} team followed {him} closely and {his} oxygen requirement was weaned to room air.",
    "Lines: {line}. Prophylaxis: heparin SC. Communication: patient and {rel}. Code status: full code.",
    "{He} will follow up with Dr. [**Last Name (STitle) {id}**] in clinic in {n} weeks.",
    "{His} blood pressure was controlled on {drug} and {drug2}.",
)
_EXAM = (
    "General: NAD, alert and oriented x3, pleasant and conversant.",
    "HEENT: NCAT, PERRL, EOMI, MMM, oropharynx clear.",
    "Neck: supple, JVP not elevated, no LAD.",
    "Neck: JVP elevated to {n} cm.",
    "CV: RRR, normal S1 S2, no murmurs, rubs or gallops.",
    "CV: irregularly irregular, II/VI systolic murmur at the apex.",
    "Lungs: clear to auscultation bilaterally, no wheezes, rales or rhonchi.",
    "Lungs: crackles at the bases bilaterally, decreased breath sounds on the right.",
    "Abdomen: soft, non-tender, non-distended, normoactive bowel sounds, no organomegaly.",
    "Ext: warm, well perfused, 2+ pulses, no clubbing, cyanosis or edema.",
    "Ext: {n}+ pitting edema to the knees bilaterally.",
    "Neuro: CN II-XII intact, strength 5/5 throughout, sensation grossly intact.",
    "Skin: no rashes or lesions noted.",
    "GU: Foley in place draining clear yellow urine.",
)
_RESULTS = (
    "CXR: {finding}.",
    "ECHO: The left atrium is mildly dilated. There is {finding}.",
    "ECG: sinus rhythm at {hr}, normal axis, no acute ST-T wave changes.",
    "CT {body}: {finding}.",
    "Microbiology: blood cultures x2 no growth; urine culture with mixed flora.",
    "U/S: no evidence of hydronephrosis.",
)
_INSTRUCTIONS = (
    "You were admitted to the hospital because of {sym}.",
    "Please take all of your medications as prescribed.",
    "Please call your doctor or return to the emergency department if you develop chest pain, "
    "shortness of breath, fevers or any other concerning symptoms.",
    "Weigh yourself every morning and call your doctor if your weight goes up more than 3 lbs.",
    "The following changes were made to your medications: START {drug}. STOP {drug2}.",
    "Please keep all of your follow-up appointments.",
    "It was a pleasure taking care of you during your hospitalization.",
    "Do not drive or operate machinery while taking {drug}.",
    "Please continue a {diet} at home.",
)
_SOCIAL = (
    "Lives with {his} {rel} in [**Location {id}**].",
    "Former smoker, quit {n} years ago.",
    "Denies tobacco, alcohol or illicit drug use.",
    "Drinks {n} glasses of wine per week.",
    "Retired {job}, independent with ADLs at baseline.",
)
_FAMILY = (
    "Mother with {fhx}.",
    "Father died of {fhx} at age {age}.",
    "Brother with {fhx}.",
    "Non-contributory.",
)
_JOBS = ("teacher", "engineer", "nurse", "mechanic", "accountant", "bus driver")
_GENERIC_PMH = (
    "- HTN",
    "- HLD",
    "- GERD",
    "- BPH",
    "- OA of the knees",
    "- s/p appendectomy remote",
    "- Gout",
)

_SLOT_CHOICES: dict[str, tuple[str, ...]] = {
    "sym": _SYMPTOMS,
    "sym2": _SYMPTOMS,
    "unit": _UNITS,
    "body": _BODY,
    "finding": _FINDINGS,
    "dispo": _DISPO,
    "diet": _DIET,
    "line": _LINES,
    "fhx": _FHX,
    "job": _JOBS,
}
_POSITIVE_HPI = (
    "{He} has a history of {x}.",
    "{He} was recently diagnosed with {x}.",
    "Found to have {x} in the ED.",
    "Workup was notable for {x}.",
)
_POSITIVE_COURSE = (
    "# {X}: ",
    "{He} was treated for {x}. ",
    "Hospital course was complicated by {x}. ",
    "# {X} - managed as above. ",
)
_PROC_COURSE = (
    "{He} underwent {x} on [**{date}**] without complication. ",
    "{He} is s/p {x}. ",
    "# {X}: ",
    "{X} was performed on hospital day {n}. ",
)
_HEDGES_DX = ("history of ", "rule out ", "possible ", "presumed ")
_HEDGES_PROC = ("s/p ", "status post ")
_NEGATED = (
    "No evidence of {x}.",
    "{X} was ruled out.",
    "Negative for {x}.",
    "There was no sign of {x}.",
    "Low suspicion for {x}.",
    "Family history of {x}.",
)
_SECTION_BUDGET = {  # share of the free-text budget per section
    "hpi": 0.17,
    "social": 0.03,
    "family": 0.02,
    "exam": 0.10,
    "results": 0.14,
    "course": 0.32,
    "meds_adm": 0.05,
    "meds_dis": 0.09,
    "instructions": 0.08,
}


_FIXED_WORDS = 280


class _Draws:
    """Cheap bulk-drawn random integers for the many small text choices of one note."""

    __slots__ = ("_buf", "_i", "_rng")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buf: list[int] = []
        self._i = 0

    def next(self) -> int:
        if self._i >= len(self._buf):
            self._buf = self._rng.integers(0, 1 << 30, size=512).tolist()
            self._i = 0
        v = self._buf[self._i]
        self._i += 1
        return v

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[self.next() % len(seq)]

    def between(self, lo: int, hi: int) -> int:
        """Integer in [lo, hi]."""
        return lo + self.next() % (hi - lo + 1)

    def chance(self, p: float) -> bool:
        return self.next() < p * (1 << 30)


class _Slots(dict[str, Any]):
    """Template slots drawn only when a template asks for them (`str.format_map`)."""

    def __init__(self, d: _Draws, pron: dict[str, str], year: int, month: int) -> None:
        super().__init__(pron)
        self._d, self._year, self._month = d, year, month

    def __missing__(self, key: str) -> Any:
        d = self._d
        if key in _SLOT_CHOICES:
            return d.pick(_SLOT_CHOICES[key])
        if key in _SLOT_RANGES:
            lo, hi, scale = _SLOT_RANGES[key]
            v = d.between(lo, hi)
            return v if scale == 1 else f"{v / scale:.1f}"
        if key == "rel":
            return d.pick(_RELATIVES) if d.chance(0.6) else self["spouse"]
        if key == "bp":
            return _bp(d)
        if key in ("drug", "drug2"):
            return d.pick(_DRUGS)[0]
        if key == "date":
            return _date(self._year, self._month, d.between(1, 28))
        raise KeyError(key)


def _pick_phrase(d: _Draws, phrases: Sequence[str]) -> str:
    """The long title a third of the time, else any of the code's phrases."""
    return phrases[0] if d.chance(0.35) else str(d.pick(phrases))


def _bp(d: _Draws) -> str:
    sbp = d.between(90, 180)
    return f"{sbp}/{sbp * d.between(50, 68) // 100}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _date(year: int, month: int, day: int) -> str:
    return f"{year}-{month}-{day}"  # MIMIC placeholders are not zero-padded: [**2150-3-4**]


@dataclass
class SyntheticNote:
    """One generated note before it becomes a Document or CSV rows."""

    index: int
    text: str
    codes: list[tuple[str, str]]  # (system, code), diagnoses first, in sequence order
    evidence: list[Evidence]
    split_draw: float  # uniform in [0, 1), used to assign a split
    admit: tuple[int, int, int]
    discharge: tuple[int, int, int]


class _NoteWriter:
    """Accumulates text pieces, tracking offsets (for evidence) and an approximate word count."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.words = 0
        self.evidence: list[Evidence] = []

    def add(self, s: str) -> None:
        self.parts.append(s)
        self.pos += len(s)
        self.words += len(s.split())

    def mention(self, key: str, phrase: str, before: str, after: str) -> None:
        self.add(before)
        start = self.pos
        self.add(phrase)
        self.evidence.append(Evidence(code=key, spans=((start, self.pos),), text=phrase))
        self.add(after)


class NoteFactory:
    """Generates note `i` of a synthetic corpus; holds only the label space."""

    def __init__(
        self,
        space: LabelSpace,
        *,
        words_per_note: int = 1500,
        codes_per_note: float | None = None,
        seed: int = 0,
        distractors_per_note: float = 1.0,
    ) -> None:
        n = len(space.codes)
        if codes_per_note is None:
            codes_per_note = MIMIC3_FULL_CARDINALITY if n >= 500 else MIMIC3_TOP50_CARDINALITY
        codes_per_note = min(float(codes_per_note), float(n))
        if codes_per_note < 1:
            raise IcdcoderError(f"codes_per_note must be at least 1, got {codes_per_note}.")
        if words_per_note < 1:
            raise IcdcoderError(f"words_per_note must be at least 1, got {words_per_note}.")
        self.space = space
        self.words_per_note = int(words_per_note)
        self.codes_per_note = codes_per_note
        self.seed = seed
        self.distractors_per_note = distractors_per_note
        self._cdf = np.cumsum(space.probs)
        self._cdf /= self._cdf[-1]
        self._keys = space.keys

    def _sample_codes(self, rng: np.random.Generator, k: int) -> list[int]:
        """k distinct ranks, drawn sequentially with Zipf weights (weighted sampling without replacement)."""
        n = len(self._cdf)
        if k >= n:
            return list(range(n))
        chosen: dict[int, None] = {}
        for _ in range(16):
            draws = np.searchsorted(self._cdf, rng.random(2 * (k - len(chosen)) + 4), side="right")
            for r in draws.tolist():
                chosen.setdefault(min(r, n - 1), None)
                if len(chosen) == k:
                    return list(chosen)
        # Nearly the whole space is wanted and only rare codes are left: finish with Gumbel top-k over them.
        rest = np.setdiff1d(np.arange(n), np.fromiter(chosen, dtype=np.int64))
        keys = np.log(self.space.probs[rest]) + rng.gumbel(size=len(rest))
        return list(chosen) + rest[np.argsort(-keys, kind="stable")[: k - len(chosen)]].tolist()

    def note(self, i: int) -> SyntheticNote:
        rng = np.random.default_rng([self.seed, 1, i])
        d = _Draws(rng)
        split_draw = float(rng.random())
        k = 1 + int(rng.poisson(self.codes_per_note - 1)) if self.codes_per_note > 1 else 1
        k = min(k, len(self._cdf))
        ranks = self._sample_codes(rng, k)
        mu = math.log(self.words_per_note) - _LENGTH_SIGMA**2 / 2
        target = float(np.exp(rng.normal(mu, _LENGTH_SIGMA)))
        target = int(min(max(target, 0.15 * self.words_per_note), 4.0 * self.words_per_note))
        n_distract = int(rng.poisson(self.distractors_per_note))

        space = self.space
        dx = [r for r in ranks if space.codes[r][0] not in _PROC_SYSTEMS]
        px = [r for r in ranks if space.codes[r][0] in _PROC_SYSTEMS]
        assigned = set(ranks)
        # Distractors follow the code frequencies too, so a code's words are mostly seen where it is assigned.
        drawn = self._sample_codes(rng, min(n_distract + len(assigned), len(self._cdf)))
        distractors = [r for r in drawn if r not in assigned][:n_distract]

        # Where each code is mentioned: one primary place, sometimes a second one.
        places: dict[str, list[tuple[int, str]]] = {
            s: [] for s in ("hpi", "pmh", "course", "dx", "proc", "course_proc")
        }
        for r in dx:
            first = d.pick(("hpi", "pmh", "course", "course", "dx", "dx"))
            places[first].append((r, self._hedged(d, r, proc=False)))
            if d.chance(0.3):
                second = d.pick(("hpi", "pmh", "course", "dx"))
                places[second].append((r, self._hedged(d, r, proc=False)))
        for r in px:
            first = d.pick(("proc", "proc", "course_proc"))
            places[first].append((r, self._hedged(d, r, proc=True)))
            if d.chance(0.3):
                second = "course_proc" if first == "proc" else "proc"
                places[second].append((r, self._hedged(d, r, proc=True)))
        neg_places: dict[str, list[int]] = {"hpi": [], "results": [], "course": []}
        for r in distractors:
            neg_places[d.pick(("hpi", "results", "course"))].append(r)

        female = d.chance(0.45)
        pron = (
            {"He": "She", "he": "she", "His": "Her", "his": "her", "him": "her", "spouse": "husband"}
            if female
            else {"He": "He", "he": "he", "His": "His", "his": "his", "him": "him", "spouse": "wife"}
        )
        year = d.between(2100, 2200)
        month, day = d.between(1, 12), d.between(1, 28)
        los = d.between(1, 14)
        dis_day = day + los
        dis_month, dis_year = month, year
        if dis_day > 28:
            dis_day -= 28
            dis_month += 1
            if dis_month > 12:
                dis_month, dis_year = 1, year + 1
        age = d.between(19, 89)
        adm, dis = _date(year, month, day), _date(dis_year, dis_month, dis_day)
        # The skeleton (headers, vitals, diagnosis lists) and the overshoot of each filled section take about
        # _FIXED_WORDS words; the sections share what is left of the target.
        free = max(target - _FIXED_WORDS - 4 * len(ranks), 0)
        budget = {s: frac * free for s, frac in _SECTION_BUDGET.items()}

        slots = _Slots(d, pron, year, month)

        def fill(template: str) -> str:
            return template.format_map(slots)

        def filler(w: _NoteWriter, bank: Sequence[str], words: float, sep: str = " ") -> None:
            start = w.words
            while w.words - start < words:
                w.add(fill(d.pick(bank)) + sep)

        def negated(w: _NoteWriter, ranks_: list[int]) -> None:
            for r in ranks_:
                phrase = _pick_phrase(d, space.phrases[r])
                t = d.pick(_NEGATED)
                w.add(t.format(x=phrase.lower(), X=_cap(phrase)) + " ")

        w = _NoteWriter()
        sex = "F" if female else "M"
        w.add(f"Admission Date:  [**{adm}**]              Discharge Date:   [**{dis}**]\n\n")
        dob = _date(year - age, d.between(1, 12), d.between(1, 28))
        w.add(f"Date of Birth:  [**{dob}**]             Sex:   {sex}\n\n")
        w.add(f"Service: {d.pick(_SERVICES)}\n\nAllergies:\n{d.pick(_ALLERGIES)}\n\n")
        w.add(f"Attending:[**First Name3 (LF) {d.between(1, 9999)}**]\nChief Complaint:\n")
        w.add(f"{d.pick(_COMPLAINTS)}\n\nMajor Surgical or Invasive Procedure:\n")
        if places["proc"]:
            for r, hedge in places["proc"]:
                self._mention(w, d, r, hedge, "", "\n", line_start=True)
        else:
            w.add("None\n")

        w.add("\n\nHistory of Present Illness:\n")
        w.add(f"{age} year old {'woman' if female else 'man'} who presents with {d.pick(_SYMPTOMS)}. ")
        hpi_items: list[Any] = [("pos", r, h) for r, h in places["hpi"]] + [
            ("neg", r) for r in neg_places["hpi"]
        ]
        filler(w, _HPI, budget["hpi"] / (len(hpi_items) + 1))
        for item in hpi_items:
            if item[0] == "pos":
                t = d.pick(_POSITIVE_HPI).format(**pron, x="\x00", X="\x00")
                before, after = t.split("\x00", 1)
                self._mention(w, d, item[1], item[2], before, after + " ")
            else:
                negated(w, [item[1]])
            filler(w, _HPI, budget["hpi"] / (len(hpi_items) + 1))

        w.add("\n\nPast Medical History:\n")
        for r, hedge in places["pmh"]:
            self._mention(w, d, r, hedge, "- ", "\n", line_start=True)
        for item in dict.fromkeys(d.pick(_GENERIC_PMH) for _ in range(d.between(1, 4))):
            w.add(item + "\n")

        w.add("\nSocial History:\n")
        filler(w, _SOCIAL, budget["social"])
        w.add("\n\nFamily History:\n")
        filler(w, _FAMILY, budget["family"])

        w.add("\n\nPhysical Exam:\n")
        w.add(
            f"Vitals: T {d.between(970, 1024) / 10:.1f} BP {_bp(d)} "
            f"HR {d.between(55, 125)} RR {d.between(12, 28)} O2 sat {d.between(88, 100)}% "
            f"{d.pick(('RA', 'RA', '2L NC', '4L NC', 'NRB'))}\n"
        )
        filler(w, _EXAM, budget["exam"], sep="\n")

        w.add("\nPertinent Results:\n")
        results_start = w.words
        while w.words - results_start < budget["results"] * 0.6:
            w.add(self._lab_line(d, year, month, day))
        w.add(f"Na {d.between(128, 146)} K {d.between(30, 55) / 10:.1f} Cr {d.between(5, 40) / 10:.1f}\n")
        negated(w, neg_places["results"])
        filler(w, _RESULTS, budget["results"] * 0.4, sep="\n")

        w.add("\nBrief Hospital Course:\n")
        course: list[Any] = [("dx", r, h) for r, h in places["course"]]
        course += [("px", r, h) for r, h in places["course_proc"]]
        course += [("neg", r) for r in neg_places["course"]]
        per_item = budget["course"] / (len(course) + 1)
        filler(w, _COURSE, per_item)
        for item in course:
            w.add("\n")
            if item[0] == "neg":
                negated(w, [item[1]])
            else:
                bank = _PROC_COURSE if item[0] == "px" else _POSITIVE_COURSE
                t = d.pick(bank).format(**pron, x="\x00", X="\x00", n=d.between(2, 9), date=adm)
                before, after = t.split("\x00", 1)
                self._mention(w, d, item[1], item[2], before, after, line_start=not before)
            filler(w, _COURSE, per_item)

        w.add("\n\nMedications on Admission:\n")
        meds_start = w.words
        while w.words - meds_start < budget["meds_adm"]:
            name, doses, route, freq = d.pick(_DRUGS)
            w.add(f"{name} {d.pick(doses)} {route} {freq}\n")
        w.add("\nDischarge Medications:\n")
        meds_start, j = w.words, 1
        while w.words - meds_start < budget["meds_dis"]:
            name, doses, route, freq = d.pick(_DRUGS)
            w.add(
                f"{j}. {_cap(name)} {d.pick(doses)} Tablet Sig: {d.pick(_COUNT_WORDS)} Tablet {route} "
                f"{_SIG.get(freq, freq)}.\nDisp:*{d.between(10, 90)} Tablet(s)* Refills:*{d.between(0, 3)}*\n"
            )
            j += 1

        dispo = d.pick(("Home", "Home With Service", "Extended Care"))
        w.add(f"\n\nDischarge Disposition:\n{dispo}\n\n")
        if dispo != "Home":
            w.add(f"Facility:\n[**Hospital {d.between(1, 9999)}**]\n\n")
        w.add("Discharge Diagnosis:\n")
        dd = places["dx"]
        if dd:
            w.add("Primary:\n")
            for j, (r, hedge) in enumerate(dd):
                if j == 1:
                    w.add("\nSecondary:\n")
                self._mention(w, d, r, hedge, "", "\n", line_start=True)
        else:
            w.add(f"{d.pick(_COMPLAINTS)}\n")

        w.add(
            "\n\nDischarge Condition:\nMental Status: Clear and coherent.\n"
            "Level of Consciousness: Alert and interactive.\n"
            f"Activity Status: {d.pick(('Ambulatory - Independent', 'Ambulatory - requires assistance'))}.\n"
        )
        w.add("\n\nDischarge Instructions:\n")
        filler(w, _INSTRUCTIONS, budget["instructions"])
        w.add(
            "\n\nFollowup Instructions:\nPlease follow up with Dr. "
            f"[**Last Name (STitle) {d.between(1, 9999)}**] in {d.between(2, 4)} weeks. "
            f"Phone: [**Telephone/Fax (1) {d.between(1, 9999)}**]\n\n"
        )
        w.add(
            "                             [**First Name11 (Name Pattern1) {0}**] [**Last Name (NamePattern4) "
            "{0}**] MD [**MD Number(1) {0}**]\n\nCompleted by:[**{1}**]".format(d.between(1, 9999), dis)
        )

        codes = [space.codes[r] for r in dx] + [space.codes[r] for r in px]
        return SyntheticNote(
            index=i,
            text="".join(w.parts),
            codes=codes,
            evidence=w.evidence,
            split_draw=split_draw,
            admit=(year, month, day),
            discharge=(dis_year, dis_month, dis_day),
        )

    def _hedged(self, d: _Draws, r: int, *, proc: bool) -> str:
        if not d.chance(0.15):
            return ""
        return str(d.pick(_HEDGES_PROC if proc else _HEDGES_DX))

    def _mention(
        self,
        w: _NoteWriter,
        d: _Draws,
        r: int,
        hedge: str,
        before: str,
        after: str,
        *,
        line_start: bool = False,
    ) -> None:
        phrase = _pick_phrase(d, self.space.phrases[r])
        if d.chance(0.5):
            phrase = phrase.lower()  # clinicians rarely keep the ontology's capitalisation
        lead = before + hedge
        if line_start and not lead:
            phrase = _cap(phrase)
        elif line_start:
            lead = _cap(lead)
        w.mention(self._keys[r], phrase, lead, after)

    @staticmethod
    def _lab_line(d: _Draws, year: int, month: int, day: int) -> str:
        stamp = f"[**{_date(year, month, day)}**] {d.between(1, 11):02d}:{d.between(0, 59):02d}AM BLOOD"
        if d.chance(0.5):
            hgb = d.between(75, 165)
            return (
                f"{stamp} WBC-{d.between(30, 240) / 10:.1f} RBC-{d.between(280, 520) / 100:.2f} "
                f"Hgb-{hgb / 10:.1f} Hct-{hgb * d.between(28, 32) / 100:.1f} "
                f"MCV-{d.between(78, 102)} RDW-{d.between(120, 180) / 10:.1f} Plt Ct-{d.between(60, 450)}\n"
            )
        return (
            f"{stamp} Glucose-{d.between(70, 300)} UreaN-{d.between(6, 80)} "
            f"Creat-{d.between(5, 60) / 10:.1f} Na-{d.between(128, 146)} "
            f"K-{d.between(30, 55) / 10:.1f} Cl-{d.between(92, 110)} "
            f"HCO3-{d.between(16, 32)} AnGap-{d.between(8, 20)}\n"
        )


def _split_of(draw: float, fractions: tuple[float, float, float]) -> str:
    acc = 0.0
    for name, frac in zip(SPLITS, fractions, strict=True):
        acc += frac
        if draw < acc:
            return name
    return SPLITS[-1]


def _check_fractions(split_fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(x) for x in split_fractions)
    if len(fr) != 3 or any(x < 0 for x in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise IcdcoderError(
            f"split fractions must be three non-negative numbers summing to 1, got {list(fr)}.",
            fix="e.g. 0.8,0.1,0.1 for train, dev and test.",
        )
    return fr[0], fr[1], fr[2]


def generate(
    n_notes: int,
    words_per_note: int = 1500,
    n_codes: int = 50,
    codes_per_note: float | None = None,
    systems: str | Sequence[str] = "icd9",
    zipf: float = 1.1,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    ontology: OntologyLike | None = None,
    *,
    distractors_per_note: float = 1.0,
) -> Iterator[Document]:
    """Stream `n_notes` synthetic Documents (ids `syn-0000000`...). `codes_per_note` defaults to MIMIC-III's
    label cardinality: 15.9 for a label space of 500 codes or more, 5.7 below (as MIMIC-III top-50)."""
    if n_notes < 0:
        raise IcdcoderError(f"n_notes must be >= 0, got {n_notes}.")
    fractions = _check_fractions(split_fractions)
    space = build_label_space(n_codes, systems, zipf, seed, ontology)
    factory = NoteFactory(
        space,
        words_per_note=words_per_note,
        codes_per_note=codes_per_note,
        seed=seed,
        distractors_per_note=distractors_per_note,
    )
    return _documents(factory, n_notes, fractions)


def _documents(
    factory: NoteFactory, n_notes: int, fractions: tuple[float, float, float]
) -> Iterator[Document]:
    for i in range(n_notes):
        note = factory.note(i)
        yield Document(
            id=f"syn-{i:07d}",
            text=note.text,
            codes=[f"{s}:{c}" for s, c in note.codes],
            split=_split_of(note.split_draw, fractions),
            meta={"generator": "synthetic", "note_index": i},
            evidence=note.evidence,
        )


def prepare_synthetic(
    out: str | Path,
    n_notes: int = 1000,
    words_per_note: int = 1500,
    n_codes: int = 50,
    codes_per_note: float | None = None,
    systems: str | Sequence[str] = "icd9",
    zipf: float = 1.1,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    ontology: OntologyLike | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate a synthetic corpus straight into a prepared-dataset directory and return its stats."""
    sys_list = resolve_systems(systems)
    options = {
        "n_notes": n_notes,
        "words_per_note": words_per_note,
        "n_codes": n_codes,
        "codes_per_note": codes_per_note,
        "systems": list(sys_list),
        "zipf": zipf,
        "seed": seed,
        "split_fractions": list(_check_fractions(split_fractions)),
    }
    docs = generate(
        n_notes, words_per_note, n_codes, codes_per_note, sys_list, zipf, seed, split_fractions, ontology
    )
    return write_prepared(out, docs, source="synthetic", options=options, overwrite=overwrite)


# --- MIMIC-III raw CSVs -----------------------------------------------------------------------------


def shipped_mimic3_hadm_ids() -> dict[str, list[int]]:
    """The HADM_IDs of the shipped Mullenbach (CAML) `full` split files, by split (47,723 train)."""
    from icdcoder.data.sources.mimic_common import caml_split_ids

    return caml_split_ids("full")


def caml_ids_without_discharge_summary() -> set[int]:
    """The 4 ids of CAML's train_full list missing from the published split (47,719 train). On real
    MIMIC-III they yield no document, so the writer gives them codes but no discharge summary, and a
    loader reproduces the published counts."""
    from icdcoder.data.sources.mimic_common import caml_full_extra_train_ids

    return set(caml_full_extra_train_ids())


def _undot(code: str) -> str:
    return code.replace(".", "")


class Bare(str):
    """A string field MIMIC-III writes unquoted (dates and timestamps)."""

    __slots__ = ()


def _csv_field(v: Any) -> str:
    """MIMIC-III v1.4 quoting: strings quoted; numbers, dates and NULLs (empty) bare."""
    if v is None:
        return ""
    if isinstance(v, int | Bare):
        return str(v)
    return '"' + str(v).replace('"', '""') + '"'


def _csv_field_minimal(v: Any) -> str:
    """MIMIC-IV quoting: only fields that need it (comma, quote, line break) are quoted."""
    if v is None:
        return ""
    text = str(v)
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


class _GzipCsv:
    """A gzip CSV written row by row, quoted like MIMIC-III v1.4 (or, `minimal`, like MIMIC-IV), with a
    fixed gzip timestamp so the same seed gives byte-identical files."""

    def __init__(self, path: Path, columns: Sequence[str], compresslevel: int, minimal: bool = False) -> None:
        self._field = _csv_field_minimal if minimal else _csv_field
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._gz = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._raw, compresslevel=compresslevel, mtime=0
        )
        self._text = io.TextIOWrapper(self._gz, encoding="utf-8", newline="")
        self._text.write(",".join(map(self._field, columns)) + "\n")
        self.rows = 0

    def row(self, values: Sequence[Any]) -> None:
        self._text.write(",".join(map(self._field, values)) + "\n")
        self.rows += 1

    def close(self) -> None:
        self._text.close()  # closes the gzip stream, which leaves fileobj open
        self._raw.close()


_OTHER_CATEGORIES = (
    ("Nursing/other", "Report"),
    ("Nursing", "Nursing Progress Note"),
    ("Radiology", "CHEST (PORTABLE AP)"),
    ("ECG", "Report"),
    ("Physician ", "Physician Resident Progress Note"),
    ("Echo", "Report"),
)


def _discharge_row(
    row_id: int, subject: int, hadm: int, chartdate: Bare, description: str, text: str
) -> tuple[Any, ...]:
    """A NOTEEVENTS discharge-summary row: no CHARTTIME, STORETIME, CGID or ISERROR, as in MIMIC-III."""
    return (row_id, subject, hadm, chartdate, None, None, "Discharge summary", description, None, None, text)


def _addendum(d: _Draws, note: SyntheticNote) -> str:
    """A short discharge-summary addendum (merged into the report by MIMIC loaders); no code phrases."""
    return (
        f"Name:  [**Known lastname {d.between(1, 9999)}**]  Unit No:  [**Numeric Identifier "
        f"{d.between(1, 99999)}**]\n\nAdmission Date:  [**{_date(*note.admit)}**]     "
        f"Discharge Date:   [**{_date(*note.discharge)}**]\n\nAddendum:\n"
        f"The patient's discharge medication list was updated: {d.pick(_DRUGS)[0]} "
        f"{d.pick(('was restarted', 'dose was changed', 'was discontinued'))}. "
        f"Please follow up with Dr. [**Last Name (STitle) {d.between(1, 9999)}**] in "
        f"{d.between(2, 4)} weeks.\n"
    )


def _other_note(d: _Draws, category: str, description: str, date: str) -> str:
    """A short non-discharge note (to be filtered out by a MIMIC loader); filler only, no code phrases."""
    if category == "Radiology":
        head = (
            f"[**{date}**] {d.between(1, 11)}:{d.between(10, 59)} AM\n {description}"
            f"   Clip # [**Clip Number (Radiology) {d.between(1, 99999)}**]\n Reason: eval for "
            f"{d.pick(_SYMPTOMS)}\n {'_' * 78}\n"
            "                                 FINAL REPORT\n"
        )
        return head + f" IMPRESSION: {_cap(d.pick(_FINDINGS))}.\n"
    if category == "ECG":
        return (
            f"Sinus rhythm. Rate {d.between(55, 110)}. No acute ST-T wave changes. "
            "Compared to prior tracing no change.\n"
        )
    lines = [f"{category.strip()} note. Pt is alert and oriented."]
    for _ in range(d.between(3, 8)):
        lines.append(
            f"{d.pick(('Resp', 'CV', 'GI', 'GU', 'Neuro', 'Skin'))}: {d.pick(_EXAM)} "
            f"Plan: continue to monitor, {d.pick(('will update team', 'pain controlled', 'family updated'))}."
        )
    return "\n".join(lines) + "\n"


def write_mimic3_csvs(
    out_dir: str | Path,
    n_notes: int,
    words_per_note: int = 1500,
    n_codes: int = 8929,
    codes_per_note: float | None = None,
    zipf: float = 1.1,
    seed: int = 0,
    ontology: OntologyLike | None = None,
    *,
    addendum_rate: float = 0.075,
    other_notes_per_admission: float = 0.5,
    overwrite: bool = False,
    compresslevel: int = 6,
) -> dict[str, Any]:
    """Write NOTEEVENTS.csv.gz, DIAGNOSES_ICD.csv.gz and PROCEDURES_ICD.csv.gz in MIMIC-III v1.4's schema.

    Admission `j` carries the text and codes of synthetic note `j` (the same as `generate(...)` yields with
    the same parameters); its HADM_ID is drawn from the shipped CAML `full` split files (so a MIMIC-III
    loader's split logic finds it) and, beyond their 52,726 ids, invented from 200001 up (in no split).
    CAML's 4 train ids that are not in the published split get codes but no discharge summary (see
    `caml_ids_without_discharge_summary`), so all 52,726 admissions prepare to the published 47,719 / 1,631
    / 3,372 documents. About `addendum_rate` of admissions get a discharge-summary Addendum row and each
    gets on average `other_notes_per_admission` Nursing/Radiology/ECG/... rows a loader must filter out.
    Codes are undotted
    as MIMIC stores them; a few diagnosis rows have an empty code and a few procedure rows repeat a code, as
    in MIMIC-III. Returns counts and the split of every written admission.
    """
    if n_notes < 1:
        raise IcdcoderError(f"n_notes must be at least 1, got {n_notes}.")
    space = build_label_space(n_codes, "icd9", zipf, seed, ontology)
    factory = NoteFactory(space, words_per_note=words_per_note, codes_per_note=codes_per_note, seed=seed)
    by_split = shipped_mimic3_hadm_ids()
    pool = [(h, s) for s in SPLITS for h in by_split[s]]
    rng = np.random.default_rng([seed, 2])
    order = rng.permutation(len(pool))[: min(n_notes, len(pool))]
    chosen: list[tuple[int, str | None]] = [pool[int(j)] for j in order]
    chosen += [(_INVENTED_HADM_START + j, None) for j in range(n_notes - len(chosen))]
    d = _Draws(rng)

    split_counts: dict[str, int] = {s: 0 for s in (*SPLITS, "none")}
    counts = {
        "discharge_reports": 0,
        "addenda": 0,
        "other_notes": 0,
        "empty_code_rows": 0,
        "repeat_rows": 0,
        "without_discharge_summary": 0,
    }
    withheld = caml_ids_without_discharge_summary()
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        notes = _GzipCsv(tmp / "NOTEEVENTS.csv.gz", NOTEEVENTS_COLUMNS, compresslevel)
        diag = _GzipCsv(tmp / "DIAGNOSES_ICD.csv.gz", ICD_COLUMNS, compresslevel)
        proc = _GzipCsv(tmp / "PROCEDURES_ICD.csv.gz", ICD_COLUMNS, compresslevel)
        try:
            subject = 10000 + d.between(0, 999)
            for j, (hadm, split) in enumerate(chosen):
                split_counts[split or "none"] += 1
                if j == 0 or d.chance(0.75):  # ~1.3 admissions per subject, as in MIMIC-III
                    subject += 1 + d.between(0, 40)
                note = factory.note(j)
                y, m, dd = note.discharge
                chartdate = Bare(f"{y:04d}-{m:02d}-{dd:02d}")
                has_summary = hadm not in withheld
                if has_summary:
                    notes.row(_discharge_row(notes.rows + 1, subject, hadm, chartdate, "Report", note.text))
                    counts["discharge_reports"] += 1
                else:
                    counts["without_discharge_summary"] += 1
                n_other = int(rng.poisson(other_notes_per_admission)) if other_notes_per_admission > 0 else 0
                for _ in range(n_other):
                    cat, desc = d.pick(_OTHER_CATEGORIES)
                    ay, am, ad = note.admit
                    ts = f"{ay:04d}-{am:02d}-{ad:02d} {d.between(0, 23):02d}:{d.between(0, 59):02d}:00"
                    iserror = 1 if d.chance(0.002) else None
                    text = _other_note(d, cat, desc, _date(ay, am, ad))
                    cgid = d.between(14000, 21000) if cat.startswith(("Nursing", "Physician")) else None
                    # Some ECG/Radiology rows are outpatient studies without HADM_ID, as in MIMIC-III.
                    note_hadm = None if cat in ("ECG", "Radiology") and d.chance(0.1) else hadm
                    stamp = (Bare(ts[:10]), Bare(ts), Bare(ts))
                    notes.row((notes.rows + 1, subject, note_hadm, *stamp, cat, desc, cgid, iserror, text))
                    counts["other_notes"] += 1
                if d.chance(addendum_rate) and has_summary:
                    text = _addendum(d, note)
                    notes.row(_discharge_row(notes.rows + 1, subject, hadm, chartdate, "Addendum", text))
                    counts["addenda"] += 1
                seq = {"dx": 0, "px": 0}
                for system, code in note.codes:
                    target, kind = (proc, "px") if system == CodeSystem.ICD9CM_PROC.value else (diag, "dx")
                    seq[kind] += 1
                    target.row((target.rows + 1, subject, hadm, seq[kind], _undot(code)))
                    if kind == "px" and d.chance(0.01):  # MIMIC repeats a procedure now and then
                        seq[kind] += 1
                        target.row((target.rows + 1, subject, hadm, seq[kind], _undot(code)))
                        counts["repeat_rows"] += 1
                if d.chance(0.001):  # MIMIC-III has a few diagnosis rows without SEQ_NUM and code
                    diag.row((diag.rows + 1, subject, hadm, None, None))
                    counts["empty_code_rows"] += 1
        finally:
            notes.close()
            diag.close()
            proc.close()
        rows = {"NOTEEVENTS": notes.rows, "DIAGNOSES_ICD": diag.rows, "PROCEDURES_ICD": proc.rows}
    return {
        "admissions": len(chosen),
        "splits": split_counts,
        "rows": rows,
        **counts,
        "n_codes": len(space.codes),
        "seed": seed,
        "files": {name: str(out_dir / f"{name}.csv.gz") for name in rows},
    }


DISCHARGE_COLUMNS = mimic4.DISCHARGE.schema
DIAGNOSES_ICD_COLUMNS = mimic4.DIAGNOSES_ICD.schema
PROCEDURES_ICD_COLUMNS = mimic4.PROCEDURES_ICD.schema
_MIMIC4_INVENTED_HADM_START = 30000001  # beyond MIMIC-IV's hadm_id range (20000000-29999999)
_DEID = re.compile(r"\[\*\*.*?\*\*\]")


def shipped_mimic4_hadm_ids() -> dict[str, dict[str, list[int]]]:
    """Edin et al.'s MIMIC-IV split hadm_ids shipped with icdcoder: {"icd9"|"icd10": {split: ids}}."""
    from icdcoder.data.sources.mimic_common import load_split_ids

    return {v: load_split_ids(f"mimic4-{v}") for v in ("icd9", "icd10")}


def write_mimic4_csvs(
    out_dir: str | Path,
    n_notes: int,
    words_per_note: int = 1500,
    n_codes: int = 5000,
    codes_per_note: float | None = None,
    zipf: float = 1.1,
    seed: int = 0,
    ontology: OntologyLike | None = None,
    *,
    second_note_rate: float = 0.01,
    overwrite: bool = False,
    compresslevel: int = 6,
) -> dict[str, Any]:
    """Write `note/discharge.csv.gz`, `hosp/diagnoses_icd.csv.gz` and `hosp/procedures_icd.csv.gz` in
    the schema of MIMIC-IV v2.2 and MIMIC-IV-Note v2.2 (lower-case columns, minimal quoting, `___` for
    de-identified spans).

    Admissions take hadm_ids from Edin et al.'s shipped `icd9` and `icd10` split tables (in proportion) and
    carry codes of that ICD version (undotted, with `icd_version` 9 or 10) drawn from an `n_codes` label space
    per version; ids beyond the tables are invented from 30000001 up (in no split, ICD-10). Admission `j`
    has the text of synthetic note `j` of its version (placeholders rewritten). About `second_note_rate` of
    admissions get a second discharge note (note_seq 2), which MIMIC-IV loaders join to the first.
    """
    if n_notes < 1:
        raise IcdcoderError(f"n_notes must be at least 1, got {n_notes}.")
    spaces = {v: build_label_space(n_codes, v, zipf, seed, ontology) for v in ("icd9", "icd10")}
    factories = {
        v: NoteFactory(sp, words_per_note=words_per_note, codes_per_note=codes_per_note, seed=seed)
        for v, sp in spaces.items()
    }
    shipped = shipped_mimic4_hadm_ids()
    pool = [(h, v, s) for v in ("icd9", "icd10") for s in SPLITS for h in shipped[v][s]]
    rng = np.random.default_rng([seed, 3])
    order = rng.permutation(len(pool))[: min(n_notes, len(pool))]
    chosen: list[tuple[int, str, str | None]] = [pool[int(j)] for j in order]
    chosen += [(_MIMIC4_INVENTED_HADM_START + j, "icd10", None) for j in range(n_notes - len(chosen))]
    d = _Draws(rng)
    split_counts: dict[str, dict[str, int]] = {
        v: {s: 0 for s in (*SPLITS, "none")} for v in ("icd9", "icd10")
    }
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        notes = _GzipCsv(tmp / "note" / "discharge.csv.gz", DISCHARGE_COLUMNS, compresslevel, minimal=True)
        diag = _GzipCsv(
            tmp / "hosp" / "diagnoses_icd.csv.gz", DIAGNOSES_ICD_COLUMNS, compresslevel, minimal=True
        )
        proc = _GzipCsv(
            tmp / "hosp" / "procedures_icd.csv.gz", PROCEDURES_ICD_COLUMNS, compresslevel, minimal=True
        )
        try:
            subject = 10000000 + d.between(0, 9999)
            for j, (hadm, version, split) in enumerate(chosen):
                split_counts[version][split or "none"] += 1
                subject += 1 + d.between(0, 300)
                note = factories[version].note(j)
                y, m, dd = note.discharge
                day = f"{y:04d}-{m:02d}-{dd:02d}"
                text = "Name:  ___                     Unit No:   ___\n \n" + _DEID.sub("___", note.text)
                stored = f"{day} {d.between(8, 20):02d}:{d.between(0, 59):02d}:00"
                n_seq = 2 if d.chance(second_note_rate) else 1
                for seq in range(1, n_seq + 1):
                    body = text if seq == 1 else _DEID.sub("___", _addendum(d, note))
                    note_id = f"{subject}-DS-{d.between(1, 40) * 10 + seq}"
                    notes.row((note_id, subject, hadm, "DS", seq, f"{day} 00:00:00", stored, body))
                ver = 9 if version == "icd9" else 10
                seq_n = {"dx": 0, "px": 0}
                for system, code in note.codes:
                    if system in _PROC_SYSTEMS:
                        seq_n["px"] += 1
                        proc.row((subject, hadm, seq_n["px"], day, _undot(code), ver))
                    else:
                        seq_n["dx"] += 1
                        diag.row((subject, hadm, seq_n["dx"], _undot(code), ver))
        finally:
            notes.close()
            diag.close()
            proc.close()
        rows = {"discharge": notes.rows, "diagnoses_icd": diag.rows, "procedures_icd": proc.rows}
    return {
        "admissions": len(chosen),
        "splits": split_counts,
        "rows": rows,
        "n_codes": n_codes,
        "seed": seed,
        "files": {
            "discharge": str(out_dir / "note" / "discharge.csv.gz"),
            "diagnoses_icd": str(out_dir / "hosp" / "diagnoses_icd.csv.gz"),
            "procedures_icd": str(out_dir / "hosp" / "procedures_icd.csv.gz"),
        },
    }
