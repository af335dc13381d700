from services.common.migration_env import run_migrations
from services.identity.models import Base

run_migrations(Base.metadata)
