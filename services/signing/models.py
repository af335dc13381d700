"""Database tables of this service (SQLAlchemy 2 declarative). One metadata
per service; its Alembic migrations live in ``migrations/`` beside this file."""
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
