"""The data-extraction attack and the admission gate that uses it."""
