"""`icdcoder data prepare synthetic|synthetic-mimic3-csv`: MIMIC-shaped synthetic data with real codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from icdcoder.errors import IcdcoderError


def _ontology() -> Any:
    """The ontology the generator draws codes from (None = the offline default; tests substitute one)."""
    return None


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise IcdcoderError(
            f"--split-fractions {text!r} is not a list of numbers.", fix="write e.g. 0.8,0.1,0.1."
        ) from None


def register(prepare_app: typer.Typer) -> None:
    """Add the synthetic-data commands to the `icdcoder data prepare` sub-app."""

    @prepare_app.command("synthetic")
    def synthetic(
        out: Path = typer.Option(..., "--out", help="Prepared-dataset directory to create."),
        notes: int = typer.Option(1000, "--notes", help="Number of notes."),
        words: int = typer.Option(1500, "--words", help="Mean words per note (log-normal, capped at 4x)."),
        codes: int = typer.Option(50, "--codes", help="Size of the label space."),
        codes_per_note: float | None = typer.Option(
            None, "--codes-per-note", help="Mean codes per note [default: 15.9 for >=500 codes, else 5.7]."
        ),
        systems: str = typer.Option("icd9", "--systems", help="icd9 (dx + proc, as MIMIC-III) or icd10."),
        zipf: float = typer.Option(1.1, "--zipf", help="Zipf exponent of code frequencies."),
        seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same bytes)."),
        split_fractions: str = typer.Option("0.8,0.1,0.1", "--split-fractions", help="train,dev,test."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    ) -> None:
        """Generate synthetic MIMIC-shaped discharge summaries into a prepared dataset."""
        from icdcoder.data.sources.synthetic import prepare_synthetic

        stats = prepare_synthetic(
            out,
            n_notes=notes,
            words_per_note=words,
            n_codes=codes,
            codes_per_note=codes_per_note,
            systems=systems,
            zipf=zipf,
            seed=seed,
            split_fractions=_fractions(split_fractions),
            ontology=_ontology(),
            overwrite=overwrite,
        )
        parts = ", ".join(f"{s} {v['documents']}" for s, v in stats["splits"].items())
        typer.echo(
            f"wrote {out}: {stats['total']['documents']} documents ({parts}), "
            f"{stats['total']['distinct_codes']} codes, fingerprint {stats['fingerprint']}"
        )

    @prepare_app.command("synthetic-mimic3-csv")
    def synthetic_mimic3_csv(
        out: Path = typer.Option(..., "--out", help="Directory for NOTEEVENTS/DIAGNOSES_ICD/PROCEDURES_ICD."),
        notes: int = typer.Option(1000, "--notes", help="Number of admissions (discharge summaries)."),
        words: int = typer.Option(1500, "--words", help="Mean words per discharge summary."),
        codes: int = typer.Option(8929, "--codes", help="Size of the ICD-9 label space (MIMIC-III: 8,929)."),
        codes_per_note: float | None = typer.Option(None, "--codes-per-note", help="Mean codes per note."),
        zipf: float = typer.Option(1.1, "--zipf", help="Zipf exponent of code frequencies."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        other_notes: float = typer.Option(
            0.5, "--other-notes", help="Mean non-discharge notes (Nursing, Radiology, ...) per admission."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    ) -> None:
        """Write synthetic raw MIMIC-III v1.4 CSVs (for testing the mimic3 loader without MIMIC access)."""
        from icdcoder.data.sources.synthetic import write_mimic3_csvs

        summary = write_mimic3_csvs(
            out,
            notes,
            words_per_note=words,
            n_codes=codes,
            codes_per_note=codes_per_note,
            zipf=zipf,
            seed=seed,
            ontology=_ontology(),
            other_notes_per_admission=other_notes,
            overwrite=overwrite,
        )
        rows = ", ".join(f"{k} {v}" for k, v in summary["rows"].items())
        typer.echo(f"wrote {out}: {summary['admissions']} admissions; rows: {rows}")
