#!/usr/bin/env bash
# clang-format (the .clang-format at the root) over every tracked C++/CUDA source.
# Exit 0 when formatted; 1 with the files to run `clang-format -i` on.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v clang-format >/dev/null; then
  echo "clang-format not found: ./setup.sh installs it"; exit 1
fi
mapfile -t files < <(git ls-files '*.h' '*.cc' '*.cu' 2>/dev/null || find kernels model launch runtime tests bench -name '*.h' -o -name '*.cc' -o -name '*.cu')
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "not clang-formatted (run clang-format -i on them): ${bad[*]}"; exit 1
fi
echo "format: ${#files[@]} files clean"
