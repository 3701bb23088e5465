"""Provenance: where an image came from. The prompt audit (a hash chain) and the prompt filter
that guards it, C2PA credentials, fingerprints, and the trace that reads a watermark, metadata,
credentials or a fingerprint back to the job and the person who made it."""
