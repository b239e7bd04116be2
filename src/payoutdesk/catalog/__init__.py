"""Campaigns, partners, event types, contracts and clicks: what actions refer to."""
