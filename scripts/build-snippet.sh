#!/bin/sh
# Minify the browser snippet trackpixel/collector/static/t.js with terser and print its sizes.
# Usage: scripts/build-snippet.sh [OUTPUT]   (default OUTPUT: trackpixel/collector/static/t.min.js)
# Needs `npm ci` at the repository root first, which installs terser from package-lock.json.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
source="$root/trackpixel/collector/static/t.js"
output="${1:-$root/trackpixel/collector/static/t.min.js}"
terser="$root/node_modules/.bin/terser"

if [ ! -x "$terser" ]; then
    echo "error: terser not found at $terser; run 'npm ci' in $root" >&2
    exit 1
fi

"$terser" "$source" --compress passes=2 --mangle --comments false --output "$output"

bytes=$(wc -c < "$output")
gzipped=$(gzip -9 -c "$output" | wc -c)
echo "$output: $bytes bytes minified, $gzipped bytes gzipped (gzip -9)"
