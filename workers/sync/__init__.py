"""The sync engine: one job at a time per filter, claimed, kept alive, and applied in
confirmed batches (DESIGN sections 3 and 5)."""
