"""Property-based fuzzing of every input surface (issue 16): generated inputs, counted outcomes.

    .venv/bin/python benchmarks/fuzz_inputs.py --examples 10000                    # every parser surface
    .venv/bin/python benchmarks/fuzz_inputs.py --examples 10000 --model RUN/model  # + the HTTP endpoints

Each surface feeds hypothesis-generated inputs (structured near-misses of the real format mixed with
arbitrary text and bytes) to the parser icdcoder uses, and classifies every outcome:

- ok: parsed;
- rejected: a clear error (an `IcdcoderError`, whose message names the file/field; an HTTP 4xx);
- traceback: any other exception (a bug: the user would see a stack trace);
- http_500: the server answered 500;
- hang: one input took longer than `--timeout` seconds.

The goal is 0 tracebacks, 0 HTTP 500s and 0 hangs. The first few failing inputs of each surface are printed.
Exit status 1 when any failure was seen. `tests/test_fuzz_inputs.py` runs a short sample of every surface.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icdcoder.errors import IcdcoderError

FAILURES = ("traceback", "http_500", "hang")


class Hang(Exception):
    pass


@dataclass
class Tally:
    surface: str
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)  # rejection messages, paths and numbers masked

    @property
    def inputs(self) -> int:
        return sum(self.counts.values())

    @property
    def failures(self) -> int:
        return sum(self.counts[k] for k in FAILURES)

    def row(self) -> str:
        c = self.counts
        return (
            f"| {self.surface} | {self.inputs:,} | {c['ok']:,} | {c['rejected']:,} | {c['traceback']} | "
            f"{c['http_500']} | {c['hang']} |"
        )


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def raise_hang(*_: Any) -> None:
        raise Hang()

    old = signal.signal(signal.SIGALRM, raise_hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _record(tally: Tally, timeout: float, run: Callable[[], str | None], shown: Any) -> None:
    """Run one input; `run` returns None (parsed), "rejected" or "http_500"."""
    try:
        with _time_limit(timeout):
            outcome = run() or "ok"
    except Hang:
        outcome = "hang"
    except IcdcoderError as exc:
        outcome = "rejected" if str(exc).strip() else "traceback"
        tally.reasons[re.sub(r"/\S+|\d+", "#", str(exc))[:90]] += 1
    except Exception:
        outcome = "traceback"
        if len(tally.examples) < 3:
            tally.examples.append(f"{shown!r:.300}\n{traceback.format_exc(limit=4)}")
    if outcome in ("http_500", "hang") and len(tally.examples) < 3:
        tally.examples.append(f"{outcome}: {shown!r:.300}")
    tally.counts[outcome] += 1


def _fuzz(
    tally: Tally, strategy: st.SearchStrategy[Any], body: Callable[[Any], str | None], n: int, timeout: float
) -> Tally:
    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def prop(value: Any) -> None:
        _record(tally, timeout, lambda: body(value), value)

    prop()
    return tally


# ---- strategies -----------------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    [
        "",
        " ",
        "\n",
        "\ud800",
        "I10",
        "icd10cm:I10",
        "icd10cm:",
        ":",
        "essential hypertension",
        '"',
        "\t",
        "\x00",
    ]
)
_CODES = st.sampled_from(
    ["icd10cm:I10", "I10", "icd10pcs:0DTJ4ZZ", "icd9cm-dx:401.9", "bogus:X", "", "i10;e11.9"]
)
_JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _TEXT
_JSON = st.recursive(
    _JSON_LEAF, lambda k: st.lists(k, max_size=4) | st.dictionaries(_TEXT, k, max_size=4), max_leaves=12
)
_FIELD_VALUE = st.one_of(_JSON, _CODES, st.lists(_CODES, max_size=3))
_ANY_ROW = st.fixed_dictionaries(
    {},
    optional={
        "id": _JSON_LEAF | st.sampled_from(["a", "b", 1]),
        "text": _TEXT,
        "codes": _FIELD_VALUE,
        "split": st.sampled_from(["train", "dev", "test", "", "TRAIN", None, 3]),
        "meta": _JSON,
        "spans": _FIELD_VALUE
        | st.lists(
            st.fixed_dictionaries({"code": _CODES, "start": _JSON_LEAF, "end": _JSON_LEAF}), max_size=2
        ),
    },
)
_ROW = st.one_of(  # rows with the required fields half of the time, so the field checks are reached
    _ANY_ROW,
    st.fixed_dictionaries(
        {"id": st.sampled_from(["a", "b", "n1"]) | _JSON_LEAF, "text": _TEXT, "codes": _FIELD_VALUE},
        optional={"split": st.sampled_from(["train", "dev", "test", "", None, 3]), "spans": _FIELD_VALUE},
    ),
)


def _jsonl_line() -> st.SearchStrategy[bytes]:
    return st.one_of(
        _ROW.map(
            lambda r: json.dumps(r, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
        ),
        _JSON.map(lambda v: json.dumps(v, ensure_ascii=True).encode()),
        _TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=40),
    )


_JSONL_FILE = st.lists(_jsonl_line(), max_size=6).map(lambda lines: b"\n".join(lines))


def _csv_cell() -> st.SearchStrategy[str]:
    return st.one_of(_TEXT, _CODES, st.sampled_from(['"quoted"', 'a "stray', '""', '"a,b"', "x\ny", "\r\n"]))


_CSV_HEADER = st.one_of(
    st.sampled_from(
        [["id", "text", "codes"], ["id", "text", "codes", "split"], ["codes", "id", "text", "x"]]
    ),
    st.lists(st.sampled_from(["id", "text", "codes", "split", "spans", "extra", "id", ""]), max_size=5),
)


def _csv_rows(header: list[str]) -> st.SearchStrategy[tuple[list[str], list[list[str]], str]]:
    """Rows of the header's width most of the time (so the fields are parsed), ragged ones sometimes."""
    fitting = st.lists(st.one_of(_csv_cell(), _CODES), min_size=len(header), max_size=len(header))
    row = st.one_of(fitting, fitting, st.lists(_csv_cell(), max_size=6))
    return st.tuples(st.just(header), st.lists(row, max_size=5), st.sampled_from([",", ",", ";", "\t"]))


_CSV_FILE = st.one_of(  # (file bytes, the delimiter it is read with)
    _CSV_HEADER.flatmap(_csv_rows).map(
        lambda t: ("\n".join(t[2].join(row) for row in [t[0], *t[1]]).encode("utf-8", "surrogatepass"), t[2])
    ),
    st.tuples(st.binary(max_size=120), st.sampled_from([",", ";"])),
)

_TSV_LINE = st.lists(_TEXT.filter(lambda s: "\t" not in s and "\n" not in s), max_size=6).map("\t".join)
_TSV_FILE = st.lists(_TSV_LINE, max_size=5).map(
    lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")
) | st.binary(max_size=80)

_KEYS = [
    "data.source", "data.path", "data.max_tokens", "data.task", "model.name", "model.embed_dim", "train.lr",
    "train.epochs", "train.batch_size", "train.monitor", "eval.thresholds", "eval.calibration", "nope.key",
    "train", "", "data..path", "model.name.x",
]  # fmt: skip
_OVERRIDE = st.one_of(
    st.tuples(st.sampled_from(_KEYS), _TEXT).map(lambda kv: f"{kv[0]}={kv[1]}"),
    _TEXT,
)
_YAML = st.one_of(
    _JSON.map(lambda v: json.dumps(v)),
    _TEXT,
    st.sampled_from(
        ["a: [", "!!python/object:os.system ls", "data: {path: 1}", "model:\n  name: caml\n  x: 1", "- 1"]
    ),
)


# MIMIC tables: the real header most of the time (a column dropped, renamed or re-cased sometimes), rows whose
# HADM_IDs are real split ids half of the time (so the split, label-space and text paths are reached), cells
# from valid values, near misses and junk; the file sometimes gzipped, sometimes a damaged gzip.
def _mimic_header(schema: list[str]) -> st.SearchStrategy[list[str]]:
    return _mostly(
        st.just(schema) | st.just([c.lower() for c in schema]),
        st.one_of(
            st.integers(0, len(schema) - 1).map(lambda i: schema[:i] + schema[i + 1 :]),
            st.tuples(st.integers(0, len(schema) - 1), _TEXT).map(
                lambda t: [*schema[: t[0]], t[1], *schema[t[0] + 1 :]]
            ),
        ),
        4,
    )


def _mostly(
    common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int
) -> st.SearchStrategy[Any]:
    """`rare` about once in `one_in` draws. (A `one_of` with repeated branches does not weight them:
    hypothesis favours its simpler branches, so a rare malformed row would end most files.)"""
    return st.sampled_from(range(one_in)).flatmap(lambda i: rare if i == one_in // 2 else common)


def _mimic_table(
    schema: list[str], valid: dict[str, st.SearchStrategy[str]]
) -> st.SearchStrategy[tuple[list[str], list[list[str]]]]:
    """A header and rows whose cells are valid for their column most of the time, a near miss or junk
    otherwise; a ragged row now and then."""
    junk = st.one_of(st.integers(-(2**40), 2**70).map(str), _csv_cell())

    def rows(header: list[str]) -> st.SearchStrategy[tuple[list[str], list[list[str]]]]:
        cells = [_mostly(valid.get(c.strip().upper(), junk), junk, 6) for c in header]
        fitting = st.tuples(*cells).map(list)
        ragged = st.lists(junk, max_size=len(header) + 2)
        return st.tuples(
            st.just(header),
            _mostly(st.lists(_mostly(fitting, ragged, 40), min_size=1, max_size=8), st.just([]), 10),
        )

    return _mimic_header(schema).flatmap(rows)


def _csv_bytes(table: tuple[list[str], list[list[str]]]) -> bytes:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(table[0])
    w.writerows(table[1])
    return buf.getvalue().encode("utf-8", "surrogatepass")


def _mimic_file(
    table: st.SearchStrategy[tuple[list[str], list[list[str]]]],
) -> st.SearchStrategy[tuple[str, bytes]]:
    """(extension, bytes): a CSV, the same gzipped, a truncated gzip, or arbitrary bytes."""
    import gzip

    plain = table.map(lambda t: (".csv", _csv_bytes(t)))
    other = st.one_of(
        table.map(lambda t: (".csv.gz", gzip.compress(_csv_bytes(t)))),
        table.map(lambda t: (".csv.gz", gzip.compress(_csv_bytes(t))[:-5])),
        st.tuples(st.sampled_from([".csv", ".csv.gz"]), st.binary(max_size=80)),
    )
    return _mostly(plain, other, 5)


# ---- surfaces -------------------------------------------------------------------------------------------


def surface_jsonl(tmp: Path, n: int, timeout: float) -> Tally:
    from icdcoder.data.sources.userfiles import iter_jsonl

    path = tmp / "notes.jsonl"

    def body(data: bytes) -> None:
        path.write_bytes(data)
        list(iter_jsonl(path, system="icd10cm"))

    return _fuzz(Tally("JSONL import"), _JSONL_FILE, body, n, timeout)


def surface_csv(tmp: Path, n: int, timeout: float) -> Tally:
    from icdcoder.data.sources.userfiles import iter_csv

    path = tmp / "notes.csv"

    def body(value: tuple[bytes, str]) -> None:
        data, delimiter = value
        path.write_bytes(data)
        list(iter_csv(path, system="icd10cm", delimiter=delimiter))

    return _fuzz(Tally("CSV import"), _CSV_FILE, body, n, timeout)


def surface_codiesp(tmp: Path, n: int, timeout: float) -> Tally:
    from icdcoder.data.sources.codiesp import iter_codiesp

    root = tmp / "codiesp"
    split = root / "train"
    (split / "text_files_en").mkdir(parents=True, exist_ok=True)
    (split / "text_files_en" / "doc1.txt").write_text("Essential hypertension.", encoding="utf-8")

    def body(files: tuple[bytes, bytes, bytes]) -> None:
        d, x, note = files
        (split / "trainD.tsv").write_bytes(d)
        (split / "trainX.tsv").write_bytes(x)
        (split / "text_files_en" / "doc2.txt").write_bytes(note)
        list(iter_codiesp(root, task="D", lang="en", splits=("train",)))

    return _fuzz(Tally("CodiEsp TSVs + notes"), st.tuples(_TSV_FILE, _TSV_FILE, _TSV_FILE), body, n, timeout)


def surface_config(tmp: Path, n: int, timeout: float) -> Tally:
    from icdcoder.training.config import load_config

    path = tmp / "cfg.yaml"
    shipped = Path(__file__).resolve().parents[1] / "configs" / "codiesp-d" / "caml.yaml"

    def body(value: tuple[str | None, list[str]]) -> None:
        text, overrides = value
        if text is None:
            load_config(shipped, overrides)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            load_config(path, overrides)

    strategy = st.tuples(st.none() | _YAML, st.lists(_OVERRIDE, max_size=3))
    return _fuzz(Tally("YAML config + --set"), strategy, body, n, timeout)


def surface_model_dir(model_dir: Path, tmp: Path, n: int, timeout: float) -> Tally:
    """One file of a copy of a real model directory replaced by a generated one (its checksum updated, so
    the content itself is parsed), then the directory loaded as `predict` and the server load it."""
    import hashlib
    import shutil

    from icdcoder.evaluation.thresholds import Thresholds
    from icdcoder.modeldir import load_model_dir

    # A generated metadata.json without a versions record loads with a warning; thousands of those on
    # stderr would bury the tally (the warning itself is tested in tests/test_input_surfaces.py).
    logging.getLogger("icdcoder.modeldir").setLevel(logging.ERROR)
    copy = tmp / "model"
    shutil.copytree(model_dir, copy)
    meta = json.loads((copy / "metadata.json").read_text(encoding="utf-8"))
    names = sorted(meta.get("sha256", {}))
    originals = {name: (copy / name).read_bytes() for name in [*names, "metadata.json"]}
    json_file = st.one_of(
        _JSON.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
        _ROW.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=60),
    )

    def mutate(name: str, original: bytes) -> st.SearchStrategy[bytes]:
        """Near misses of the real file: a field dropped or retyped, or something else entirely."""
        try:
            obj = json.loads(original)
        except ValueError:
            return json_file
        if not isinstance(obj, dict) or not obj:
            return json_file
        keys = sorted(obj)
        return st.one_of(
            json_file,
            st.tuples(st.sampled_from(keys), _JSON, st.booleans()).map(
                lambda kv: json.dumps(
                    {k: v for k, v in obj.items() if k != kv[0]} | ({} if kv[2] else {kv[0]: kv[1]}),
                    ensure_ascii=False,
                ).encode("utf-8", "surrogatepass")
            ),
        )

    strategy = st.sampled_from([*names, "metadata.json"]).flatmap(
        lambda name: st.tuples(st.just(name), mutate(name, originals[name]))
    )

    def body(value: tuple[str, bytes]) -> None:
        name, content = value
        try:
            (copy / name).write_bytes(content)
            if name != "metadata.json":
                m = json.loads(originals["metadata.json"])
                m["sha256"][name] = hashlib.sha256(content).hexdigest()
                (copy / "metadata.json").write_text(json.dumps(m), encoding="utf-8")
            lm = load_model_dir(copy)
            Thresholds.from_dict(lm.thresholds, path=copy / "thresholds.json")
        finally:
            for fname, data in originals.items():
                (copy / fname).write_bytes(data)

    return _fuzz(Tally("model-directory files"), strategy, body, n, timeout)


def surface_http(model_dir: Path, n: int, timeout: float) -> Tally:
    from fastapi.testclient import TestClient

    from icdcoder.inference.predictor import Predictor
    from icdcoder.serving.app import ServerSettings, create_app

    client = TestClient(
        create_app(Predictor(model_dir), ServerSettings(max_note_chars=5000)), raise_server_exceptions=False
    )
    request = st.tuples(
        st.sampled_from(
            [
                "POST /v1/code",
                "POST /v1/code/batch",
                "GET /v1/model",
                "GET /healthz",
                "POST /v1/model",
                "GET /nope",
            ]
        ),
        st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "text": _TEXT | _JSON_LEAF,
                    "id": _JSON_LEAF,
                    "top_k": _JSON_LEAF,
                    "evidence": _JSON_LEAF,
                    "extra": _JSON,
                },
            ).map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
            st.fixed_dictionaries(
                {
                    "notes": st.lists(
                        st.fixed_dictionaries({}, optional={"text": _TEXT, "id": _JSON_LEAF}), max_size=3
                    )
                    | _JSON_LEAF
                },
                optional={"top_k": _JSON_LEAF, "quantify": _JSON_LEAF},
            ).map(lambda v: json.dumps(v).encode()),
            _JSON.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=60),
            _TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
        ),
        st.sampled_from(
            [
                "application/json",
                "text/plain",
                "application/json; charset=latin-1",
                "text/plain; charset=utf-8",
                "",
                "multipart/form-data",
                "application/x-www-form-urlencoded",
            ]
        ),
        st.dictionaries(
            st.sampled_from(["top_k", "include_codes", "evidence", "x"]),
            st.sampled_from(["1", "0", "-1", "abc", "10000000000", ""]),
            max_size=2,
        ),
    )

    def body(value: tuple[str, bytes, str, dict[str, str]]) -> str | None:
        route, content, ctype, params = value
        method, path = route.split(" ")
        headers = {"Content-Type": ctype} if ctype else {}
        r = client.request(
            method, path, content=content if method == "POST" else None, headers=headers, params=params
        )
        if r.status_code >= 500:
            return "http_500"
        return "rejected" if r.status_code >= 400 else None

    tally = _fuzz(Tally("HTTP endpoints"), request, body, n, timeout)
    client.close()
    return tally


def _write_tables(folder: Path, files: dict[str, tuple[str, bytes]]) -> None:
    """Write each table as STEM + its extension, removing the other spelling left by an earlier input."""
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    for stem, (ext, data) in files.items():
        path = folder / f"{stem}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def surface_mimic3(tmp: Path, n: int, timeout: float) -> Tally:
    from icdcoder.data.sources.mimic3 import DIAGNOSES_ICD, NOTEEVENTS, iter_mimic3
    from icdcoder.data.sources.mimic_common import caml_split_ids, load_split_ids

    shipped = {
        "50": caml_split_ids("50"),
        "full": caml_split_ids("full"),
        "clean": load_split_ids("mimic3-clean"),
    }
    small = st.integers(1, 10**6).map(str)
    code = st.sampled_from(["4019", "4280", "V3000", "E8497", "9671", "3893", "401.9", "", "x"])

    def files(split: str) -> st.SearchStrategy[Any]:
        """The three tables, their HADM_IDs mostly from `split`'s own id lists (else from another split's)."""
        own = [h for part in shipped[split].values() for h in part[:3]]
        others = [h for table in shipped.values() for part in table.values() for h in part[:2]]
        ids = _mostly(st.sampled_from(own), st.sampled_from(others), 5).map(str)
        notes = _mimic_table(
            list(NOTEEVENTS.schema),
            {
                "ROW_ID": small,
                "SUBJECT_ID": small,
                "HADM_ID": ids,
                "CHARTDATE": st.sampled_from(["2150-01-01", "2150-01-02", ""]),
                "CATEGORY": st.sampled_from(["Discharge summary", "Discharge summary", "Nursing"]),
                "DESCRIPTION": st.sampled_from(["Report", "Report", "Addendum"]),
                "TEXT": _TEXT | st.sampled_from(["Essential hypertension.", "Fever and cough, pneumonia."]),
            },
        )
        codes = _mimic_table(
            list(DIAGNOSES_ICD.schema),
            {"ROW_ID": small, "SUBJECT_ID": small, "HADM_ID": ids, "SEQ_NUM": small, "ICD9_CODE": code},
        )
        return st.tuples(st.just(split), _mimic_file(notes), _mimic_file(codes), _mimic_file(codes))

    strategy = st.sampled_from(sorted(shipped)).flatmap(files)
    folder, work = tmp / "mimic3", tmp / "spill"
    work.mkdir(exist_ok=True)

    def body(value: tuple[str, tuple[str, bytes], tuple[str, bytes], tuple[str, bytes]]) -> None:
        split, n_file, d_file, p_file = value
        _write_tables(folder, {"NOTEEVENTS": n_file, "DIAGNOSES_ICD": d_file, "PROCEDURES_ICD": p_file})
        list(iter_mimic3(folder, split, top_k=3, min_code_count=1, work_dir=work))

    return _fuzz(Tally("MIMIC-III CSVs"), strategy, body, n, timeout)


def surface_mimic4(tmp: Path, n: int, timeout: float) -> Tally:
    from icdcoder.data.sources.mimic4 import DIAGNOSES_ICD, DISCHARGE, PROCEDURES_ICD, iter_mimic4
    from icdcoder.data.sources.mimic_common import load_split_ids

    shipped = {v: load_split_ids(f"mimic4-{v}") for v in ("icd9", "icd10")}
    small = st.integers(1, 10**8).map(str)

    def files(version: str) -> st.SearchStrategy[Any]:
        own = [h for part in shipped[version].values() for h in part[:3]]
        others = [h for table in shipped.values() for part in table.values() for h in part[:2]]
        ids = _mostly(st.sampled_from(own), st.sampled_from(others), 5).map(str)
        notes = _mimic_table(
            list(DISCHARGE.schema),
            {
                "NOTE_ID": st.sampled_from(["10000032-DS-1", "10000032-DS-2", "x"]),
                "SUBJECT_ID": small,
                "HADM_ID": ids,
                "NOTE_TYPE": st.just("DS"),
                "NOTE_SEQ": st.sampled_from(["1", "2", "3"]),
                "TEXT": _TEXT | st.sampled_from(["Sepsis.", "Acute kidney failure; hypertension."]),
            },
        )
        codes = st.sampled_from(["4019", "3893"] if version == "icd9" else ["I10", "N179", "0DTJ4ZZ", "A419"])
        valid = {
            "SUBJECT_ID": small,
            "HADM_ID": ids,
            "SEQ_NUM": st.sampled_from(["1", "2", "3"]),
            "ICD_CODE": _mostly(codes, st.sampled_from(["4019", "I10", "", "x"]), 5),
            "ICD_VERSION": _mostly(st.just(version[3:]), st.sampled_from(["9", "10", "11", ""]), 5),
            "CHARTDATE": st.just("2180-01-01"),
        }
        return st.tuples(
            st.just(version),
            _mimic_file(notes),
            _mimic_file(_mimic_table(list(DIAGNOSES_ICD.schema), valid)),
            _mimic_file(_mimic_table(list(PROCEDURES_ICD.schema), valid)),
        )

    strategy = st.sampled_from(sorted(shipped)).flatmap(files)
    folder, work = tmp / "mimic4", tmp / "spill"
    work.mkdir(exist_ok=True)

    def body(value: tuple[str, tuple[str, bytes], tuple[str, bytes], tuple[str, bytes]]) -> None:
        version, n_file, d_file, p_file = value
        tables = {"note/discharge": n_file, "hosp/diagnoses_icd": d_file, "hosp/procedures_icd": p_file}
        _write_tables(folder, tables)
        list(iter_mimic4(folder, version, min_code_count=1, work_dir=work))

    return _fuzz(Tally("MIMIC-IV CSVs"), strategy, body, n, timeout)


_NAME = st.one_of(
    st.sampled_from(["a", "b", "note 1", "Ñoño", "x.y", ".hidden", "-n", "a" * 200]),
    st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12).filter(
        lambda s: s not in (".", "..")
    ),
)
_ENTRY = st.tuples(  # (sub-folder or "", name, suffix, kind, content)
    _mostly(st.just(""), st.sampled_from(["ward1", "ward2", "ward1/deep"]), 3),
    _NAME,
    _mostly(st.just(".txt"), st.sampled_from([".TXT", ".md", "", ".txt.gz"]), 4),
    _mostly(st.just("file"), st.sampled_from(["fifo", "dir", "broken_link", "link_to_dir", "loop"]), 6),
    _mostly(
        _TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=60)
        | st.sampled_from([b"", b"\xef\xbb\xbf", b"\xef\xbb\xbfFever.", b"caf\xe9", b"\x00\x01", b"  \n\t "]),
        4,
    ),
)


def surface_note_folders(tmp: Path, n: int, timeout: float) -> Tally:
    """A generated tree of note files (odd names and suffixes, FIFOs, folders named .txt, broken and looping
    links, empty/binary/latin-1/BOM contents) read as `predict` and `quantify` read their arguments."""
    import os
    import shutil

    from icdcoder.inference.reading import collect_note_files, read_note

    root = tmp / "notes"
    strategy = st.tuples(
        st.lists(_ENTRY, min_size=1, max_size=6),
        _mostly(
            st.just([""]),
            st.lists(
                st.sampled_from(["", "ward1", "ward2", "ward1/deep", "missing", "ward1/a.txt", "a.txt"]),
                min_size=1,
                max_size=3,
            ),
            3,
        ),
    )

    def body(value: tuple[list[tuple[str, str, str, str, bytes]], list[str]]) -> None:
        entries, args = value
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        for sub, name, suffix, kind, content in entries:
            folder = root / sub
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name[:100]}{suffix}"
            if path.exists() or path.is_symlink():
                continue
            if kind == "file":
                path.write_bytes(content)
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "dir":
                path.mkdir()
            elif kind == "broken_link":
                path.symlink_to(root / "nowhere")
            elif kind == "link_to_dir":
                path.symlink_to(root)
            else:
                path.symlink_to(path)
        files = collect_note_files([root / a for a in args])
        [read_note(f) for f in files]

    return _fuzz(Tally("note files and folders"), strategy, body, n, timeout)


SURFACES: dict[str, Callable[[Path, int, float], Tally]] = {
    "jsonl": surface_jsonl,
    "csv": surface_csv,
    "codiesp": surface_codiesp,
    "config": surface_config,
    "mimic3": surface_mimic3,
    "mimic4": surface_mimic4,
    "notes": surface_note_folders,
}


def _progress(tally: Tally, t0: float) -> None:
    print(f"{tally.row()}  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)


def run(examples: int, surfaces: list[str], model_dir: Path | None, timeout: float) -> list[Tally]:
    tallies = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in surfaces:
            t0 = time.perf_counter()
            work = Path(tmp) / name
            work.mkdir()
            tallies.append(SURFACES[name](work, examples, timeout))
            _progress(tallies[-1], t0)
        if model_dir is not None:
            work = Path(tmp) / "model-files"
            work.mkdir()
            t0 = time.perf_counter()
            tallies.append(surface_model_dir(model_dir, work, examples, timeout))
            _progress(tallies[-1], t0)
            t0 = time.perf_counter()
            tallies.append(surface_http(model_dir, examples, timeout))
            _progress(tallies[-1], t0)
    return tallies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=1000, help="generated inputs per surface")
    ap.add_argument("--surfaces", default=",".join(SURFACES), help=f"comma-separated: {', '.join(SURFACES)}")
    ap.add_argument(
        "--model", type=Path, default=None, help="a model directory: also fuzz the HTTP endpoints"
    )
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before one input counts as a hang")
    ap.add_argument(
        "--reasons", type=int, default=0, help="print the N commonest rejection messages per surface"
    )
    args = ap.parse_args()
    tallies = run(args.examples, [s for s in args.surfaces.split(",") if s], args.model, args.timeout)
    print("| surface | inputs | ok | rejected (clear error / 4xx) | tracebacks | HTTP 500 | hangs |")
    print("|---|---|---|---|---|---|---|")
    for t in tallies:
        print(t.row())
    for t in tallies:
        for reason, count in t.reasons.most_common(args.reasons):
            print(f"[{t.surface}] {count:6d} × {reason}", file=sys.stderr)
        for example in t.examples:
            print(f"\n[{t.surface}] {example}", file=sys.stderr)
    return 1 if any(t.failures for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
