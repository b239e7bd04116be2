"""Small shared helpers: money, time, database."""
