#!/usr/bin/env bash
# KenLM for the tests of the binary language-model path (sourced by scripts/test.sh after
# bootstrap.sh): the kenlm Python package (the "lm" extra, a C++ source build) and KenLM's
# build_binary (ARPA -> binary), which the kenlm wheel does not ship, compiled from the same
# source release into .venv/bin. Users who only train or transcribe with ARPA files skip this.
set -euo pipefail
python -c "import kenlm" 2>/dev/null \
  || python -m pip install -q -e ".[lm]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import kenlm" || { echo "kenlm.sh: pip could not build kenlm (see above)"; exit 1; }
if [ ! -x .venv/bin/build_binary ]; then
  src=$(mktemp -d)
  python -m pip download -q --no-deps --no-binary kenlm kenlm -d "$src" 2>&1 \
    | grep -v "^WARNING: Location" || true
  tar xzf "$src"/kenlm-*.tar.gz -C "$src"
  (
    cd "$src"/kenlm-*/
    flags="-I. -O1 -DNDEBUG -DKENLM_MAX_ORDER=6"
    # the objects of KenLM's compile_query_only.sh, compiled in parallel
    sources=$(ls util/double-conversion/*.cc util/*.cc lm/*.cc | grep -v -e 'test\.cc$' -e 'main\.cc$')
    printf '%s\n' $sources | xargs -P "$(nproc)" -I{} sh -c "g++ $flags -c {} -o \$(echo {} | sed 's/\.cc$/.o/')"
    mkdir -p bin
    g++ lm/build_binary_main.cc $(printf '%s\n' $sources | sed 's/\.cc$/.o/') -o bin/build_binary $flags -lrt
  ) >"$src/build.log" 2>&1 || { echo "kenlm.sh: compiling build_binary failed: $src/build.log"; exit 1; }
  cp "$src"/kenlm-*/bin/build_binary .venv/bin/
  rm -rf "$src"
fi
