"""The pipeline's own code: what knows DVC, stage paths and the stages' bookkeeping (see deps.py)."""
