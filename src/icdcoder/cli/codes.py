"""`icdcoder codes show|search`: the offline ICD ontology from the command line."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from icdcoder.errors import IcdcoderError

if TYPE_CHECKING:
    from icdcoder.ontology.entry import CodeEntry
    from icdcoder.ontology.ontology import Ontology

app = typer.Typer(help="Look up ICD codes offline: titles, parents, synonyms.", no_args_is_help=True)

_SYSTEM_HELP = "Code system: icd9cm-dx, icd9cm-proc, icd10cm or icd10pcs."


def _entry_json(entry: CodeEntry, score: float | None = None) -> dict[str, object]:
    out: dict[str, object] = {
        "key": entry.key,
        "system": entry.system,
        "code": entry.code,
        "long_title": entry.long_title,
        "short_title": entry.short_title,
        "is_leaf": entry.is_leaf,
        "parents": [{"code": c, "title": t} for c, t in entry.parents],
        "synonyms": [{"text": s.text, "source": s.source} for s in entry.synonyms],
    }
    if score is not None:
        out["score"] = score
    return out


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def infer_system(onto: Ontology, raw: str) -> str:
    """The one system in which `raw` is an existing code, judged by its shape, or a clear error."""
    from icdcoder.ontology.ontology import normalize
    from icdcoder.ontology.systems import CODE_SYSTEMS, CodeSystem, is_well_formed

    text = raw.strip().upper()
    shaped = []
    for name in CODE_SYSTEMS:
        sys_ = CodeSystem(name)
        norm = normalize(sys_, text)
        # a dot the user wrote must sit where the system puts it: 401.9 is a diagnosis, 40.19 a procedure
        if is_well_formed(sys_, norm) and ("." not in text or norm == text):
            shaped.append((name, norm))
    if not shaped:
        raise IcdcoderError(
            f"{raw!r} does not look like an ICD-9-CM, ICD-10-CM or ICD-10-PCS code.",
            fix="check the code, or pass --system.",
        )
    found = [(name, norm) for name, norm in shaped if onto.exists(name, norm)]
    if len(found) == 1:
        return found[0][0]
    if len(found) > 1:
        choices = ", ".join(f"{name} ({norm})" for name, norm in found)
        raise IcdcoderError(
            f"code {raw!r} is ambiguous: it exists in {choices}.",
            fix=f"pass --system, e.g. --system {found[0][0]}.",
        )
    names = ", ".join(name for name, _ in shaped)
    raise IcdcoderError(
        f"no code {raw!r} in {names}.", fix="check the code, or search by text: icdcoder codes search TEXT."
    )


def _unknown_code(onto: Ontology, system: str, raw: str) -> IcdcoderError:
    from icdcoder.ontology.ontology import normalize
    from icdcoder.ontology.systems import parse_system

    norm = normalize(parse_system(system), raw)
    close = onto.nearest(system, raw)
    fix = f"closest codes: {', '.join(close)}." if close else "search by text: icdcoder codes search TEXT."
    return IcdcoderError(f"no code {norm!r} in {system}.", fix=fix)


def _show_human(entry: CodeEntry) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row("code", entry.code)
    head.add_row("system", entry.system)
    head.add_row("title", entry.long_title)
    head.add_row("short title", entry.short_title or "-")
    head.add_row("leaf", "yes" if entry.is_leaf else "no (has more specific codes)")
    console.print(head)
    if entry.parents:
        parents = Table(title="parents (nearest first)", title_justify="left")
        parents.add_column("code", no_wrap=True)
        parents.add_column("title")
        for code, title in entry.parents:
            parents.add_row(code, title)
        console.print(parents)
    synonyms = Table(title="synonyms", title_justify="left")
    synonyms.add_column("#", justify="right")
    synonyms.add_column("text")
    synonyms.add_column("source", no_wrap=True)
    for i, syn in enumerate(entry.synonyms, start=1):
        synonyms.add_row(str(i), syn.text, syn.source)
    console.print(synonyms)


@app.command()
def show(
    code: Annotated[str, typer.Argument(help="The code, dotted or not, any case (e.g. 401.9, n448, BW03).")],
    system: Annotated[str | None, typer.Option("--system", "-s", help=_SYSTEM_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show a code's titles, parents and synonyms (with where each synonym came from)."""
    from icdcoder.ontology.ontology import get_ontology
    from icdcoder.ontology.systems import parse_system

    onto = get_ontology()
    name = parse_system(system).value if system else infer_system(onto, code)
    entry = onto.lookup(name, code)
    if entry is None:
        raise _unknown_code(onto, name, code)
    if as_json:
        _print_json(_entry_json(entry))
    else:
        _show_human(entry)


@app.command()
def search(
    text: Annotated[str, typer.Argument(help="Words to look for in titles and synonyms.")],
    system: Annotated[
        list[str] | None, typer.Option("--system", "-s", help=f"{_SYSTEM_HELP} Repeatable; default all.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500, help="How many codes to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Find codes by words (titles, inclusion terms, GEM-linked titles)."""
    from icdcoder.ontology.ontology import get_ontology
    from icdcoder.ontology.systems import CODE_SYSTEMS, parse_system

    onto = get_ontology()
    systems = [parse_system(s).value for s in system] if system else list(CODE_SYSTEMS)
    for name in systems:
        path = onto.index_path(name)
        if path is None or not path.exists():
            print(f"building the {name} search index (once; then cached)...", file=sys.stderr)
    hits = onto.search(text, systems, limit)
    if as_json:
        _print_json([_entry_json(entry, score) for entry, score in hits])
        return
    from rich.console import Console
    from rich.table import Table

    if not hits:
        typer.echo(f"no code matches in {', '.join(systems)}.")
        return
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("code", no_wrap=True)
    table.add_column("score", justify="right")
    table.add_column("title")
    for i, (entry, score) in enumerate(hits, start=1):
        table.add_row(str(i), entry.key, f"{score:.3f}", entry.long_title)
    Console().print(table)
