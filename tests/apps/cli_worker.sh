#!/bin/bash
# A worker that reaches Redis with redis-cli and $REDIS_URL, as shell workers do:
# it moves each job from the list cli-jobs to cli-done.
set -o nounset
while true; do
  reply=$(redis-cli -u "$REDIS_URL" --no-auth-warning --raw BLPOP cli-jobs 1 2>&1) || true
  case "$reply" in
    cli-jobs*) job=$(printf '%s\n' "$reply" | sed -n 2p)
               redis-cli -u "$REDIS_URL" --no-auth-warning RPUSH cli-done "$job" >/dev/null ;;
    "") ;;
    *) printf 'redis-cli: %s\n' "$reply"; sleep 0.5 ;;
  esac
done
