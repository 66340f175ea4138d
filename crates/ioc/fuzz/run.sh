#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 300) on nightly, seeded with the shared
# corpus (OpenIOC) and the patterns in seeds/stix. Crashes land in artifacts/<target>/.
#
#   bash crates/ioc/fuzz/run.sh            # both targets, 5 minutes each
#   SECONDS_PER_TARGET=60 bash crates/ioc/fuzz/run.sh stix
set -euo pipefail
cd "$(dirname "$0")"
T=${SECONDS_PER_TARGET:-300}
TARGETS=${*:-openioc stix}
mkdir -p corpus/openioc corpus/stix
find ../../../../shared/corpus/openioc -name '*.ioc' -exec cp -n {} corpus/openioc/ \; 2>/dev/null || true
cp -n seeds/stix/* corpus/stix/ 2>/dev/null || true
for t in $TARGETS; do
  # RSS limit: a 50 MB document is refused by size, so 2 GB means a real leak.
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$T" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1
done
