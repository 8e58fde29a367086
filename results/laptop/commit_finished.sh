#!/usr/bin/env bash
# Beside run_grid.sh: every 5 minutes, commit the config.json, metrics.csv and samples.jsonl of each run under
# results/laptop/runs/ whose status is finished or diverged (never a running one, never weights or checkpoints), so no
# session's compute is lost. Start it in the background with its own log:
#   setsid nohup results/laptop/commit_finished.sh > /tmp/commit_finished.log 2>&1 &
cd "$(dirname "$0")/../.."
while true; do
  paths=()
  for d in results/laptop/runs/*/; do
    [ -f "$d/config.json" ] || continue
    if grep -q '"status": "\(finished\|diverged\)"' "$d/config.json"; then
      for f in config.json metrics.csv samples.jsonl; do [ -f "$d$f" ] && paths+=("$d$f"); done
    fi
  done
  if [ ${#paths[@]} -gt 0 ]; then
    git add -- "${paths[@]}" 2>/dev/null
    if ! git diff --cached --quiet -- "${paths[@]}"; then
      n=$(git diff --cached --name-only -- "${paths[@]}" | grep -c config.json)
      git commit -q -m "results/laptop: $n finished grid run(s)" -- "${paths[@]}" && echo "$(date +%T) committed $n runs"
    fi
  fi
  sleep 300
done
