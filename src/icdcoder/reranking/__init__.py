"""Candidates from several scoring sources and a learned re-ranker over (note, candidate code) pairs.

Layer: after matching/, before models/ (the hybrid model in models/hybrid.py is built from these parts).
Everything here works on plain per-note score tables (code key -> score), never on models, so it can be
tested, cross-fitted and reused without torch.
"""
