"""Database: the engine (SQLite pragmas, PostgreSQL pool), the tables and their migrations."""
