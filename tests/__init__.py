"""vdetwist tests (trial)."""
