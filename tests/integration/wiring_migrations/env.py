from services.common.migration_env import run_migrations

run_migrations(None)
