"""`icdcoder demo`: the README's first command, end to end on the embedded CodiEsp data.

Prepares CodiEsp-D (English), shows its statistics and an ontology look-up, trains the demo model
(configs/codiesp-d/demo.yaml), tunes its threshold on dev, evaluates once on test, prints the metric
table, and codes one test note with its top codes, titles and evidence.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

DEMO_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "codiesp-d" / "demo.yaml"


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the demo writes its data and run."),
        config: Path = typer.Option(DEMO_CONFIG, "--config", help="Experiment config to train."),
        set_: list[str] = typer.Option([], "--set", help="Override a config value: section.key=value."),
        skip_training: bool = typer.Option(
            False, "--skip-training", help="Only prepare data and look up codes."
        ),
    ) -> None:
        """Prepare CodiEsp-D, train and evaluate a model on it, and code one test note with evidence."""
        import shutil

        from rich.console import Console
        from rich.markup import escape

        from icdcoder.cli.train import _print_metrics
        from icdcoder.data.document import SPLITS
        from icdcoder.data.prepared import PreparedDataset
        from icdcoder.data.sources.codiesp import prepare_codiesp
        from icdcoder.ontology.ontology import get_ontology

        console = Console()
        t0 = time.perf_counter()
        data_dir = out / "data" / "codiesp-d-en"
        if not (data_dir / "stats.json").exists():
            prepare_codiesp(data_dir, task="D", lang="en", evidence=True, overwrite=True)
        ds = PreparedDataset.open(data_dir)
        console.rule("[bold]1. CodiEsp-D (English), prepared")
        for split in [s for s in SPLITS if s in ds.stats["splits"]]:
            st = ds.stats["splits"][split]
            console.print(
                f"{split:>6}: {st['documents']:4d} documents, {st['distinct_codes']:5d} distinct codes, "
                f"{st['label_cardinality']:.2f} codes/document, {st['words_mean']:.0f} words/document"
            )

        console.rule("[bold]2. Offline ontology look-up")
        freq = max(ds.label_entries, key=lambda e: e["counts"].get("train", 0))
        entry = get_ontology().lookup(freq["system"], freq["code"])
        if entry is not None:
            console.print(
                f"most frequent training code: [bold]{entry.system}:{entry.code}[/] — {entry.long_title}"
            )
            console.print("parents: " + " › ".join(f"{c} {t}" for c, t in entry.parents[:3]))
            syns = get_ontology().synonyms(entry.system, entry.code)[:5]
            console.print("synonyms: " + "; ".join(escape(f"{s.text} [{s.source}]") for s in syns))
        if skip_training:
            return

        console.rule("[bold]3. Train, select on dev, tune the threshold on dev, evaluate once on test")
        from icdcoder.hybrid_training import train_any
        from icdcoder.training.config import load_config

        cfg = load_config(config, ["data.source=prepared", f"data.path={data_dir}", *set_])
        run_dir = out / "run"
        if run_dir.exists():
            from icdcoder.io import check_replaceable

            check_replaceable(run_dir, overwrite=True)  # never delete a folder icdcoder did not write
            shutil.rmtree(run_dir)
        summary = train_any(cfg, run_dir)
        console.print(
            f"model {cfg.model['name']}: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
            f"{summary['n_labels']} codes, {summary['train_seconds']:.0f} s"
        )
        _print_metrics(summary)

        console.rule("[bold]4. Coding one test note with evidence")
        from icdcoder.inference.evidence import phrase_line
        from icdcoder.inference.predictor import Predictor

        note = next(ds.documents("test"))
        pred = Predictor(run_dir / "model").predict([(note.id, note.text)], top_k=5)[0]
        gold = set(note.codes)
        console.print(f"note {note.id}: {pred.n_tokens} tokens, {len(gold)} gold codes")
        for rank, c in enumerate(pred.codes, 1):
            mark = "✓" if c.key in gold else " "
            ev = " | ".join(phrase_line(s) for s in c.evidence[:2])
            console.print(
                f"{rank}. {mark} {c.key:<18} p={c.probability:.3f} {'[bold]yes[/]' if c.decision else 'no '} "
                f"{escape(c.title[:55])}"
            )
            if ev:
                console.print(f"      evidence: “{escape(ev[:110])}”")
        console.print(
            f"demo finished in {time.perf_counter() - t0:.0f} s; model directory: {run_dir / 'model'}"
        )
