"""Tuning: one Optuna study per cell, scored on the validation split (DESIGN protocol step 4)."""
