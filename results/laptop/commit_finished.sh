#!/usr/bin/env bash
# Beside a grid: every 5 minutes, commit the config.json, metrics.csv and samples.jsonl of each run under the given
# folders (default results/laptop/runs; searched to any depth) whose status is finished or diverged (never a running
# one, never weights or checkpoints), so no session's compute is lost. Start it in the background with its own log:
#   setsid nohup results/laptop/commit_finished.sh results/laptop/tuning/runs > /tmp/commit_finished.log 2>&1 &
cd "$(dirname "$0")/../.."
roots=("$@")
[ ${#roots[@]} -gt 0 ] || roots=(results/laptop/runs)
while true; do
  paths=()
  while IFS= read -r config; do
    d=$(dirname "$config")/
    if grep -q '"status": "\(finished\|diverged\)"' "$config"; then
      for f in config.json metrics.csv samples.jsonl; do [ -f "$d$f" ] && paths+=("$d$f"); done
    fi
  done < <(find "${roots[@]}" -name config.json -not -path '*/checkpoint*' -not -path '*.old-*' 2>/dev/null | sort)
  if [ ${#paths[@]} -gt 0 ]; then
    git add -- "${paths[@]}" 2>/dev/null
    if ! git diff --cached --quiet -- "${paths[@]}"; then
      n=$(git diff --cached --name-only -- "${paths[@]}" | grep -c config.json)
      git commit -q -m "${roots[*]}: $n finished run(s)" -- "${paths[@]}" && echo "$(date +%T) committed $n runs"
    fi
  fi
  sleep 300
done
