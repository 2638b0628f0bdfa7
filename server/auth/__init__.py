"""Identity: users, API clients, passwords and access tokens."""
