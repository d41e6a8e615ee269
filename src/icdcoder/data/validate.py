"""Check every code of a document stream against the offline ontology while it streams.

Two faults are told apart: a *malformed* code does not even have the shape of a code of its system
(`systems.is_well_formed`), an *unknown* code has the shape but is not in the ontology. The policy decides
what happens to both: `keep` (report only), `drop` (remove them from the documents, report) or `fail`
(raise a DataError with counts and examples once the whole stream was read, so the message has the totals;
the prepared-dataset write is atomic, so nothing is left behind). Codes are not patient text, so examples
may be shown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from icdcoder.data.document import Document
from icdcoder.errors import DataError
from icdcoder.ontology.systems import Code, is_well_formed

UNKNOWN_CODE_POLICIES: tuple[str, ...] = ("keep", "drop", "fail")
ExistsFn = Callable[[str, str], bool]

_REPORT_EXAMPLES = 10
_ERROR_EXAMPLES = 5


def default_exists() -> ExistsFn | None:
    """The ontology's `exists(system, code)`, or None when the ontology module is not installed."""
    try:
        from icdcoder.ontology.ontology import get_ontology
    except ImportError:
        return None
    onto = get_ontology()
    exists: ExistsFn = onto.exists
    return exists


def check_policy(policy: str) -> str:
    """Return `policy` lower-cased, or raise a DataError naming the valid ones."""
    p = policy.strip().lower()
    if p not in UNKNOWN_CODE_POLICIES:
        raise DataError(
            f"unknown --unknown-codes policy {policy!r}.",
            fix=f"use one of: {', '.join(UNKNOWN_CODE_POLICIES)}.",
        )
    return p


class _Tally:
    """Distinct codes and assignments per system, with the first few distinct codes as examples."""

    def __init__(self) -> None:
        self.assignments: Counter[str] = Counter()
        self.distinct: dict[str, list[str]] = {}

    def add(self, key: str, first_time: bool) -> None:
        system = key.split(":", 1)[0]
        self.assignments[system] += 1
        if first_time:
            self.distinct.setdefault(system, []).append(key)

    @property
    def total_assignments(self) -> int:
        return sum(self.assignments.values())

    @property
    def total_distinct(self) -> int:
        return sum(len(v) for v in self.distinct.values())

    def examples(self, n: int) -> list[str]:
        return [k for keys in self.distinct.values() for k in keys][:n]

    def to_json(self) -> dict[str, Any]:
        return {
            "assignments": self.total_assignments,
            "distinct": self.total_distinct,
            "by_system": {
                s: {
                    "assignments": self.assignments[s],
                    "distinct": len(self.distinct.get(s, [])),
                    "examples": sorted(self.distinct.get(s, []))[:_REPORT_EXAMPLES],
                }
                for s in sorted(self.assignments)
            },
        }


class CodeValidator:
    """Validates codes document by document; `report()` summarises what it saw.

    `exists(system, code)` answers whether a normalised code exists in its system; None means the
    ontology is unavailable: then only the shape of codes is checked, which `report()` states, and the
    `drop`/`fail` policies refuse to run (they would silently keep unknown codes).
    """

    def __init__(self, policy: str = "keep", exists: ExistsFn | None = None) -> None:
        self.policy = check_policy(policy)
        self.exists = exists
        if exists is None and self.policy != "keep":
            raise DataError(
                f"--unknown-codes {self.policy} needs the offline ontology, which is not available.",
                fix="use --unknown-codes keep, or install icdcoder with its ontology module.",
            )
        self._verdict: dict[str, str] = {}  # key -> "ok" | "unknown" | "malformed"
        self.assignments_checked = 0
        self.dropped_assignments = 0
        self.documents_changed = 0
        self.unknown = _Tally()
        self.malformed = _Tally()

    def _judge(self, key: str) -> tuple[str, bool]:
        verdict = self._verdict.get(key)
        if verdict is not None:
            return verdict, False
        code = Code.parse(key)
        if not is_well_formed(code.system, code.code):
            verdict = "malformed"
        elif self.exists is not None and not self.exists(code.system, code.code):
            verdict = "unknown"
        else:
            verdict = "ok"
        self._verdict[key] = verdict
        return verdict, True

    def check(self, doc: Document) -> Document:
        """Tally `doc`'s codes; under `drop`, remove bad codes (and their evidence) from it."""
        bad: set[str] = set()
        for key in doc.codes:
            self.assignments_checked += 1
            verdict, first = self._judge(key)
            if verdict == "unknown":
                self.unknown.add(key, first)
            elif verdict == "malformed":
                self.malformed.add(key, first)
            if verdict != "ok":
                bad.add(key)
        if bad and self.policy == "drop":
            self.dropped_assignments += sum(1 for k in doc.codes if k in bad)
            self.documents_changed += 1
            doc.codes = [k for k in doc.codes if k not in bad]
            doc.evidence = [e for e in doc.evidence if e.code not in bad]
        return doc

    def finish(self) -> None:
        """Under `fail`, raise when any code was malformed or unknown (call after the last document)."""
        if self.policy != "fail":
            return
        n_unknown, n_malformed = self.unknown.total_distinct, self.malformed.total_distinct
        if n_unknown == 0 and n_malformed == 0:
            return
        parts = []
        if n_unknown:
            parts.append(
                f"{n_unknown} unknown code(s) in {self.unknown.total_assignments} assignment(s) "
                f"(e.g. {', '.join(self.unknown.examples(_ERROR_EXAMPLES))})"
            )
        if n_malformed:
            parts.append(
                f"{n_malformed} malformed code(s) in {self.malformed.total_assignments} assignment(s) "
                f"(e.g. {', '.join(self.malformed.examples(_ERROR_EXAMPLES))})"
            )
        raise DataError(
            "; ".join(parts) + ".",
            fix="correct the codes or their --system, or pass --unknown-codes keep (report) or drop.",
        )

    def report(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "ontology_checked": self.exists is not None,
            "assignments_checked": self.assignments_checked,
            "unknown": self.unknown.to_json(),
            "malformed": self.malformed.to_json(),
            "dropped_assignments": self.dropped_assignments,
            "documents_changed": self.documents_changed,
        }


def make_validator(policy: str = "keep", exists: ExistsFn | None = None) -> CodeValidator:
    """A CodeValidator using `exists`, or the ontology's lookup when `exists` is None."""
    return CodeValidator(policy, exists if exists is not None else default_exists())


def validate_documents(documents: Iterable[Document], validator: CodeValidator) -> Iterator[Document]:
    """Yield `documents` through `validator`; raises at the end under the `fail` policy."""
    for doc in documents:
        yield validator.check(doc)
    validator.finish()
