#!/usr/bin/env bash
# Runs several benchmark processes at once, one per line of a job file, on a many-core
# machine (optionally with a GPU shared by all of them), each under a time limit.
#
#   bash benchmarks/parallel.sh JOB_FILE LOG_DIR SECONDS
#
# Each non-empty, non-comment line of JOB_FILE is a command line for `python -m`, e.g.
#   benchmarks.vi --full --no-plots --out-dir /tmp/vi --targets eight_schools --methods iaf
# optionally after `nice:N ` (run at that niceness, so that it takes the cores the others
# leave idle).
# Processes that write the same vi_full.json merge their results under a file lock, and
# benchmarks.vi saves after every method, so a process stopped by the limit keeps what it
# finished. GPU memory is not preallocated, so that the processes can share one device.
set -u
job_file=$1; log_dir=$2; limit=$3
mkdir -p "$log_dir"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
index=0
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  index=$((index + 1))
  niceness=0
  case "$line" in nice:*) niceness=${line%% *}; niceness=${niceness#nice:}; line=${line#* } ;; esac
  # shellcheck disable=SC2086  # the line is a command line: split it into words
  nice -n "$niceness" timeout "$limit" "${PYTHON:-python}" -m $line \
    > "$log_dir/job$index.log" 2>&1 &
  echo "job $index (pid $!): $line"
done < "$job_file"
wait
echo "all jobs ended"
