"""`icdcoder codes show|search` through typer's CliRunner on the real ontology."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icdcoder.cli import app
from icdcoder.errors import IcdcoderError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # search indexes go to a temporary cache, never to the user's home
    monkeypatch.setenv("ICDCODER_CACHE", str(tmp_path_factory.getbasetemp() / "icdcoder-cache"))


def test_show_json_has_titles_parents_and_synonyms() -> None:
    result = runner.invoke(app, ["codes", "show", "4019", "--system", "icd9cm-dx", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["key"] == "icd9cm-dx:401.9"
    assert data["long_title"] == "Unspecified essential hypertension"
    assert data["short_title"] == "Hypertension NOS"
    assert data["is_leaf"] is True
    assert data["parents"][0] == {"code": "401", "title": "Essential hypertension"}
    assert data["synonyms"][0] == {"text": "Unspecified essential hypertension", "source": "long_title"}
    assert {"text": "Essential (primary) hypertension", "source": "gem_forward"} in data["synonyms"]


def test_show_human_output_infers_the_system_from_a_dotted_code() -> None:
    result = runner.invoke(app, ["codes", "show", "401.9"])
    assert result.exit_code == 0, result.output
    assert "icd9cm-dx" in result.output
    assert "Unspecified essential hypertension" in result.output
    assert "gem_forward" in result.output
    assert "390-459" in result.output


@pytest.mark.parametrize(
    ("code", "key"),
    [("bw03", "icd10pcs:BW03"), ("n44.8", "icd10cm:N44.8"), ("96.04", "icd9cm-proc:96.04")],
)
def test_show_infers_unambiguous_systems(code: str, key: str) -> None:
    result = runner.invoke(app, ["codes", "show", code, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["key"] == key


def test_show_refuses_an_ambiguous_undotted_code() -> None:
    result = runner.invoke(app, ["codes", "show", "9604"])
    assert isinstance(result.exception, IcdcoderError)
    message = str(result.exception)
    assert "ambiguous" in message
    assert "icd9cm-dx (960.4)" in message and "icd9cm-proc (96.04)" in message
    assert "--system" in message


def test_show_unknown_code_suggests_close_codes() -> None:
    result = runner.invoke(app, ["codes", "show", "428.7", "--system", "icd9cm-dx"])
    assert isinstance(result.exception, IcdcoderError)
    assert "no code '428.7' in icd9cm-dx" in str(result.exception)
    assert "closest codes: 428, 428.0" in str(result.exception)


def test_show_unknown_system_lists_the_valid_ones() -> None:
    result = runner.invoke(app, ["codes", "show", "428.0", "--system", "icd11"])
    assert isinstance(result.exception, IcdcoderError)
    assert "icd9cm-dx, icd9cm-proc, icd10cm, icd10pcs" in str(result.exception)


def test_show_rejects_text_that_is_no_code() -> None:
    result = runner.invoke(app, ["codes", "show", "hello world"])
    assert isinstance(result.exception, IcdcoderError)
    assert "does not look like" in str(result.exception)


def test_search_json_and_table(tmp_path_factory: pytest.TempPathFactory) -> None:
    result = runner.invoke(
        app, ["codes", "search", "essential hypertension", "--system", "icd9cm-dx", "--limit", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 5
    assert "icd9cm-dx:401.9" in [h["key"] for h in hits]
    assert all(0 < h["score"] <= 1 for h in hits)
    cache = Path(tmp_path_factory.getbasetemp() / "icdcoder-cache" / "ontology")
    assert any(cache.glob("search-icd9cm-dx-*.npz"))
    table = runner.invoke(app, ["codes", "search", "endotracheal tube", "-s", "icd9cm-proc", "-n", "3"])
    assert table.exit_code == 0, table.output
    assert "icd9cm-proc:96.04" in table.stdout


def test_search_without_matches_says_so() -> None:
    result = runner.invoke(app, ["codes", "search", "qwertyuiop", "--system", "icd9cm-proc"])
    assert result.exit_code == 0
    assert "no code matches in icd9cm-proc" in result.stdout
