"""Contract terms: payout and locking rules (pure), and their storage."""
