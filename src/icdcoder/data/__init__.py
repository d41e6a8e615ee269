"""Documents, data sources and the prepared-dataset directory every model reads."""
