"""Every setting's parsed value, one typed attribute each (`settings.values.qbctl_up_timeout`).

Made by `python -m qbctl.config.docs` from the SETTINGS table (qbctl/config/settings.py): do not edit.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbctl.config.urls import PgUrl, RedisUrl


@dataclass(frozen=True)
class Values:
    database_url: PgUrl
    redis_url: RedisUrl
    environment: str
    log_level: str
    max_candles_per_symbol: int
    data_retention_days: int
    log_retention_days: int
    compression_after_days: int
    postgres_shared_buffers: int
    postgres_work_mem: int
    postgres_max_connections: int
    postgres_maintenance_work_mem: int
    postgres_autovacuum_max_workers: int
    postgres_max_parallel_workers: int
    timescaledb_max_background_workers: int
    redis_max_memory: int
    redis_maxmemory_policy: str
    qbctl_project: str
    qbctl_profile: str
    qbctl_postgres_image: str
    qbctl_redis_image: str
    qbctl_adminer_image: str
    qbctl_redis_commander_image: str
    qbctl_bind_address: str
    qbctl_ui_bind_address: str
    qbctl_adminer_port: int
    qbctl_redis_commander_port: int
    qbctl_up_timeout: int
    qbctl_snapshot_keep: int
    qbctl_rehearse_docker_host: str
    qbctl_budget_total: int
    qbctl_budget_os: int
    qbctl_budget_postgres: int
    qbctl_budget_redis: int
    qbctl_budget_backend: int
    qbctl_budget_headroom: int
    qbctl_postgres_backend_overhead: int
    qbctl_adminer_memory: int
    qbctl_redis_commander_memory: int
