"""The script repository: named Python functions, their owners, global scripts and grants."""
