"""Code titles in the notes' language for the models' label texts (Spanish CodiEsp reads CIE-10 titles)."""

from __future__ import annotations

from icdcoder.training.config import DataConfig
from icdcoder.training.labels import LabelSpace
from icdcoder.training.pipeline import titles_in_note_language


def test_spanish_codiesp_reads_cie10_titles_and_falls_back_to_english() -> None:
    labels = LabelSpace(
        keys=["icd10cm:R52", "icd10cm:N28.1", "icd10cm:Z99.89"],
        titles=["Pain, unspecified", "Cyst of kidney, acquired", "Dependence on other enabling machines"],
    )
    es = titles_in_note_language(labels, DataConfig(source="codiesp", task="D", lang="es"))
    # R52's best-weighted CIE-10 term is its own title (weight 1.0), not a synonym such as "Dolor agudo".
    assert es == ["Dolor, no clasificado en otra parte", "Quiste de riñón, adquirido", labels.titles[2]]
    en = titles_in_note_language(labels, DataConfig(source="codiesp", task="D", lang="en"))
    assert en == labels.titles
    assert en is not labels.titles  # a copy: the model directory keeps the English display titles
