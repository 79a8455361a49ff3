#!/usr/bin/env bash
# What the benchmarks need beyond `./shop`'s packages: wrk (Debian's package, or
# Homebrew's) and the `bench` extra (the FastAPI peers in bench/peers/).
#   bench/setup.sh        then e.g.  PYTHONPATH=.:gen .venv/bin/python -m bench.reads
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq wrk || { $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk; }
  elif command -v brew >/dev/null 2>&1; then
    brew install wrk
  else
    echo "bench/setup.sh: install wrk yourself (https://github.com/wg/wrk)" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || { echo "bench/setup.sh: run ./shop test or ./shop up once first (it creates .venv)" >&2; exit 1; }
.venv/bin/python -m pip install --quiet --disable-pip-version-check ".[bench]"
echo "bench/setup.sh: wrk $(wrk --version 2>&1 | head -1 | cut -d' ' -f2) and the bench extra are installed"
