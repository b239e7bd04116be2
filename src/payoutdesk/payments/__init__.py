"""Payments owed to partners (R16's clearing dates) and the payments a brand records against them."""
