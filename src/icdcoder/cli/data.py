"""`icdcoder data prepare|stats`: build and inspect prepared-dataset directories.

`data prepare` is a sub-app with one command per source; sources living in other modules (mimic3/mimic4,
synthetic) add their commands through a `register(prepare_app)` function, found at import time.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Prepare datasets from raw sources and inspect them.", no_args_is_help=True)
prepare_app = typer.Typer(
    help="Turn a raw source into a prepared-dataset directory (documents.parquet, labels.json, stats.json).",
    no_args_is_help=True,
)
app.add_typer(prepare_app, name="prepare")

_OUT = typer.Option(..., "--out", "-o", help="Output directory (written atomically).")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace --out if it exists.")
_UNKNOWN = typer.Option(
    "keep", "--unknown-codes", help="Codes missing from the offline ontology: keep (report), drop or fail."
)


def print_summary(stats: dict[str, Any], out: Path) -> None:
    """One line per split: documents, distinct codes, label cardinality; then report warnings."""
    from rich.console import Console

    console = Console()
    for split, st in stats["splits"].items():
        console.print(
            f"[bold]{split}[/bold]: {st['documents']:,} documents, {st['distinct_codes']:,} distinct codes, "
            f"label cardinality {st['label_cardinality']:.2f}"
        )
    validation = stats.get("report", {}).get("code_validation", {})
    for kind in ("unknown", "malformed"):
        n = validation.get(kind, {}).get("distinct", 0)
        if n:
            verb = "dropped" if validation.get("policy") == "drop" else "kept"
            console.print(f"[yellow]{n} {kind} code(s) ({verb}); see `icdcoder data stats {out}`.[/yellow]")
    console.print(f"wrote {out}")


@prepare_app.command("codiesp")
def prepare_codiesp_cmd(
    out: Path = _OUT,
    task: str = typer.Option("D", "--task", help="D (ICD-10-CM diagnoses), P (ICD-10-PCS procedures) or DP."),
    lang: str = typer.Option("en", "--lang", help="en (shipped translation) or es (needs --path)."),
    evidence: bool = typer.Option(True, "--evidence/--no-evidence", help="Keep the X evidence spans."),
    path: Path | None = typer.Option(
        None,
        "--path",
        help="A full CodiEsp download (final_dataset_v4_to_publish); default: the shipped copy.",
    ),
    unknown_codes: str = _UNKNOWN,
    overwrite: bool = _OVERWRITE,
) -> None:
    """CodiEsp (CLEF eHealth 2020): 500/250/250 Spanish clinical cases, English translation shipped."""
    from icdcoder.data.sources.codiesp import prepare_codiesp

    stats = prepare_codiesp(
        out,
        root=path,
        task=task,
        lang=lang,
        evidence=evidence,
        overwrite=overwrite,
        unknown_codes=unknown_codes,
    )
    print_summary(stats, out)


_SYSTEM = typer.Option(
    None, "--system", help="Code system of codes written without a SYSTEM: prefix (icd10cm, icd9cm-dx, ...)."
)
_SEP = typer.Option(";|", "--code-sep", help="Characters that separate codes in one field.")
_DROP_EMPTY = typer.Option(False, "--drop-empty", help="Drop notes with no text (they are counted anyway).")
_RATIOS = typer.Option(
    None, "--split-ratios", help="Assign train,dev,test to rows without a split, e.g. 0.8,0.1,0.1."
)
_SEED = typer.Option(0, "--seed", help="Seed of the hash-based split assignment.")


@prepare_app.command("jsonl")
def prepare_jsonl_cmd(
    file: Path = typer.Argument(
        ..., help="JSON Lines file: {id, text, codes[, split][, spans]} per line (spans: docs/DATA.md)."
    ),
    out: Path = _OUT,
    system: str | None = _SYSTEM,
    sep: str = _SEP,
    drop_empty: bool = _DROP_EMPTY,
    split_ratios: str | None = _RATIOS,
    seed: int = _SEED,
    unknown_codes: str = _UNKNOWN,
    overwrite: bool = _OVERWRITE,
) -> None:
    """Your own notes as JSON Lines."""
    from icdcoder.data.sources.userfiles import prepare_userfile

    stats = prepare_userfile(
        "jsonl",
        file,
        out,
        system,
        sep=sep,
        drop_empty=drop_empty,
        split_ratios=split_ratios,
        seed=seed,
        unknown_codes=unknown_codes,
        overwrite=overwrite,
    )
    print_summary(stats, out)


@prepare_app.command("csv")
def prepare_csv_cmd(
    file: Path = typer.Argument(..., help="CSV file with a header: id,text,codes[,split]."),
    out: Path = _OUT,
    system: str | None = _SYSTEM,
    sep: str = _SEP,
    delimiter: str = typer.Option(",", "--delimiter", help="Field delimiter (use $'\\t' for TSV)."),
    id_column: str = typer.Option("id", "--id-column", help="Column holding the document id."),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the note text."),
    codes_column: str = typer.Option("codes", "--codes-column", help="Column holding the codes."),
    split_column: str = typer.Option("split", "--split-column", help="Column holding train/dev/test."),
    drop_empty: bool = _DROP_EMPTY,
    split_ratios: str | None = _RATIOS,
    seed: int = _SEED,
    unknown_codes: str = _UNKNOWN,
    overwrite: bool = _OVERWRITE,
) -> None:
    """Your own notes as CSV."""
    from icdcoder.data.sources.userfiles import prepare_userfile

    columns = {"id": id_column, "text": text_column, "codes": codes_column, "split": split_column}
    stats = prepare_userfile(
        "csv",
        file,
        out,
        system,
        sep=sep,
        delimiter=delimiter,
        columns={k: v for k, v in columns.items() if k != v},
        drop_empty=drop_empty,
        split_ratios=split_ratios,
        seed=seed,
        unknown_codes=unknown_codes,
        overwrite=overwrite,
    )
    print_summary(stats, out)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        items: list[tuple[str, Any]] = []
        for k, v in obj.items():
            items.extend(_flatten(v, f"{prefix}{k}."))
        return items
    return [(prefix.rstrip("."), obj)]


@app.command("stats")
def stats_cmd(
    directory: Path = typer.Argument(..., help="A prepared-dataset directory."),
    as_json: bool = typer.Option(False, "--json", help="Print stats.json as JSON."),
) -> None:
    """Per-split documents, distinct codes, label cardinality, note lengths and the prepare report."""
    from icdcoder.data.document import SPLITS
    from icdcoder.data.prepared import PreparedDataset

    stats = PreparedDataset.open(directory).stats
    if as_json:
        typer.echo(json.dumps(stats, indent=2, sort_keys=True, ensure_ascii=False))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{directory} ({stats.get('source')}, fingerprint {stats.get('fingerprint')})",
        caption="docs = documents, codes = distinct codes, card. = codes per document, words = mean words",
    )
    for col in ("split", "docs", "codes", "card.", "words", "max words", "empty", "no codes"):
        table.add_column(col, justify="left" if col == "split" else "right")
    # stats.json is written with sorted keys: show splits in train/dev/test order again.
    order = [s for s in (*SPLITS, "unsplit") if s in stats["splits"]]
    order += [s for s in stats["splits"] if s not in order]
    for split in order:
        st = stats["splits"][split]
        table.add_row(
            split,
            f"{st['documents']:,}",
            f"{st['distinct_codes']:,}",
            f"{st['label_cardinality']:.2f}",
            f"{st['words_mean']:.1f}",
            f"{st['words_max']:,}",
            f"{st['empty_notes']:,}",
            f"{st['documents_without_codes']:,}",
        )
    console = Console()
    console.print(table)
    total = stats.get("total", {})
    console.print(f"total: {total.get('documents', 0):,} documents, {total.get('distinct_codes', 0):,} codes")
    report = stats.get("report")
    if report:
        console.print("[bold]report[/bold]")
        for key, value in _flatten(report):
            console.print(f"  {key}: {value}", markup=False, highlight=False)


def _register_other_sources() -> None:
    """Let the mimic and synthetic modules add their `prepare` commands once they exist."""
    for name in ("data_mimic", "data_synthetic"):
        module = f"icdcoder.cli.{name}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(prepare_app)


_register_other_sources()
