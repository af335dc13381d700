from services.common.migration_env import run_migrations
from services.signing.models import Base

run_migrations(Base.metadata)
