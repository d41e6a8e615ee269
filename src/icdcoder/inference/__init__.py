"""Loading a model directory and coding new notes, with evidence."""
