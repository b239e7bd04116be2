"""payoutdesk: control partner payouts before they lock."""

__version__ = "0.1.0"
