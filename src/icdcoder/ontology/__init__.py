"""Offline ICD knowledge: code systems, titles, hierarchy, synonyms, label spaces."""

from icdcoder.ontology.entry import CodeEntry, Synonym
from icdcoder.ontology.ontology import Ontology, get_ontology

__all__ = ["CodeEntry", "Ontology", "Synonym", "get_ontology"]
