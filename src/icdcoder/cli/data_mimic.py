"""`icdcoder data prepare mimic3|mimic4`: build prepared datasets from a credentialed MIMIC download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from icdcoder.data.document import SPLITS

_MIMIC_DIR_HELP = "Folder of the MIMIC download ({})."


def _summary(out: Path, stats: dict[str, Any]) -> str:
    parts = [f"{s} {stats['splits'][s]['documents']:,}" for s in SPLITS if s in stats["splits"]]
    line = f"wrote {out}: {', '.join(parts)} documents; {stats['total']['distinct_codes']:,} codes."
    match = stats.get("matches_published_counts")
    published = " / ".join(f"{stats['published_counts'][s]:,}" for s in SPLITS)
    if match is None:
        line += f" Published counts ({published}) not checked: the input covers only part of the split."
    elif match:
        line += f" Matches the published counts ({published})."
    else:
        line += f" Does NOT match the published counts ({published}): see stats.json `mimic`."
    return line


def register(prepare_app: typer.Typer) -> None:
    """Add the `mimic3` and `mimic4` commands to the `data prepare` group."""

    @prepare_app.command("mimic3")
    def mimic3(
        mimic_dir: Annotated[
            Path,
            typer.Option(
                "--mimic-dir", help=_MIMIC_DIR_HELP.format("NOTEEVENTS, DIAGNOSES_ICD, PROCEDURES_ICD")
            ),
        ],
        split: Annotated[str, typer.Option("--split", help="full, 50, clean or rare50.")],
        out: Annotated[Path, typer.Option("--out", help="Prepared-dataset directory to write.")],
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
        top50_codes: Annotated[
            Path | None,
            typer.Option(
                "--top50-codes",
                help="Code list for --split 50 (one per line, e.g. CAML's TOP_50_CODES.csv) instead of "
                "the computed top 50.",
            ),
        ] = None,
        min_code_count: Annotated[
            int, typer.Option("--min-code-count", help="clean: drop codes in fewer admissions.")
        ] = 10,
        notes: Annotated[
            Path | None, typer.Option("--notes", help="NOTEEVENTS file, if not in --mimic-dir.")
        ] = None,
        diagnoses: Annotated[Path | None, typer.Option("--diagnoses", help="DIAGNOSES_ICD file.")] = None,
        procedures: Annotated[Path | None, typer.Option("--procedures", help="PROCEDURES_ICD file.")] = None,
    ) -> None:
        """MIMIC-III v1.4 discharge summaries: CAML's full / top-50, Edin's clean or KEPT's rare-50 split."""
        from icdcoder.data.sources.mimic3 import prepare_mimic3

        stats = prepare_mimic3(
            mimic_dir,
            split,
            out,
            overwrite=overwrite,
            notes_path=notes,
            diagnoses_path=diagnoses,
            procedures_path=procedures,
            top_codes_file=top50_codes,
            min_code_count=min_code_count,
        )
        typer.echo(_summary(out, stats))

    @prepare_app.command("mimic4")
    def mimic4(
        mimic_dir: Annotated[
            Path,
            typer.Option(
                "--mimic-dir",
                help=_MIMIC_DIR_HELP.format("hosp/diagnoses_icd, hosp/procedures_icd, note/discharge"),
            ),
        ],
        version: Annotated[str, typer.Option("--version", help="icd9 or icd10.")],
        out: Annotated[Path, typer.Option("--out", help="Prepared-dataset directory to write.")],
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
        min_code_count: Annotated[
            int, typer.Option("--min-code-count", help="Drop codes in fewer admissions.")
        ] = 10,
        notes: Annotated[
            Path | None, typer.Option("--notes", help="MIMIC-IV-Note discharge file (a separate download).")
        ] = None,
        diagnoses: Annotated[Path | None, typer.Option("--diagnoses", help="diagnoses_icd file.")] = None,
        procedures: Annotated[Path | None, typer.Option("--procedures", help="procedures_icd file.")] = None,
    ) -> None:
        """MIMIC-IV v2.2 discharge notes with ICD-9 or ICD-10 codes, Edin et al.'s splits."""
        from icdcoder.data.sources.mimic4 import prepare_mimic4

        stats = prepare_mimic4(
            mimic_dir,
            version,
            out,
            overwrite=overwrite,
            notes_path=notes,
            diagnoses_path=diagnoses,
            procedures_path=procedures,
            min_code_count=min_code_count,
        )
        typer.echo(_summary(out, stats))
