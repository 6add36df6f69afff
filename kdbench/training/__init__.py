"""Training: the one loop every trial uses, and the trial runner (spec in, row out)."""
