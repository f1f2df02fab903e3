"""Test-wide settings."""

import os

# Runs in tests write no W&B files unless a test asks for them (tests/test_wandb.py does, offline).
os.environ.setdefault("WANDB_MODE", "disabled")
