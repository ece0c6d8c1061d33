#!/usr/bin/env bash
# Runs ON the device machine: decode-only A/B of several trit builds (and the peer) on the
# synthetic 2B-4T model, alternating binaries over ROUNDS rounds, so drift in the machine's
# speed hits every build alike. Setup: scripts/device-env.sh.
#   BINS="name=path ..." (required), ROUNDS (default 2), TYPES (default "tq2_0 tq1_0")
#   ARGS_<name>="..." extra bench flags for one entry (e.g. ARGS_pot="-ot token_embd=Vulkan0"),
#   ENV_<name>="K=V ..." environment for one entry; an entry may name a binary twice.
set -uo pipefail
. "$(dirname "$0")/device-env.sh"
first=${BINS%% *}; first=${first#*=}
for ty in ${TYPES:-tq2_0 tq1_0}; do
  [ -f /tmp/m-$ty.gguf ] || "$first" synth --config 2b4t --type $ty -o /tmp/m-$ty.gguf >/dev/null
done
for r in $(seq 1 "${ROUNDS:-2}"); do
  for ty in ${TYPES:-tq2_0 tq1_0}; do
    for nb in $BINS; do
      n=${nb%%=*}; b=${nb#*=}; a=ARGS_$n; e=ENV_$n
      # shellcheck disable=SC2086  # the extra flags and variables are word lists
      env ${!e:-} "$b" bench -m /tmp/m-$ty.gguf -ngl 99 -p 0 -n 128 -r 3 ${!a:-} -o json > /tmp/ab.json 2>/tmp/ab.err \
        || { echo "round $r $ty $n: failed: $(tail -2 /tmp/ab.err)" | tee -a "$OUT/ab.txt"; continue; }
      t=$(python3 - <<'PY'
import json
r = json.load(open("/tmp/ab.json"))[0]
print(f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f}")
PY
)
      echo "round $r $ty $n: $t" | tee -a "$OUT/ab.txt"
    done
  done
done
