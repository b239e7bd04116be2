"""Accounts (tenants), their API credentials, and users."""
