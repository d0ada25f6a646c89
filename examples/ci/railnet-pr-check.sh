#!/usr/bin/env bash
# The railnet PR check, the same on every CI system: plan a `pulumi preview --json` file.
#
#   railnet-pr-check.sh PREVIEW.json OUT_DIR
#
# Writes OUT_DIR/plan.md (a comment, within RAILNET_MAX_BYTES), OUT_DIR/plan.json and
# OUT_DIR/plan.txt (the full plan) and exits as `railnet plan` does: 0 nothing that
# RAILNET_FAIL_ON names, 1 something it names, 2 bad input (a failed preview included).
# When railnet cannot plan at all, plan.md says why, so the comment never stays stale.
set -uo pipefail

preview=${1:?usage: railnet-pr-check.sh PREVIEW.json OUT_DIR}
out=${2:?usage: railnet-pr-check.sh PREVIEW.json OUT_DIR}
fail_on=${RAILNET_FAIL_ON:-replace,delete,address-change,records-removed}
max_bytes=${RAILNET_MAX_BYTES:-60000}
mkdir -p "$out"

args=(plan "$preview" --format markdown --max-bytes "$max_bytes"
      --output "$out/plan.json" --output "$out/plan.txt" --fail-on "$fail_on")
if [ -n "${RAILNET_AGAINST:-}" ]; then
  args+=(--against "$RAILNET_AGAINST")
fi

railnet "${args[@]}" >"$out/plan.md" 2>"$out/plan.err"
status=$?
cat "$out/plan.err" >&2
if [ "$status" -ge 2 ]; then
  {
    echo "## railnet network plan"
    echo
    echo "**No plan:** railnet could not read the preview, so this check fails."
    echo
    echo '```'
    cat "$out/plan.err"
    echo '```'
  } >"$out/plan.md"
fi
exit "$status"
