"""The action ledger: pure rules, the service that applies them, and storage."""
