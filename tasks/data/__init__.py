"""The data plane: source adapters, ingest, validation (GX) and quarantine, PII, splits, tokenizer training,
DVC versioning and data cards. Each owner's domain is built from its own sources only."""
