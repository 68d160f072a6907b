"""Small shared helpers (atomic file writes, optional-dependency checks)."""
