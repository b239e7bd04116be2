"""HTTP adapters: the native API under /api/v1 (later: the impact.com-compatible API)."""
