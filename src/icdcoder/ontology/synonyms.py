"""Synonyms of a code without UMLS: titles, expanded short titles, inclusion terms and GEM-linked titles.

Recipe (docs RESOURCES): long title, short title (and its abbreviation-expanded form), the code's own
ICD-10-CM inclusion terms, then titles of codes linked by the GEMs (forward links, and backward links only
where the linked code maps back to this one code alone), then the inclusion terms of the linked ICD-10-CM
codes. Within a group, links are ranked exact-before-approximate and by word overlap with the code's title.
Texts are de-duplicated on a normalised form (case-folded, punctuation and spacing collapsed); the first
readable spelling is kept.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable
from functools import cache

from icdcoder.ontology import gems
from icdcoder.ontology.entry import Synonym
from icdcoder.ontology.systems import CodeSystem
from icdcoder.ontology.table import CodeTable

# provenance of a synonym, in rank order
LONG_TITLE = "long_title"
SHORT_TITLE = "short_title"
SHORT_TITLE_EXPANDED = "short_title_expanded"
INCLUSION_TERM = "inclusion_term"  # the code's own ICD-10-CM inclusion terms and "includes" notes
GEM_FORWARD = "gem_forward"  # title of a code this code maps to
GEM_REVERSE = "gem_reverse"  # title of a code that maps to this code (and, for diagnoses, only to it)
GEM_FORWARD_INCLUSION = "gem_forward_inclusion"  # inclusion term of a forward-linked ICD-10-CM code
GEM_REVERSE_INCLUSION = "gem_reverse_inclusion"
SOURCES: tuple[str, ...] = (
    LONG_TITLE,
    SHORT_TITLE,
    SHORT_TITLE_EXPANDED,
    INCLUSION_TERM,
    GEM_FORWARD,
    GEM_REVERSE,
    GEM_FORWARD_INCLUSION,
    GEM_REVERSE_INCLUSION,
)

MAX_LINKED = 20  # GEM-linked codes kept per direction (procedures fan out to hundreds of PCS codes)
MAX_PCS_REVERSE = 5  # ICD-9 procedure titles kept for one PCS code (they are broader than the code)
MAX_SYNONYMS = 40  # cap on the whole list; reverse GEMs alone attach thousands of strings to V58.89

# CMS short-title abbreviations (ICD-9-CM v32, ICD-10-CM/PCS short titles). Ambiguous ones (ca, int, inf,
# loc, ext) are left alone.
ABBREVIATIONS: dict[str, str] = {
    "w": "with",
    "w/o": "without",
    "wo": "without",
    "d/t": "due to",
    "p/p": "postpartum",
    "s/p": "status post",
    "oth": "other",
    "ot": "other",
    "unsp": "unspecified",
    "unspec": "unspecified",
    "unspcf": "unspecified",
    "nos": "not otherwise specified",
    "nec": "not elsewhere classified",
    "fx": "fracture",
    "frac": "fracture",
    "dis": "disease",
    "neo": "neoplasm",
    "neopl": "neoplasm",
    "mal": "malignant",
    "malig": "malignant",
    "malign": "malignant",
    "ben": "benign",
    "tb": "tuberculosis",
    "opn": "open",
    "cl": "closed",
    "clos": "closed",
    "eff": "effect",
    "adv": "adverse",
    "inj": "injury",
    "acc": "accident",
    "ac": "acute",
    "chr": "chronic",
    "les": "lesion",
    "skl": "skull",
    "skul": "skull",
    "vlt": "vault",
    "abn": "abnormal",
    "abnorm": "abnormal",
    "nb": "newborn",
    "compl": "complication",
    "comp": "complication",
    "mult": "multiple",
    "proc": "procedure",
    "hx": "history",
    "hem": "hemorrhage",
    "hmrhg": "hemorrhage",
    "hemorr": "hemorrhage",
    "disloc": "dislocation",
    "dislocat": "dislocation",
    "fb": "foreign body",
    "bdy": "body",
    "remov": "removal",
    "jt": "joint",
    "mv": "motor vehicle",
    "veh": "vehicle",
    "resp": "respiratory",
    "cong": "congenital",
    "congen": "congenital",
    "wnd": "wound",
    "unkn": "unknown",
    "preg": "pregnancy",
    "lap": "laparoscopic",
    "ob": "obstetric",
    "anom": "anomaly",
    "coll": "collision",
    "acq": "acquired",
    "cns": "central nervous system",
    "prim": "primary",
    "leuk": "leukemia",
    "dev": "device",
    "hrt": "heart",
    "aff": "affecting",
    "sec": "secondary",
    "rep": "repair",
    "periph": "peripheral",
    "gi": "gastrointestinal",
    "gu": "genitourinary",
    "surg": "surgical",
    "exc": "excision",
    "excis": "excision",
    "bilat": "bilateral",
    "bil": "bilateral",
    "unilat": "unilateral",
    "unil": "unilateral",
    "bact": "bacterial",
    "ant": "anterior",
    "ulc": "ulcer",
    "pelv": "pelvic",
    "fail": "failure",
    "lac": "laceration",
    "lacer": "laceration",
    "lacerat": "laceration",
    "syn": "syndrome",
    "synd": "syndrome",
    "org": "organic",
    "tot": "total",
    "cerv": "cervical",
    "sys": "system",
    "syst": "system",
    "abd": "abdominal",
    "abdom": "abdominal",
    "abdmnal": "abdominal",
    "rr": "railway",
    "del": "delivered",
    "deliv": "delivered",
    "def": "deficiency",
    "defic": "deficiency",
    "cond": "condition",
    "behav": "behavior",
    "endosc": "endoscopic",
    "react": "reaction",
    "traum": "traumatic",
    "recur": "recurrent",
    "fet": "fetal",
    "cath": "catheterization",
    "pulm": "pulmonary",
    "pulmon": "pulmonary",
    "uncntrld": "uncontrolled",
    "spon": "spontaneous",
    "vaccin": "vaccination",
    "bx": "biopsy",
    "degen": "degeneration",
    "deg": "degree",
    "hern": "hernia",
    "inguin": "inguinal",
    "tox": "toxic",
    "ves": "vessel",
    "spcf": "specified",
    "nerv": "nervous",
    "rmsn": "remission",
    "rmsion": "remission",
    "brn": "burn",
    "incis": "incision",
    "intest": "intestine",
    "intes": "intestine",
    "sm": "small",
    "lg": "large",
    "bipol": "bipolar",
    "prob": "problem",
    "ops": "operations",
    "rupt": "rupture",
    "xtrndl": "extradural",
    "vasc": "vascular",
    "ntrc": "nontraffic",
    "inflam": "inflammation",
    "illeg": "illegal",
    "mgrn": "migraine",
    "arthrop": "arthropathy",
    "amput": "amputation",
    "amputat": "amputation",
    "undet": "undetermined",
    "hodg": "hodgkin",
    "ami": "acute myocardial infarction",
    "thorac": "thoracic",
    "agt": "agent",
    "agnt": "agent",
    "pros": "prosthesis",
    "prosth": "prosthesis",
    "repl": "replacement",
    "infec": "infection",
    "infect": "infection",
    "hpt": "hepatitis",
    "gc": "gonococcal",
    "metab": "metabolism",
    "obstr": "obstruction",
    "obst": "obstruction",
    "grft": "graft",
    "reduct": "reduction",
    "reduc": "reduction",
    "inject": "injection",
    "fam": "family",
    "funct": "function",
    "destruct": "destruction",
    "destruc": "destruction",
    "destr": "destruction",
    "dm": "diabetes mellitus",
    "postop": "postoperative",
    "vag": "vaginal",
    "lmb": "limb",
    "musc": "muscle",
    "rt": "right",
    "lt": "left",
    "mech": "mechanical",
    "tiss": "tissue",
    "tis": "tissue",
    "spin": "spinal",
    "revis": "revision",
    "resect": "resection",
    "syph": "syphilis",
    "skn": "skin",
    "urin": "urinary",
    "matern": "maternal",
    "puerp": "puerperal",
    "perc": "percutaneous",
    "crd": "cord",
    "esoph": "esophageal",
    "esophag": "esophageal",
    "anastom": "anastomosis",
    "intralum": "intraluminal",
    "extralum": "extraluminal",
    "cereb": "cerebral",
    "dysfunc": "dysfunction",
    "ath": "atherosclerosis",
    "ven": "venous",
    "anesth": "anesthesia",
    "lig": "ligation",
    "lwr": "lower",
    "allerg": "allergic",
    "coag": "coagulation",
    "subarach": "subarachnoid",
    "sympt": "symptoms",
    "deform": "deformity",
    "perf": "perforation",
    "embol": "embolism",
    "ocl": "occlusion",
    "malfunc": "malfunction",
    "adm": "admission",
    "antepart": "antepartum",
    "nonsp": "nonspecific",
    "dx": "diagnostic",
    "ther": "therapeutic",
    "ult": "ultrasound",
    "ultsnd": "ultrasound",
    "init": "initial encounter",
    "subs": "subsequent encounter",
    "sqla": "sequela",
    "encntr": "encounter",
    "disp": "displaced",
    "nondisp": "nondisplaced",
    "autol": "autologous",
    "synth": "synthetic",
    "nonaut": "nonautologous",
    "endo": "endoscopic",
    "rgn": "region",
    "cmp": "complication",
    "nt": "not",
    "uncntr": "uncontrolled",
    "dmii": "diabetes mellitus type II",
    "dmi": "diabetes mellitus type I",
    "juv": "juvenile",
    "chf": "congestive heart failure",
    "copd": "chronic obstructive pulmonary disease",
}

_ABBREV_TOKEN = re.compile(
    r"(?<![A-Za-z0-9/])(?:[A-Za-z]/[A-Za-z]|[A-Za-z0-9]+)(?![A-Za-z0-9/])|[A-Za-z0-9]+"
)
_NORM_DROP = re.compile(r"[^0-9a-z]+")
_WORD = re.compile(r"[0-9a-z]+")
_PARENTHETICAL = re.compile(r"\s*\([^()]*\)")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "as",
        "at",
        "by",
        "for",
        "from",
        "in",
        "into",
        "is",
        "of",
        "on",
        "or",
        "other",
        "the",
        "to",
        "with",
        "without",
        "w",
        "due",
    ]
)


def _expand_match(match: re.Match[str]) -> str:
    token = match.group(0)
    full = ABBREVIATIONS.get(token.lower())
    if full is None:
        return token
    # follow the abbreviation's case: "Fx" -> "Fracture", "fx" -> "fracture", "NOS" mid-title -> lower
    capital = token[:1].isupper() and (match.start() == 0 or not token.isupper() or len(token) == 1)
    return full[:1].upper() + full[1:] if capital else full


def expand_abbreviations(text: str) -> str:
    """`Fx skull vlt w/o coma` -> `Fracture skull vault without coma` (unknown words kept)."""
    return _ABBREV_TOKEN.sub(_expand_match, text)


def normalize_text(text: str) -> str:
    """De-duplication key: case-folded, every run of non-alphanumerics turned into one space."""
    return _NORM_DROP.sub(" ", text.casefold()).strip()


def content_words(text: str) -> set[str]:
    """Lower-case words without stopwords, for overlap ranking."""
    return {w for w in _WORD.findall(text.casefold()) if w not in STOPWORDS}


def overlap(words: set[str], text: str) -> float:
    """Dice overlap between a word set and the content words of `text`."""
    other = content_words(text)
    return 2 * len(words & other) / (len(words) + len(other)) if words and other else 0.0


def without_nonessential(term: str) -> str:
    """Drop ICD nonessential modifiers: `hypertension (arterial) (benign)` -> `hypertension`."""
    return " ".join(_PARENTHETICAL.sub("", term).split())


class SynonymList:
    """Ordered, de-duplicated synonyms with provenance."""

    def __init__(self) -> None:
        self.items: list[Synonym] = []
        self._seen: set[str] = set()

    def add(self, text: str, source: str) -> None:
        text = " ".join(text.split())
        key = normalize_text(text)
        if key and key not in self._seen:
            self._seen.add(key)
            self.items.append(Synonym(text, source))

    def add_term(self, term: str, source: str) -> None:
        """An inclusion term, then its form without nonessential modifiers."""
        self.add(term, source)
        stripped = without_nonessential(term)
        if stripped and stripped != term:
            self.add(stripped, source)


TableGetter = Callable[[CodeSystem], CodeTable]


def _ranked(links: Iterable[tuple[str, bool]], title_of: Callable[[str], str], words: set[str]) -> list[str]:
    """Linked codes, exact before approximate, then by word overlap with the source title."""
    scored = [(approx, -overlap(words, title_of(code)), i, code) for i, (code, approx) in enumerate(links)]
    return [code for *_, code in sorted(scored)]


def gem_links(
    system: CodeSystem, code: str, table: TableGetter
) -> tuple[CodeTable | None, list[tuple[str, bool]], list[str]]:
    """(linked system's table, forward links with their approximate flag, reverse links), unranked.

    Reverse diagnosis links keep only codes that map back to this code alone; PCS codes have reverse
    links only (ICD-9 procedures that map to them), truncated PCS codes those of the codes under them.
    """
    if system is CodeSystem.ICD9CM_DX or system is CodeSystem.ICD10CM:
        if system is CodeSystem.ICD9CM_DX:
            other, fwd, back = table(CodeSystem.ICD10CM), gems.dx9_to_10(), gems.dx10_to_9()
        else:
            other, fwd, back = table(CodeSystem.ICD9CM_DX), gems.dx10_to_9(), gems.dx9_to_10()
        alone = [c for c in back.sources(code) if all(t == code for t, _ in back.targets(c))]
        return other, fwd.targets(code), alone
    if system is CodeSystem.ICD9CM_PROC:
        return table(CodeSystem.ICD10PCS), gems.proc9_to_pcs().targets(code), []
    other = table(CodeSystem.ICD9CM_PROC)
    reverse = gems.proc9_to_pcs().sources(code) if len(code) == 7 else _pcs_prefix_sources(code)
    return other, [], reverse


def build_synonyms(system: CodeSystem, code: str, table: TableGetter) -> tuple[Synonym, ...]:
    """Ranked, de-duplicated synonyms of a code that exists in `table(system)`."""
    own = table(system)
    long, short = own.long_title(code), own.short_title(code)
    out = SynonymList()
    out.add(long, LONG_TITLE)
    out.add(short, SHORT_TITLE)
    if short:
        out.add(expand_abbreviations(short), SHORT_TITLE_EXPANDED)
    for term in own.inclusion_terms(code):
        out.add_term(term, INCLUSION_TERM)
    other, fwd_links, rev_links = gem_links(system, code, table)
    if other is not None:
        words = content_words(long)
        rev_cap = MAX_PCS_REVERSE if system is CodeSystem.ICD10PCS else MAX_LINKED
        forward = _ranked(fwd_links, other.long_title, words)[:MAX_LINKED]
        reverse = _ranked([(c, False) for c in rev_links], other.long_title, words)[:rev_cap]
        for linked in forward:
            out.add(other.long_title(linked), GEM_FORWARD)
        for linked in reverse:
            out.add(other.long_title(linked), GEM_REVERSE)
        for linked in forward:
            for term in other.inclusion_terms(linked):
                out.add_term(term, GEM_FORWARD_INCLUSION)
        for linked in reverse:
            for term in other.inclusion_terms(linked):
                out.add_term(term, GEM_REVERSE_INCLUSION)
    return tuple(out.items[:MAX_SYNONYMS])


@cache
def _pcs_targets_sorted() -> list[str]:
    return sorted(gems.proc9_to_pcs().backward)


def _pcs_prefix_sources(prefix: str) -> list[str]:
    """ICD-9 procedures mapping to any full PCS code under a truncated one (first seen first)."""
    gem = gems.proc9_to_pcs()
    targets = _pcs_targets_sorted()
    lo = bisect.bisect_left(targets, prefix)
    hi = bisect.bisect_left(targets, prefix + "~")  # "~" sorts after every PCS character
    seen: dict[str, None] = {}
    for target in targets[lo:hi]:
        for source in gem.sources(target):
            seen.setdefault(source, None)
    return list(seen)
