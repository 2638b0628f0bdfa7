"""User tables: one schema per user, uploads, listing, grants, and reading rows (through the SQL gate)."""
