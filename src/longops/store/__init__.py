"""Persistence: tables, queries and bulk writes for SQLite and PostgreSQL."""
