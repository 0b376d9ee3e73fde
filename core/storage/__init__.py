"""SQLAlchemy 2 storage: typed mappings, repositories, the unit of work, Alembic migrations."""
