"""Offline ICD knowledge: code systems, titles, hierarchy, synonyms, label spaces."""
