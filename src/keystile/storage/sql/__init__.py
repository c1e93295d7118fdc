"""The SQL adapter: SQLAlchemy Core over SQLite (embedded) and PostgreSQL (asyncpg)."""
