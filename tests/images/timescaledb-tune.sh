#!/bin/sh
# Stand-in for timescaledb-docker's docker-entrypoint-initdb.d/001_timescaledb_tune.sh, which runs the
# timescaledb-tune tool (not available here) at a TimescaleDB image's first start. Written here from
# what it does (not copied), at the level that matters to qbctl: it writes memory and worker settings,
# sized from the container's memory limit and CPUs, into postgresql.conf. Any non-empty NO_TS_TUNE
# skips it, exactly as the real script does; qbctl sets NO_TS_TUNE and passes every setting that
# decides PostgreSQL's memory and workers on the command line anyway (command-line options win over
# postgresql.conf), so these values never apply to a stack qbctl runs.
# The sizes follow timescaledb-tune's rules of thumb, simplified: shared_buffers a quarter of the
# memory, effective_cache_size three quarters, maintenance_work_mem a twentieth (at most 2GB),
# work_mem what the rest leaves each connection's sorts, 16 TimescaleDB background workers
# (TS_TUNE_MAX_BG_WORKERS), parallel workers by the CPUs. TS_TUNE_MEMORY / TS_TUNE_NUM_CPUS /
# TS_TUNE_MAX_CONNS override what is detected.
set -eu
[ -z "${NO_TS_TUNE:-}" ] || exit 0
conf="${POSTGRESQL_CONF_DIR:-$PGDATA}/postgresql.conf"

limit_kb() {  # the container's memory limit in kB, or nothing when there is none
  raw=""
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    raw=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || true)
  elif [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
    raw=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
  fi
  total=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  case "$raw" in ''|max) echo "$total"; return ;; esac
  kb=$(awk -v b="$raw" 'BEGIN {printf "%d", b / 1024}')
  if [ "$kb" -gt "$total" ]; then echo "$total"; else echo "$kb"; fi  # "no limit" as a huge number
}

cpus() {
  if [ -f /sys/fs/cgroup/cpu.max ]; then
    set -- $(cat /sys/fs/cgroup/cpu.max)
    if [ "$1" != max ]; then echo $(( ($1 + $2 - 1) / $2 )); return; fi
  fi
  nproc
}

if [ -n "${TS_TUNE_MEMORY:-}" ]; then
  mem_kb=$(echo "$TS_TUNE_MEMORY" | awk '{n = $0 + 0; u = toupper($0)
    if (u ~ /GB$/) n *= 1048576; else if (u ~ /MB$/) n *= 1024; else if (u ~ /KB$/) n *= 1; else n /= 1024
    printf "%d", n}')
else
  mem_kb=$(limit_kb)
fi
n_cpus=${TS_TUNE_NUM_CPUS:-$(cpus)}
conns=${TS_TUNE_MAX_CONNS:-100}
bg=${TS_TUNE_MAX_BG_WORKERS:-16}
shared=$(( mem_kb / 4 ))
maint=$(( mem_kb / 20 )); [ "$maint" -le 2097152 ] || maint=2097152
work=$(( (mem_kb - shared) / (conns * 3) / (n_cpus > 1 ? n_cpus / 2 : 1) )); [ "$work" -ge 64 ] || work=64
per_gather=$(( n_cpus > 1 ? n_cpus / 2 : 1 ))
cat >> "$conf" <<CONF

# Written at the first start by 001_timescaledb_tune.sh (the tests' stand-in for timescaledb-tune)
shared_buffers = ${shared}kB
effective_cache_size = $(( mem_kb * 3 / 4 ))kB
maintenance_work_mem = ${maint}kB
work_mem = ${work}kB
timescaledb.max_background_workers = $bg
max_worker_processes = $(( bg + n_cpus + 3 ))
max_parallel_workers_per_gather = $per_gather
max_parallel_workers = $n_cpus
wal_buffers = 16MB
min_wal_size = 512MB
default_statistics_target = 100
random_page_cost = 1.1
max_locks_per_transaction = $(( bg * 4 > 64 ? bg * 4 : 64 ))
timescaledb.last_tuned = '$(date -u +%Y-%m-%dT%H:%M:%SZ)'
CONF
echo "001_timescaledb_tune.sh: tuned $conf for ${mem_kb}kB and $n_cpus CPUs"
