#!/bin/sh
# Renders each man page given with groff -ww and man -l; fails when either
# says anything on stderr (a warning) or renders nothing.
status=0
err=$(mktemp)
trap 'rm -f "$err"' EXIT
for page in "$@"; do
  warn=$(groff -ww -man -z "$page" 2>&1)
  if [ -n "$warn" ]; then
    echo "$page: groff -ww:"; echo "$warn"; status=1
  fi
  if command -v man >/dev/null; then
    out=$(MANWIDTH=80 man -l "$page" 2>"$err" </dev/null)
    if [ -s "$err" ]; then
      echo "$page: man -l:"; cat "$err"; status=1
    fi
    if ! printf '%s\n' "$out" | grep -q '^NAME'; then
      echo "$page: man -l rendered no NAME section"; status=1
    fi
  fi
done
[ $status = 0 ] && echo "$# pages render without warnings"
exit $status
