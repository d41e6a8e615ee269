"""Readers that turn raw files of a known layout into Documents."""
